//! How outcomes are spelled between services and to clients: status-code names (audit
//! trail, metrics, logs), the `google.rpc` error details every error carries (a stable
//! `ErrorInfo` reason, `RetryInfo`, `BadRequest` naming the field), access levels and sharing
//! refusals.

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

/// The `domain` of every `google.rpc.ErrorInfo` teamshare returns.
pub const ERROR_DOMAIN: &str = "teamshare.dev";

/// Why a call failed: the stable `reason` of its `google.rpc.ErrorInfo`, from the public
/// API's `ErrorReason` enum (common.proto documents each), so that every SDK reads the same
/// names. Every error the public API returns carries one.
pub use ts_proto::public::ErrorReason as Reason;

/// A reason's spelling in `ErrorInfo.reason`, such as `LAST_MANAGER`.
pub fn reason_name(reason: Reason) -> &'static str {
    let name = reason.as_str_name();
    name.strip_prefix("ERROR_REASON_").unwrap_or(name)
}

/// The reason a status of `code` carries when nothing more precise is known.
fn reason_for_code(code: tonic::Code) -> Reason {
    use tonic::Code;
    match code {
        Code::InvalidArgument | Code::OutOfRange => Reason::InvalidField,
        Code::Unauthenticated => Reason::AccessTokenInvalid,
        Code::PermissionDenied => Reason::PermissionDenied,
        Code::NotFound => Reason::NotFound,
        Code::ResourceExhausted => Reason::RateLimited,
        Code::Aborted => Reason::Contention,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => Reason::Unavailable,
        Code::DataLoss => Reason::DataLoss,
        _ => Reason::Internal,
    }
}

/// How long a client should wait before retrying an UNAVAILABLE answer that names no other
/// delay.
pub const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

fn details(reason: Reason) -> tonic_types::ErrorDetails {
    let mut d = tonic_types::ErrorDetails::new();
    d.set_error_info(reason_name(reason), ERROR_DOMAIN, std::collections::HashMap::new());
    d
}

/// A status of `code` with `message` and an `ErrorInfo` naming `reason`; UNAVAILABLE also
/// gets a `RetryInfo` of [`UNAVAILABLE_RETRY`].
pub fn failure(code: tonic::Code, reason: Reason, message: impl Into<String>) -> tonic::Status {
    use tonic_types::StatusExt;
    let mut d = details(reason);
    if code == tonic::Code::Unavailable {
        d.set_retry_info(Some(UNAVAILABLE_RETRY));
    }
    tonic::Status::with_error_details(code, message, d)
}

/// FAILED_PRECONDITION with `reason` and a `PreconditionFailure` listing each subject that
/// stands in the way: `(type, subject, description)`, such as `("LAST_MANAGER",
/// "folders/<id>", "<folder name>")`. The message names the subjects too.
pub fn precondition_failed(reason: Reason, message: &str, violations: &[(&str, String, String)]) -> tonic::Status {
    use tonic_types::StatusExt;
    let mut d = details(reason);
    let mut subjects = Vec::with_capacity(violations.len());
    for (kind, subject, description) in violations {
        d.add_precondition_failure_violation(*kind, subject.clone(), description.clone());
        subjects.push(subject.as_str());
    }
    let message = if subjects.is_empty() { message.to_owned() } else { format!("{message}: {}", subjects.join(", ")) };
    tonic::Status::with_error_details(tonic::Code::FailedPrecondition, message, d)
}

/// INVALID_ARGUMENT for a request field: `ErrorInfo` `INVALID_FIELD` and a `BadRequest`
/// violation naming `field`; `message` names it too, never its value.
pub fn invalid_field(field: &str, message: impl Into<String>) -> tonic::Status {
    use tonic_types::StatusExt;
    let message = message.into();
    let mut d = details(Reason::InvalidField);
    d.add_bad_request_violation(field, message.clone());
    tonic::Status::with_error_details(tonic::Code::InvalidArgument, message, d)
}

/// INVALID_ARGUMENT from a message that starts with the field it is about ("name is
/// required"), as every field check in this project words it.
pub fn invalid(message: impl Into<String>) -> tonic::Status {
    let message = message.into();
    match field_of(&message).map(str::to_owned) {
        Some(field) => invalid_field(&field, message),
        None => failure(tonic::Code::InvalidArgument, Reason::InvalidField, message),
    }
}

/// The field path a validation message starts with (`content.connection.hosts[0]`), if its
/// first word is one.
fn field_of(message: &str) -> Option<&str> {
    let first = message.split_whitespace().next()?.trim_end_matches([':', ',']);
    let path_like = first.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c));
    let looks_like_field = first.contains(['_', '.', '[']) || KNOWN_BARE_FIELDS.contains(&first);
    (path_like && looks_like_field && first.starts_with(|c: char| c.is_ascii_lowercase())).then_some(first)
}

