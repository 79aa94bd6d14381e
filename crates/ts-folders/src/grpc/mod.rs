//! The gRPC edge: one file per proto service, each handler parsing its request once
//! (typed ids, access levels, checked names and items), calling the domain on `Folders`,
//! and building the proto answer. Around every user-facing RPC body runs the one wrapper
//! here: who is calling (the user the gateway vouched for) and whether they may share right
//! now, their access to the folder, and an audit event for every mutation and failure. The
//! one mapping from `FoldersError` to `tonic::Status` is here too.

mod audit;
mod audit_ingest;
mod folders;
mod items;
mod key_operator;
mod license_audit;
mod members;
mod membership;
mod privacy;

use std::future::Future;
use std::sync::Arc;

use tonic::{Code, Request, Status};
use ts_contract::audit::Event;
use ts_contract::ids::FolderId;
use ts_contract::user::UserContext;
use ts_proto::public::{AccessLevel, PageResponse};
use ts_runtime::audit::audited;
use ts_stores::cache::Generation;

use crate::audit::AuditAction;
use crate::context::FolderAccess;
use crate::error::KeyvaultRefusal;
use crate::{Folders, FoldersError};

/// Handlers for every folders gRPC service, over the shared domain state.
#[derive(Clone)]
pub struct FoldersApi {
    folders: Arc<Folders>,
}

impl std::fmt::Debug for FoldersApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoldersApi").field("folders", &self.folders).finish()
    }
}

/// The caller of one user-facing RPC.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The signed-in user.
    pub user: UserContext,
}

impl From<FoldersError> for Status {
    fn from(e: FoldersError) -> Status {
        use FoldersError::*;
        use ts_contract::status::{Reason as R, failure, invalid, invalid_field};
        let (code, reason) = match &e {
            Id(id) => return invalid_field(&id.field, e.to_string()),
            Invalid(_) | PageToken | PagePosition | ExpectedVersionRange | KindChange | SameTarget
            | AuditFieldsRequired | FolderIdRequired | LicenseIdRequired => return invalid(e.to_string()),
            FolderNotFound | TargetFolderNotFound => (Code::NotFound, R::FolderNotFound),
            ItemNotFound => (Code::NotFound, R::ItemNotFound),
            MemberNotFound => (Code::NotFound, R::MemberNotFound),
            Access { .. } => (Code::PermissionDenied, R::PermissionDenied),
            LastManager => (Code::FailedPrecondition, R::LastManager),
            LastManagerOf(blocking) => {
                let violations: Vec<(&str, String, String)> = blocking
                    .iter()
                    .map(|b| ("LAST_MANAGER", format!("folders/{}", b.folder_id), b.folder_name.clone()))
                    .collect();
                let message = "the user is the last MANAGE member of folders that have other members (hand \
                               management over or delete them first)";
                return ts_contract::status::precondition_failed(R::LastManager, message, &violations);
            }
            Erased => (Code::Unauthenticated, R::UnknownUser),
            MembersKeptChanging => (Code::Aborted, R::Contention),
            SharingRefused(denial) => return ts_contract::status::sharing_refusal(*denial as i32),
            NotYetEverywhere => (Code::Unavailable, R::NotYetEverywhere),
            SharingUnknown | KeysUnavailable => (Code::Unavailable, R::Unavailable),
            Stale { .. } => (Code::Aborted, R::VersionConflict),
            KeptChanging | RequestInProgress => (Code::Aborted, R::Contention),
            RequestIdReused => (Code::AlreadyExists, R::RequestIdReused),
            FolderFull => (Code::ResourceExhausted, R::FolderFull),
            Keyvault { refusal, .. } => match refusal {
                KeyvaultRefusal::NotFound => (Code::NotFound, R::NotFound),
                KeyvaultRefusal::InvalidArgument => return invalid(e.to_string()),
                KeyvaultRefusal::FailedPrecondition => (Code::FailedPrecondition, R::KeyState),
            },
            KeysUnreadable | MalformedKey | Incomplete { .. } | Seal { .. } => (Code::Internal, R::Internal),
            Undecryptable { .. } | Undecodable(_) => (Code::DataLoss, R::DataLoss),
            Store(cause) => return ts_stores::store_status(cause, "folders", &e.to_string()),
        };
        failure(code, reason, e.to_string())
    }
}

/// A page's answer.
fn page(next_token: String) -> Option<PageResponse> {
    Some(PageResponse { next_page_token: next_token })
}

/// A stored time as a protobuf timestamp.
fn timestamp(t: bson::DateTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(t.to_system_time()))
}

