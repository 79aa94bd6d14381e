//! `FolderPrivacyService`: folders' part of a person's export and erasure, and the audit
//! retention purge. Only auth calls it: it runs every erasure and serves every export.

use std::time::SystemTime;

use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use ts_contract::ids::UserId;
use ts_proto::internal::folder_privacy_service_server::FolderPrivacyService;
use ts_proto::internal::{
    BlockingFolder, CheckErasureRequest, CheckErasureResponse, EraseUserRequest, EraseUserResponse,
    ExportUserDataRequest, ExportUserDataResponse, PurgeAuditEventsRequest, PurgeAuditEventsResponse,
};
use ts_proto::public::export_my_data_response::Part;
use ts_proto::public::{ExportMyDataResponse, ExportedItem, ExportedMembership};

use super::audit::event_message;
use super::items::item_message;
use super::{FoldersApi, own_task, timestamp};
use crate::FoldersError;
use crate::privacy::{ErasureSubject, ExportPart, check_pseudonym};
use crate::validate::check_email;

/// Export parts read ahead of a slow reader; the export waits for it beyond that.
const EXPORT_BUFFER: usize = 32;

/// An optional user id (empty for an email without an account).
fn optional_user(field: &str, raw: &str) -> Result<Option<UserId>, Status> {
    if raw.is_empty() { Ok(None) } else { Ok(Some(UserId::parse(field, raw)?)) }
}

/// The purge's `before`, required.
fn purge_before(before: Option<prost_types::Timestamp>) -> Result<SystemTime, FoldersError> {
    let before = before.ok_or_else(|| FoldersError::invalid("before", "is required"))?;
    SystemTime::try_from(before).map_err(|_| FoldersError::invalid("before", "is not a valid time"))
}

/// An export part as the public export message carries it.
fn part_message(part: ExportPart) -> ExportUserDataResponse {
    let part = match part {
        ExportPart::Membership { folder, joined_at, created_by_caller } => Part::Membership(ExportedMembership {
            folder_id: folder.doc.id.to_string(),
            folder_name: folder.name,
            access: folder.access as i32,
            join_time: timestamp(joined_at),
            created_by_caller,
        }),
        ExportPart::Item { item, shared_by_caller, last_edited_by_caller } => {
            Part::Item(ExportedItem { item: Some(item_message(*item)), shared_by_caller, last_edited_by_caller })
        }
        ExportPart::Event(event) => Part::AuditEvent(event_message(event)),
    };
    ExportUserDataResponse { data: Some(ExportMyDataResponse { part: Some(part) }) }
}

#[tonic::async_trait]
impl FolderPrivacyService for FoldersApi {
    async fn export_user_data(
        &self,
        request: Request<ExportUserDataRequest>,
    ) -> Result<Response<BoxStream<ExportUserDataResponse>>, Status> {
        let req = request.into_inner();
        let user_id = optional_user("user_id", &req.user_id)?;
        let email = check_email("email", &req.email)?;
        // Its own task, page by page into a bounded channel: a reader that goes away ends it
        // (its next send fails), and nothing waits in memory beyond the buffer.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ExportUserDataResponse, Status>>(EXPORT_BUFFER);
        let folders = self.folders.clone();
        let export = async move {
            let parts = tx.clone();
            let emit = move |part: ExportPart| {
                let parts = parts.clone();
                async move { parts.send(Ok(part_message(part))).await.is_ok() }
            };
            if let Err(e) = folders.export_user_data(user_id.as_ref(), email.as_str(), emit).await {
                let _ = tx.send(Err(Status::from(e))).await;
            }
        };
        tokio::spawn(export.in_current_span());
        let stream: BoxStream<ExportUserDataResponse> =
            Box::pin(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|part| (part, rx)) }));
        Ok(Response::new(stream))
    }

    async fn check_erasure(
        &self,
        request: Request<CheckErasureRequest>,
    ) -> Result<Response<CheckErasureResponse>, Status> {
        let user_id = UserId::parse("user_id", &request.get_ref().user_id)?;
        let blocking = self
            .folders
            .check_erasure(&user_id)
            .await?
            .into_iter()
            .map(|b| BlockingFolder {
                folder_id: b.folder_id.into(),
                folder_name: b.folder_name,
                other_members: b.other_members,
            })
            .collect();
        Ok(Response::new(CheckErasureResponse { blocking }))
    }

    async fn erase_user(&self, request: Request<EraseUserRequest>) -> Result<Response<EraseUserResponse>, Status> {
        let req = request.into_inner();
        let user_id = optional_user("user_id", &req.user_id)?;
        let email = check_email("email", &req.email)?;
        let pseudonym = check_pseudonym("pseudonym", &req.pseudonym)?;
        let who = ErasureSubject { user_id, email: email.as_str().to_owned(), pseudonym };
        let hand_over = req.hand_over_management;
        // Its own task: a caller that goes away mid-way does not stop it between a folder's
        // keys and its documents (a repeated erasure would finish it, but need not).
        let folders = self.folders.clone();
        let erased = own_task("erase_user", async move { folders.erase_user(&who, hand_over).await }).await?;
        Ok(Response::new(EraseUserResponse {
            deleted_folder_ids: erased.deleted_folders.into_iter().map(String::from).collect(),
            handed_over_folder_ids: erased.handed_over.into_iter().map(String::from).collect(),
            memberships_removed: erased.memberships_removed,
        }))
    }

    async fn purge_audit_events(
        &self,
        request: Request<PurgeAuditEventsRequest>,
    ) -> Result<Response<PurgeAuditEventsResponse>, Status> {
        let before = purge_before(request.into_inner().before)?;
        let removed = self.folders.purge_audit_events(before).await?;
        Ok(Response::new(PurgeAuditEventsResponse { removed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_purge_needs_a_valid_time() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(purge_before(Some(prost_types::Timestamp::from(at))).unwrap(), at);
        assert!(purge_before(None).unwrap_err().to_string().starts_with("before "));
        let broken = prost_types::Timestamp { seconds: i64::MIN, nanos: 0 };
        assert!(purge_before(Some(broken)).is_err());
    }

    #[test]
    fn user_ids_are_optional_but_never_malformed() {
        assert_eq!(optional_user("user_id", "").unwrap(), None);
        let id = UserId::new();
        assert_eq!(optional_user("user_id", id.as_str()).unwrap(), Some(id));
        assert_eq!(optional_user("user_id", "nope").unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
