//! Plumbing shared by every teamshare service: configuration, mTLS and caller identity,
//! telemetry, the gRPC server wrapper, internal clients, and the end user's identity as
//! it travels between services.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cache;
pub mod client;
pub mod clock;
pub mod config;
pub mod email;
pub mod identity;
pub mod ids;
pub mod mail;
pub mod paging;
pub mod revocation;
pub mod server;
pub mod stores;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod tokens;
pub mod user;

use std::path::Path;

use config::{Config, ConfigError, ServiceConfig, require};
use tls::MtlsMaterial;

/// Why a service could not start or stopped with an error. Displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad or missing configuration, naming the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    /// A store could not be prepared at start (for example, creating indexes).
    #[error("startup failed: {0}")]
    Startup(String),
}

/// Loads an internal service's mTLS material from `[internal_tls]` and its own section.
pub fn service_mtls(config: &Config, section: &str, service: &ServiceConfig) -> Result<MtlsMaterial, ConfigError> {
    let ca = require(&config.internal_tls, "internal_tls")?;
    material(&ca.ca_cert, section, &service.cert, &service.key)
}

/// Loads mTLS material naming `section.cert` and `section.key` in errors.
pub fn material(ca: &Path, section: &str, cert: &Path, key: &Path) -> Result<MtlsMaterial, ConfigError> {
    MtlsMaterial::load(
        ("internal_tls.ca_cert", ca),
        (&format!("{section}.cert"), cert),
        (&format!("{section}.key"), key),
    )
}

/// The drain delay before a server stops accepting, from `drain_delay_ms`.
pub fn drain_delay(config: &Config) -> std::time::Duration {
    std::time::Duration::from_millis(config.drain_delay_ms)
}

/// Default deadline of a call from one internal service to another.
pub const INTERNAL_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens an mTLS channel to the internal service `callee`, as configured in `[upstreams]`.
pub fn upstream(
    config: &Config,
    callee: &str,
    material: &MtlsMaterial,
) -> Result<client::InternalChannel, ConfigError> {
    client::connect(callee, config.upstreams.get(callee)?, material, INTERNAL_CALL_TIMEOUT)
}

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

/// A stored BSON date as a protobuf timestamp.
pub fn doc_timestamp(d: &bson::Document, field: &str) -> Option<prost_types::Timestamp> {
    d.get_datetime(field).ok().map(|t| prost_types::Timestamp::from(t.to_system_time()))
}
