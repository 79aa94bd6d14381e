//! Errors an application can act on: the server's code, stable reason, field violations and
//! retry hint read from the `google.rpc` details of every status.

use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

use crate::proto::ErrorReason;

/// A request field the server refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field path, such as `content.connection.hosts[0]`.
    pub field: String,
    /// Why it was refused.
    pub description: String,
}

/// An error answer from the server.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The gRPC code.
    pub code: Code,
    /// The stable reason; `Unspecified` when the server named one this SDK does not know
    /// (see `reason_text`).
    pub reason: ErrorReason,
    /// The reason as the server spelled it (`LAST_MANAGER`), empty if it gave none.
    pub reason_text: String,
    /// The server's message, for people.
    pub message: String,
    /// Fields refused, for INVALID_ARGUMENT.
    pub violations: Vec<FieldViolation>,
    /// How long the server asks to wait before retrying, if it said.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// Whether the server named `reason`.
    pub fn is(&self, reason: ErrorReason) -> bool {
        self.reason == reason
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.reason_text.is_empty() {
            write!(f, " ({})", self.reason_text)?;
        }
        Ok(())
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let details = status.get_error_details();
        let reason_text = details.error_info().map(|i| i.reason.clone()).unwrap_or_default();
        let reason =
            ErrorReason::from_str_name(&format!("ERROR_REASON_{reason_text}")).unwrap_or(ErrorReason::Unspecified);
        let violations = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| FieldViolation { field: v.field.clone(), description: v.description.clone() })
                    .collect()
            })
            .unwrap_or_default();
        let retry_after = details.retry_info().and_then(|r| r.retry_delay);
        ApiError {
            code: status.code(),
            reason,
            reason_text,
            message: status.message().to_owned(),
            violations,
            retry_after,
        }
    }
}

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    #[error("{0}")]
    Api(ApiError),
    /// The gateway could not be reached or TLS failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The call needs a session and there is none: sign in first.
    #[error("not signed in; sign in first")]
    NotSignedIn,
    /// An argument was refused before anything was sent; names the argument.
    #[error("{field}: {message}")]
    InvalidInput {
        /// The argument.
        field: &'static str,
        /// Why.
        message: String,
    },
    /// The local credential or session store failed.
    #[error("local store: {0}")]
    Store(String),
    /// The server's answer lacked a part it always sends.
    #[error("the server's answer lacks {0}")]
    Incomplete(&'static str),
}

impl Error {
    /// The server's error, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the server answered with `reason`.
    pub fn is(&self, reason: ErrorReason) -> bool {
        self.api().is_some_and(|e| e.is(reason))
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Api(status.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fields_and_retry_hints_are_read_from_the_details() {
        let mut d = tonic_types::ErrorDetails::new();
        d.set_error_info("LAST_MANAGER", "teamshare.dev", std::collections::HashMap::new());
        d.add_bad_request_violation("name", "name is required");
        d.set_retry_info(Some(Duration::from_secs(3)));
        let s = tonic::Status::with_error_details(Code::FailedPrecondition, "give someone MANAGE first", d);
        let e = ApiError::from(s);
        assert!(e.is(ErrorReason::LastManager));
        assert_eq!(e.violations[0].field, "name");
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let unknown = ApiError::from(tonic::Status::internal("x"));
        assert_eq!(unknown.reason, ErrorReason::Unspecified);
    }
}
