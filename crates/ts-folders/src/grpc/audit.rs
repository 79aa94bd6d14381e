//! `AuditService`: a folder's trail for its MANAGE members, and each user's own errors.

use tonic::{Request, Response, Status};
use ts_proto::public::audit_service_server::AuditService;
use ts_proto::public::*;

use super::{FoldersApi, timestamp};
use crate::audit::AuditAction;
use crate::paging::PageAsk;
use crate::store::AuditEventDoc;

/// A stored event as callers see it (also for `LicenseAuditService`).
pub(super) fn event_message(d: AuditEventDoc) -> AuditEvent {
    AuditEvent {
        id: d.id,
        time: timestamp(d.time),
        actor_email: d.actor_email,
        folder_id: d.folder_id,
        action: d.action,
        status_code: d.status_code,
        request_id: d.request_id,
        license_id: d.license_id,
    }
}

#[tonic::async_trait]
impl AuditService for FoldersApi {
    async fn list_folder_audit(
        &self,
        request: Request<ListFolderAuditRequest>,
    ) -> Result<Response<ListFolderAuditResponse>, Status> {
        let req = request.get_ref();
        let ask = PageAsk::from_request(&req.page);
        let action = AuditAction::AuditListFolder;
        let listed = self
            .in_folder(&request, action, &req.folder_id, AccessLevel::Manage, |_, at| async move {
                Ok(self.folders.folder_events(&at.folder_id, &ask).await?)
            })
            .await?;
        let events = listed.items.into_iter().map(event_message).collect();
        Ok(Response::new(ListFolderAuditResponse { events, page: super::page(listed.next_token) }))
    }

    async fn list_my_errors(
        &self,
        request: Request<ListMyErrorsRequest>,
    ) -> Result<Response<ListMyErrorsResponse>, Status> {
        let ask = PageAsk::from_request(&request.get_ref().page);
        let listed = self
            .for_user(&request, AuditAction::AuditListMyErrors, |call| async move {
                Ok(self.folders.my_errors(&call.user.user_id, &call.user.email, &ask).await?)
            })
            .await?;
        let events = listed.items.into_iter().map(event_message).collect();
        Ok(Response::new(ListMyErrorsResponse { events, page: super::page(listed.next_token) }))
    }
}
