//! The auth service's state and error type.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::{Code, Status};
use ts_config::AccountsConfig;
use ts_contract::clock::SharedClock;
use ts_contract::status::{self, Reason};
use ts_mail::{MailError, Mailer};
use zeroize::Zeroizing;

use crate::signing::Signer;
use crate::sso::SsoIssuer;
use crate::store::Store;

/// Everything the auth handlers share.
pub struct Auth {
    /// Every collection of auth.
    pub(crate) store: Store,
    pub(crate) clock: SharedClock,
    pub(crate) mailer: Arc<dyn Mailer>,
    pub(crate) signer: Signer,
    pub(crate) secret: Zeroizing<[u8; 32]>,
    pub(crate) policy: AccountsConfig,
    pub(crate) sso: Vec<SsoIssuer>,
    pub(crate) redis: Option<fred::clients::Client>,
    /// Generations in Redis (the sharing epoch, each user's), and the users' views kept
    /// under them, so that GetMe and CheckSharingAllowed read no MongoDB when warm.
    pub(crate) generations: ts_stores::cache::Cache,
    pub(crate) views: ts_stores::cache::Tagged<ts_contract::ids::UserId, crate::sessions::UserView>,
    /// Folders' audit trail, where failed sign-ins and license actions are recorded.
    pub(crate) audit: ts_runtime::audit::Sink,
    /// Folders' and invitations' parts of exports and erasures.
    pub(crate) privacy: PrivacyClients,
    /// What the retention job purges.
    pub(crate) retention: ts_config::RetentionConfig,
    /// Folders' reader of a license's events, for license admins.
    pub(crate) license_audit: Option<
        ts_proto::internal::license_audit_service_client::LicenseAuditServiceClient<
            ts_runtime::client::InternalChannel,
        >,
    >,
}

/// The channels to folders and invitations for exports and erasures (a longer deadline than
/// other internal calls: an account may hold many items).
#[derive(Debug, Clone)]
pub struct PrivacyClients {
    /// Folders.
    pub folders: ts_runtime::client::InternalChannel,
    /// Invitations.
    pub invitations: ts_runtime::client::InternalChannel,
}

impl PrivacyClients {
    /// Folders' `FolderPrivacyService`.
    pub(crate) fn folders(
        &self,
    ) -> ts_proto::internal::folder_privacy_service_client::FolderPrivacyServiceClient<
        ts_runtime::client::InternalChannel,
    > {
        ts_proto::internal::folder_privacy_service_client::FolderPrivacyServiceClient::new(self.folders.clone())
    }

    /// Invitations' `InvitationPrivacyService`.
    pub(crate) fn invitations(
        &self,
    ) -> ts_proto::internal::invitation_privacy_service_client::InvitationPrivacyServiceClient<
        ts_runtime::client::InternalChannel,
    > {
        ts_proto::internal::invitation_privacy_service_client::InvitationPrivacyServiceClient::new(
            self.invitations.clone(),
        )
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("db", &self.store.db_name()).field("signer", &self.signer).finish_non_exhaustive()
    }
}

/// Why an auth operation failed; `Status::from` is the one mapping to gRPC.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A request field is malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// Credentials (code, token) are wrong; the reason says which.
    #[error("{1}")]
    Unauthenticated(Reason, String),
    /// The state does not allow this (code expired, email unverified…); the reason says which.
    #[error("{1}")]
    Precondition(Reason, String),
    /// A rate limit was hit.
    #[error("{message}")]
    Exhausted {
        /// What was limited.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such thing.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] mongodb::error::Error),
    /// Mail could not be sent.
    #[error(transparent)]
    Mail(#[from] MailError),
    /// A change that takes sharing away is saved, but other services may not see it yet
    /// (the sharing epoch could not be replaced in Redis); the same request again is safe.
    #[error("the change is saved but may not be seen everywhere yet; retry the same request")]
    NotYetEverywhere,
    /// The person is the last MANAGE member of these folders, which have other members:
    /// `(folders/<id>, description)` each.
    #[error("the account is the last manager of folders with other members")]
    LastManager(Vec<(String, String)>),
    /// The address is being erased: no sign-in until the erasure is done
    /// (FAILED_PRECONDITION, ACCOUNT_BEING_ERASED).
    #[error("this address is being erased; retry in a few minutes")]
    Erasing,
    /// Another service did not answer; the work resumes (UNAVAILABLE).
    #[error("{0}")]
    Upstream(String),
    /// Anything else that is our fault.
    #[error("{0}")]
    Internal(String),
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::InvalidArgument(m) => status::invalid(m),
            AuthError::Unauthenticated(reason, m) => status::failure(Code::Unauthenticated, reason, m),
            AuthError::Precondition(reason, m) => status::failure(Code::FailedPrecondition, reason, m),
            AuthError::Exhausted { message, retry_after } => {
                status::resource_exhausted(Reason::RateLimited, &message, retry_after)
            }
            AuthError::PermissionDenied(m) => status::failure(Code::PermissionDenied, Reason::PermissionDenied, m),
            AuthError::NotFound(m) => status::failure(Code::NotFound, Reason::NotFound, m),
            AuthError::Store(e) => ts_stores::store_status(&e, "auth", "account store is unavailable; retry later"),
            AuthError::Mail(e) => {
                tracing::error!(error = %e, "mail failed");
                status::failure(Code::Unavailable, Reason::Unavailable, "the email could not be sent; retry later")
            }
            e @ AuthError::NotYetEverywhere => {
                status::failure(Code::Unavailable, Reason::NotYetEverywhere, e.to_string())
            }
            AuthError::LastManager(folders) => {
                let violations: Vec<_> =
                    folders.into_iter().map(|(subject, description)| ("LAST_MANAGER", subject, description)).collect();
                status::precondition_failed(
                    Reason::LastManager,
                    "hand management over or delete these folders first; you are their last manager",
                    &violations,
                )
            }
            e @ AuthError::Erasing => {
                status::failure(Code::FailedPrecondition, Reason::AccountBeingErased, e.to_string())
            }
            AuthError::Upstream(m) => {
                tracing::warn!(error = %m, "a service auth depends on failed");
                status::failure(Code::Unavailable, Reason::Unavailable, "a service is unavailable; retry later")
            }
            AuthError::Internal(m) => {
                tracing::error!(error = %m, "auth internal error");
                status::failure(Code::Internal, Reason::Internal, "internal error")
            }
        }
    }
}

/// Result of auth operations.
pub type AuthResult<T> = Result<T, AuthError>;

impl Auth {
    /// Now, by the injected clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Unique emails; TTL expiry of codes, sessions and rate counters.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        self.store.ensure_indexes().await
    }

    /// HMAC-SHA256 under the service secret; used for codes and rate-limit keys so that
    /// neither is stored in a recoverable form.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> Vec<u8> {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret[..]);
        let mut ctx = ring::hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(&(p.len() as u32).to_be_bytes());
            ctx.update(p);
        }
        ctx.sign().as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::AuthError;

    #[test]
    fn an_unreadable_stored_document_is_data_loss_and_an_outage_is_unavailable() {
        let (unreadable, outage) = ts_stores::testing::store_failures();
        assert_eq!(Status::from(AuthError::Store(unreadable)).code(), Code::DataLoss);
        let down = Status::from(AuthError::Store(outage));
        assert_eq!(down.code(), Code::Unavailable);
        assert!(!down.message().contains("refused"), "the cause stays in the logs");
    }
}