impl FoldersApi {
    /// Handlers over `folders`.
    pub(crate) fn new(folders: Arc<Folders>) -> Self {
        FoldersApi { folders }
    }

    /// Runs the body of an RPC that concerns no one folder.
    async fn for_user<T, R, F, Fut>(&self, request: &Request<T>, action: AuditAction, body: F) -> Result<R, Status>
    where
        F: FnOnce(Call) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let generations = self.folders.generations(None).await;
        self.run(request, action, "", &generations.sharing, body).await
    }

    /// Runs the body of an RPC on the folder `folder_id`, once the caller is known to hold at
    /// least `min` access there.
    async fn in_folder<T, R, F, Fut>(
        &self,
        request: &Request<T>,
        action: AuditAction,
        folder_id: &str,
        min: AccessLevel,
        body: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(Call, FolderAccess) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        // Nothing malformed reaches the stores, the cache keys or the audit trail; a missing
        // id is refused after the caller check, and audited.
        let parsed = if folder_id.is_empty() { None } else { Some(FolderId::parse("folder_id", folder_id)?) };
        // One Redis round trip for every generation the checks and the body depend on.
        let generations = self.folders.generations(parsed.as_ref()).await;
        let folder_generation = generations.folder;
        self.run(request, action, folder_id, &generations.sharing, |call| async move {
            let folder_id = parsed.ok_or(FoldersError::FolderIdRequired)?;
            let at = self.folders.require(&call.user.user_id, folder_id, min, folder_generation).await?;
            body(call, at).await
        })
        .await
    }

    /// Identifies and checks the caller, runs `body`, audits the outcome.
    async fn run<T, R, F, Fut>(
        &self,
        request: &Request<T>,
        action: AuditAction,
        folder_id: &str,
        sharing_epoch: &Generation,
        body: F,
    ) -> Result<R, Status>
    where
        F: FnOnce(Call) -> Fut,
        Fut: Future<Output = Result<R, Status>>,
    {
        let call = self.begin(request, action, folder_id, sharing_epoch).await?;
        let event = event(&call, action, folder_id);
        // A mutating body may hand its write to a task of its own, which lands even when the
        // caller goes away; the trail then records the call as CANCELLED rather than nothing.
        let mut cut_off =
            action.mutating().then(|| CutOff { folders: Some(self.folders.clone()), event: event.clone() });
        let result = body(call).await;
        if let Some(c) = cut_off.as_mut() {
            c.folders = None;
        }
        audited(&*self.folders, event, action.mutating(), result).await
    }

    /// Identifies the caller and checks with auth that they may share right now. A refusal
    /// is audited as `action`.
    async fn begin<T>(
        &self,
        request: &Request<T>,
        action: AuditAction,
        folder_id: &str,
        sharing_epoch: &Generation,
    ) -> Result<Call, Status> {
        let user = UserContext::from_metadata(request.metadata())?;
        let call = Call { user };
        match self.folders.check_sharing(&call.user.user_id, sharing_epoch).await {
            Ok(()) => Ok(call),
            Err(e @ FoldersError::SharingRefused(_)) => {
                let event = event(&call, action, folder_id);
                audited(&*self.folders, event, action.mutating(), Err(Status::from(e))).await
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Runs `work` in a task of its own, in the current span: a caller that goes away (a
/// deadline, a dropped connection) cannot stop it half-way. Its outcome; INTERNAL naming
/// `what` if the task itself failed.
pub(super) async fn own_task<T: Send + 'static>(
    what: &str,
    work: impl Future<Output = Result<T, FoldersError>> + Send + 'static,
) -> Result<T, Status> {
    use tracing::Instrument;
    let outcome = tokio::spawn(work.in_current_span()).await;
    outcome.map_err(|e| Status::internal(format!("{what} task failed: {e}")))?.map_err(Status::from)
}

/// Records, when dropped still armed (the caller went away mid-call), its event as CANCELLED.
struct CutOff {
    folders: Option<Arc<Folders>>,
    event: Event,
}

impl Drop for CutOff {
    fn drop(&mut self) {
        use ts_runtime::audit::Trail;
        let (Some(folders), Ok(runtime)) = (self.folders.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let event = Event { code: Code::Cancelled, ..self.event.clone() };
        runtime.spawn(async move { folders.record(event).await });
    }
}

/// The caller's event for `action` on `folder_id` (as sent: the wrapper refused a malformed
/// one before anything was recorded).
fn event(call: &Call, action: AuditAction, folder_id: &str) -> Event {
    Event {
        actor_email: call.user.email.clone(),
        actor_user_id: call.user.user_id.to_string(),
        folder_id: folder_id.to_owned(),
        action: action.as_str().to_owned(),
        ..Default::default()
    }
}