/// Request fields of one word, which a sentence could also start with.
const KNOWN_BARE_FIELDS: &[&str] = &[
    "name",
    "email",
    "code",
    "content",
    "description",
    "access",
    "domains",
    "emails",
    "domain",
    "page",
    "version",
    "query",
    "reason",
    "kind",
    "filter",
];

/// A status with `reason`, and `RetryInfo` asking the client to wait `retry_after` (whole
/// seconds, at least 1, also in the message).
pub fn retry_after(
    code: tonic::Code,
    reason: Reason,
    message: &str,
    retry_after: std::time::Duration,
) -> tonic::Status {
    use tonic_types::StatusExt;
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    let mut d = details(reason);
    d.set_retry_info(Some(std::time::Duration::from_secs(secs)));
    tonic::Status::with_error_details(code, format!("{message}; retry in {secs} s"), d)
}

/// RESOURCE_EXHAUSTED saying how long to wait, in the message and as a `RetryInfo` detail.
pub fn resource_exhausted(reason: Reason, message: &str, wait: std::time::Duration) -> tonic::Status {
    retry_after(tonic::Code::ResourceExhausted, reason, message, wait)
}

/// The `ErrorInfo` reason a status carries, if any.
pub fn reason_of(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason)
}

/// The delay of a status's `RetryInfo`, if any.
pub fn retry_delay(status: &tonic::Status) -> Option<std::time::Duration> {
    use tonic_types::StatusExt;
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// `status` with its details, or with the reason its code implies when it has none: every
/// error teamshare answers names a reason.
pub fn ensure_reason(status: tonic::Status) -> tonic::Status {
    if status.code() == tonic::Code::Ok || reason_of(&status).is_some() {
        return status;
    }
    let mut out = if status.code() == tonic::Code::InvalidArgument {
        invalid(status.message())
    } else {
        failure(status.code(), reason_for_code(status.code()), status.message())
    };
    *out.metadata_mut() = status.metadata().clone();
    out
}

/// A requested access level from a request field: INVALID_ARGUMENT naming the field when it
/// is unset or not a known value.
pub fn access_level(field: &str, raw: i32) -> Result<ts_proto::public::AccessLevel, tonic::Status> {
    use ts_proto::public::AccessLevel;
    match AccessLevel::try_from(raw) {
        Ok(AccessLevel::Unspecified) => {
            Err(invalid_field(field, format!("{field} is required (VIEW, EDIT or MANAGE)")))
        }
        Ok(level) => Ok(level),
        Err(_) => Err(invalid_field(field, format!("{field} has unknown value {raw}"))),
    }
}

/// The status a sharing call gets when auth says the user may not share (its `SharingDenial`).
pub fn sharing_refusal(denial: i32) -> tonic::Status {
    use tonic::Code::FailedPrecondition;
    use ts_proto::internal::SharingDenial;
    match SharingDenial::try_from(denial).unwrap_or(SharingDenial::Unspecified) {
        SharingDenial::Disabled => failure(FailedPrecondition, Reason::SharingDisabled, "team sharing is disabled"),
        SharingDenial::LicenseBlocked => {
            failure(FailedPrecondition, Reason::LicenseBlocked, "team sharing is blocked for your license by its admin")
        }
        SharingDenial::Unverified => {
            failure(FailedPrecondition, Reason::EmailUnverified, "verify your email again before sharing")
        }
        SharingDenial::UnknownUser | SharingDenial::Unspecified => {
            failure(tonic::Code::Unauthenticated, Reason::UnknownUser, "unknown user; sign in again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_is_read_only_from_a_message_that_starts_with_one() {
        assert_eq!(field_of("folder_id is required"), Some("folder_id"));
        assert_eq!(field_of("content.connection.hosts[0] is not host:port"), Some("content.connection.hosts[0]"));
        assert_eq!(field_of("name: too long"), Some("name"));
        assert_eq!(field_of("too many wrong codes"), None);
        assert_eq!(field_of("Name is required"), None);
        assert_eq!(field_of(""), None);
    }

    #[test]
    fn details_survive_the_wire_form() {
        let s = invalid("page.page_token is not valid here");
        let http = s.into_http::<()>();
        let back = tonic::Status::from_header_map(http.headers()).unwrap();
        assert_eq!(reason_of(&back).as_deref(), Some("INVALID_FIELD"));
        use tonic_types::StatusExt;
        let bad = back.get_details_bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "page.page_token");
        let s = resource_exhausted(Reason::RateLimited, "too many", std::time::Duration::from_millis(1500));
        assert_eq!(retry_delay(&s), Some(std::time::Duration::from_secs(2)));
        assert!(s.message().ends_with("retry in 2 s"));
        let s = ensure_reason(tonic::Status::not_found("x"));
        assert_eq!(reason_of(&s).as_deref(), Some("NOT_FOUND"));
        let s = ensure_reason(failure(tonic::Code::FailedPrecondition, Reason::LastManager, "m"));
        assert_eq!(reason_of(&s).as_deref(), Some("LAST_MANAGER"));
    }
}
