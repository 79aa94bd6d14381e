//! `InvitationsError`: why an invitations operation failed, with the message the client sees,
//! and its one mapping to a gRPC status (`From<InvitationsError> for tonic::Status`).

use std::time::Duration;

use tonic::{Code, Status};
use ts_contract::email::Email;
use ts_contract::ids::IdError;
use ts_contract::status::Reason;
use ts_mail::MailError;

/// Why an invitations operation failed. Each variant's text is what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum InvitationsError {
    /// A request field (or a page token) is malformed; the message names it.
    #[error("{0}")]
    InvalidArgument(String),
    /// The folder does not exist, or the caller is not a member of it.
    #[error("folder not found")]
    FolderNotFound,
    /// No such invitation, or not one the caller may see.
    #[error("invitation not found")]
    InvitationNotFound,
    /// The caller is a member of the folder, but without MANAGE.
    #[error("only MANAGE members can manage a folder's invitations")]
    NotManager,
    /// The invitee is already a member of the folder.
    #[error("{0} is already a member of this folder")]
    AlreadyMember(Email),
    /// Auth says the invitee's license does not allow team sharing.
    #[error("team sharing is blocked or disabled for the invitee's license")]
    SharingNotAllowed,
    /// The inviter's `request_id` was used for another invitation (ALREADY_EXISTS).
    #[error("request_id was already used for a different request; choose a new one")]
    RequestIdReused,
    /// The folder has as many pending invitations as allowed.
    #[error("this folder has {cap} pending invitations, the most allowed")]
    FolderCapReached {
        /// The cap.
        cap: u32,
        /// When the oldest of them expires.
        retry_after: Duration,
    },
    /// The invitee has as many pending invitations as allowed.
    #[error("{invitee} has {cap} pending invitations, the most allowed")]
    InviteeCapReached {
        /// The invitee.
        invitee: Email,
        /// The cap.
        cap: u32,
        /// When the oldest of them expires.
        retry_after: Duration,
    },
    /// The invitee's address is being erased: nobody may invite it until the erasure ends.
    #[error("this address cannot be invited right now")]
    InviteeErasing,
    /// The inviting account was erased (a request that was under way when it was).
    #[error("the account was erased")]
    InviterErased,
    /// The invitation expired before it was accepted.
    #[error("this invitation expired; ask for a new one")]
    Expired,
    /// The invitation was declined.
    #[error("this invitation was declined")]
    Declined,
    /// The invitation was revoked.
    #[error("this invitation was revoked")]
    Revoked,
    /// The invitation was answered (or revoked) already.
    #[error("this invitation is no longer pending")]
    NotPending,
    /// Only a pending, unexpired invitation can be re-sent.
    #[error("only a pending, unexpired invitation can be re-sent; invite again instead")]
    NotResendable,
    /// The invitation's folder was deleted.
    #[error("the folder of this invitation no longer exists")]
    FolderGone,
    /// The invitation made a membership that has changed or gone since (a replay).
    #[error("this invitation was already accepted and the membership has changed since; ask for a new invitation")]
    AlreadySpent,
    /// The inviter lost MANAGE on the folder since they invited.
    #[error("the person who sent this invitation no longer manages the folder; ask for a new invitation")]
    InviterNotManager,
    /// The detached accept task did not run to its end.
    #[error("the accept did not finish")]
    AcceptInterrupted,
    /// The detached create task did not run to its end.
    #[error("the invitation could not be created; retry with the same request_id")]
    CreateInterrupted,
    /// Auth could not say whether the invitee may share.
    #[error("cannot check the invitee's license right now; retry later")]
    IdentityUnavailable,
    /// Folders did not answer.
    #[error("folders is unavailable; retry later")]
    FoldersUnavailable,
    /// The invitation email was not sent.
    #[error("the invitation email could not be sent; retry later")]
    Mail(#[source] MailError),
    /// The database failed.
    #[error("invitation store is unavailable; retry later")]
    Store(#[from] mongodb::error::Error),
}

impl From<IdError> for InvitationsError {
    fn from(e: IdError) -> Self {
        InvitationsError::InvalidArgument(e.to_string())
    }
}

impl InvitationsError {
    /// The INVALID_ARGUMENT answer for request field `field`, with what is wrong with it.
    pub(crate) fn field(field: &str, problem: impl std::fmt::Display) -> Self {
        InvitationsError::InvalidArgument(format!("{field} {problem}"))
    }

    /// The INVALID_ARGUMENT answer of a shared request-field check, with its message.
    pub(crate) fn invalid(status: Status) -> Self {
        InvitationsError::InvalidArgument(status.message().to_owned())
    }

    fn code_and_reason(&self) -> (Code, Reason) {
        use InvitationsError::*;
        match self {
            InvalidArgument(_) => (Code::InvalidArgument, Reason::InvalidField),
            FolderNotFound => (Code::NotFound, Reason::FolderNotFound),
            InvitationNotFound => (Code::NotFound, Reason::InvitationNotFound),
            NotManager => (Code::PermissionDenied, Reason::PermissionDenied),
            AlreadyMember(_) => (Code::AlreadyExists, Reason::AlreadyMember),
            RequestIdReused => (Code::AlreadyExists, Reason::RequestIdReused),
            FolderCapReached { .. } | InviteeCapReached { .. } => {
                (Code::ResourceExhausted, Reason::InvitationCapReached)
            }
            SharingNotAllowed | InviteeErasing => (Code::FailedPrecondition, Reason::InviteeCannotShare),
            InviterErased => (Code::Unauthenticated, Reason::UnknownUser),
            Expired => (Code::FailedPrecondition, Reason::InvitationExpired),
            Declined => (Code::FailedPrecondition, Reason::InvitationDeclined),
            Revoked => (Code::FailedPrecondition, Reason::InvitationRevoked),
            NotPending => (Code::FailedPrecondition, Reason::InvitationNotPending),
            NotResendable => (Code::FailedPrecondition, Reason::InvitationNotResendable),
            FolderGone => (Code::FailedPrecondition, Reason::FolderGone),
            AlreadySpent => (Code::FailedPrecondition, Reason::InvitationSpent),
            InviterNotManager => (Code::FailedPrecondition, Reason::InviterNotManager),
            AcceptInterrupted | CreateInterrupted => (Code::Internal, Reason::Internal),
            IdentityUnavailable | FoldersUnavailable | Mail(_) | Store(_) => (Code::Unavailable, Reason::Unavailable),
        }
    }
}

impl From<InvitationsError> for Status {
    fn from(e: InvitationsError) -> Status {
        match &e {
            InvitationsError::Store(cause) => {
                return ts_stores::store_status(cause, "invitations", &e.to_string());
            }
            InvitationsError::Mail(cause) => tracing::warn!(error = %cause, "invitation email not sent"),
            _ => {}
        }
        let (code, reason) = e.code_and_reason();
        match &e {
            InvitationsError::FolderCapReached { retry_after, .. }
            | InvitationsError::InviteeCapReached { retry_after, .. } => {
                ts_contract::status::resource_exhausted(reason, &e.to_string(), *retry_after)
            }
            InvitationsError::InvalidArgument(m) => ts_contract::status::invalid(m.clone()),
            _ => ts_contract::status::failure(code, reason, e.to_string()),
        }
    }
}
