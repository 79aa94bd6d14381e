//! The gRPC edge of invitations: reads the caller and the request fields into typed values,
//! calls the domain (`crate::service`), audits the outcome, and turns domain results into
//! proto messages and `InvitationsError` into `tonic::Status` (through its one `From`).

mod invitations;
mod privacy;

use std::future::Future;

use tonic::{Request, Status};
use ts_contract::audit::Event;
use ts_contract::email::Email;
use ts_contract::ids::{FolderId, IdError, InvitationId};
use ts_contract::paging::{page_size, token};
use ts_contract::user::UserContext;
use ts_proto::public::{self as proto, AccessLevel, PageRequest, PageResponse};
use ts_runtime::audit::{Sink, audited};

use crate::error::InvitationsError;
use crate::service::{InvitationView, Invitations, Listed, Page};
use crate::store::{InvitationState, PageCursor};

/// Handlers of `InvitationService` and `InvitationPrivacyService`.
#[derive(Clone)]
pub struct InvitationsApi {
    invitations: Invitations,
    audit: Sink,
}

impl std::fmt::Debug for InvitationsApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationsApi").field("invitations", &self.invitations).finish_non_exhaustive()
    }
}

/// Which outcomes of an RPC reach the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audit {
    /// Every outcome (mutations).
    Always,
    /// Only failures (reads).
    Failures,
}

impl InvitationsApi {
    /// Serves `invitations`, recording outcomes in `audit`.
    pub fn new(invitations: Invitations, audit: Sink) -> Self {
        InvitationsApi { invitations, audit }
    }

    /// Answers with `result` after recording it in the audit trail as `action` by `user` on
    /// the folder (when known): every failure, and successes when `audit` is `Always`.
    async fn audited<R>(
        &self,
        user: &UserContext,
        folder_id: Option<&FolderId>,
        action: &str,
        audit: Audit,
        result: Result<R, InvitationsError>,
    ) -> Result<R, Status> {
        let event = Event {
            actor_email: user.email.clone(),
            actor_user_id: user.user_id.to_string(),
            // Only a well-formed id reaches the audit trail (a malformed one was refused).
            folder_id: folder_id.map(FolderId::to_string).unwrap_or_default(),
            action: action.to_owned(),
            ..Default::default()
        };
        audited(&self.audit, event, audit == Audit::Always, result.map_err(Status::from)).await
    }

    /// Runs `op` on the invitation a request names (after parsing its id), audited as
    /// `action` on the folder `folder_of` finds in a success (a failure names no folder).
    async fn on_invitation<R, Fut>(
        &self,
        user: &UserContext,
        raw_id: &str,
        action: &str,
        op: impl FnOnce(InvitationId) -> Fut,
        folder_of: impl FnOnce(&R) -> &FolderId,
    ) -> Result<R, Status>
    where
        Fut: Future<Output = Result<R, InvitationsError>>,
    {
        let result = match invitation_id(raw_id) {
            Ok(id) => op(id).await,
            Err(e) => Err(e.into()),
        };
        let folder_id = result.as_ref().ok().map(folder_of).cloned();
        self.audited(user, folder_id.as_ref(), action, Audit::Always, result).await
    }

    /// The page a list request asks for.
    fn page(&self, page: &Option<PageRequest>) -> Result<Page, InvitationsError> {
        // A hard maximum per fetch, whatever the client asks for.
        let max = self.invitations.max_per_fetch();
        Ok(Page { size: page_size(page, max, max), after: token(page).map(PageCursor::decode).transpose()? })
    }
}

/// The signed-in user a request runs for.
fn caller<T>(request: &Request<T>) -> Result<UserContext, Status> {
    UserContext::from_metadata(request.metadata())
}

fn invitation_id(raw: &str) -> Result<InvitationId, IdError> {
    InvitationId::parse("invitation_id", raw)
}

fn invitee_email(raw: &str) -> Result<Email, InvitationsError> {
    Email::parse(raw).map_err(|problem| InvitationsError::InvalidArgument(format!("invitee_email {problem}")))
}

fn requested_access(raw: i32) -> Result<AccessLevel, InvitationsError> {
    ts_contract::status::access_level("access", raw).map_err(InvitationsError::invalid)
}

fn message(view: InvitationView) -> proto::Invitation {
    let i = view.invitation;
    let state = match i.state {
        InvitationState::Pending if view.expired => proto::InvitationState::Expired,
        InvitationState::Pending => proto::InvitationState::Pending,
        InvitationState::Accepted => proto::InvitationState::Accepted,
        InvitationState::Declined => proto::InvitationState::Declined,
        InvitationState::Revoked => proto::InvitationState::Revoked,
    };
    proto::Invitation {
        id: i.id.into(),
        folder_id: i.folder_id.into(),
        folder_name: view.folder_name,
        invitee_email: i.invitee_email,
        inviter_email: i.inviter_email,
        access: i.access as i32,
        state: state as i32,
        create_time: Some(i.created_at.to_system_time().into()),
        expire_time: Some(i.expires_at.to_system_time().into()),
    }
}

/// A page of invitations as the proto list answers carry it.
fn listed(page: Listed) -> (Vec<proto::Invitation>, Option<PageResponse>) {
    let next_page_token = page.next.map(|c| c.encode()).unwrap_or_default();
    (page.invitations.into_iter().map(message).collect(), Some(PageResponse { next_page_token }))
}
