//! How outcomes are spelled between services and to clients: status-code names (audit
//! trail, metrics, logs), the retry hint, access levels and sharing refusals.

/// The canonical gRPC name of a status code, such as `PERMISSION_DENIED`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Metadata key of the retry hint on RESOURCE_EXHAUSTED answers.
pub const RETRY_AFTER: &str = "retry-after-seconds";

/// RESOURCE_EXHAUSTED saying how long to wait, in the message and as `retry-after-seconds`
/// metadata (whole seconds, at least 1).
pub fn resource_exhausted(message: &str, retry_after: std::time::Duration) -> tonic::Status {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut status = tonic::Status::resource_exhausted(format!("{message}; retry in {secs} s"));
    if let Ok(v) = secs.to_string().parse() {
        status.metadata_mut().insert(RETRY_AFTER, v);
    }
    status
}

/// A requested access level from a request field: INVALID_ARGUMENT naming the field when it
/// is unset or not a known value.
pub fn access_level(field: &str, raw: i32) -> Result<ts_proto::public::AccessLevel, tonic::Status> {
    use ts_proto::public::AccessLevel;
    match AccessLevel::try_from(raw) {
        Ok(AccessLevel::Unspecified) => {
            Err(tonic::Status::invalid_argument(format!("{field} is required (VIEW, EDIT or MANAGE)")))
        }
        Ok(level) => Ok(level),
        Err(_) => Err(tonic::Status::invalid_argument(format!("{field} has unknown value {raw}"))),
    }
}

/// The status a sharing call gets when auth says the user may not share (its `SharingDenial`).
pub fn sharing_refusal(denial: i32) -> tonic::Status {
    use ts_proto::internal::SharingDenial;
    match SharingDenial::try_from(denial).unwrap_or(SharingDenial::Unspecified) {
        SharingDenial::Disabled => tonic::Status::failed_precondition("team sharing is disabled"),
        SharingDenial::LicenseBlocked => {
            tonic::Status::failed_precondition("team sharing is blocked for your license by its admin")
        }
        SharingDenial::Unverified => tonic::Status::failed_precondition("verify your email again before sharing"),
        SharingDenial::UnknownUser | SharingDenial::Unspecified => {
            tonic::Status::unauthenticated("unknown user; sign in again")
        }
    }
}
