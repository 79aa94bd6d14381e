//! `AuditService` (a folder's trail for MANAGE members, each user's own errors), the
//! internal `AuditIngestService` through which the gateway, invitations, auth and keyvault
//! record events, and `LicenseAuditService`, auth's reader of a license's events.

use bson::{Document, doc};
use tonic::{Request, Response, Status};
use ts_proto::internal::audit_ingest_service_server::AuditIngestService;
use ts_proto::internal::license_audit_service_server::LicenseAuditService;
use ts_proto::internal::{
    ListLicenseAuditEventsRequest, ListLicenseAuditEventsResponse, RecordAuditEventRequest, RecordAuditEventResponse,
};
use ts_proto::public::audit_service_server::AuditService;
use ts_proto::public::*;

use crate::paging::{open_plain, page_size, plain_token, token};
use crate::{FoldersApi, find_page, timestamp};

fn event(d: &Document) -> AuditEvent {
    AuditEvent {
        id: d.get_str("_id").unwrap_or_default().to_owned(),
        time: timestamp(d, "time"),
        actor_email: d.get_str("actor_email").unwrap_or_default().to_owned(),
        folder_id: d.get_str("folder_id").unwrap_or_default().to_owned(),
        action: d.get_str("action").unwrap_or_default().to_owned(),
        status_code: d.get_str("status_code").unwrap_or_default().to_owned(),
        request_id: d.get_str("request_id").unwrap_or_default().to_owned(),
        license_id: d.get_str("license_id").unwrap_or_default().to_owned(),
    }
}

impl FoldersApi {
    fn events_collection(&self) -> mongodb::Collection<Document> {
        self.db.collection("audit_events")
    }

    /// A page of events matching `filter`, newest first.
    async fn events(
        &self,
        mut filter: Document,
        page: &Option<PageRequest>,
    ) -> Result<(Vec<AuditEvent>, String), Status> {
        let size = page_size(page, 100, 500);
        if let Some(t) = token(page) {
            let p = open_plain(t, 2)?;
            let ms: i64 = p[0].parse().map_err(|_| Status::invalid_argument("page.page_token is not valid here"))?;
            let at = bson::DateTime::from_millis(ms);
            filter.insert("$or", vec![doc! { "time": { "$lt": at } }, doc! { "time": at, "_id": { "$lt": &p[1] } }]);
        }
        let (docs, more) = find_page(&self.events_collection(), filter, doc! { "time": -1, "_id": -1 }, size).await?;
        let next = match (more, docs.last()) {
            (true, Some(last)) => {
                let at = last.get_datetime("time").map(|d| d.timestamp_millis()).unwrap_or_default();
                plain_token(&[at.to_string(), last.get_str("_id").unwrap_or_default().to_owned()])
            }
            _ => String::new(),
        };
        Ok((docs.iter().map(event).collect(), next))
    }
}

#[tonic::async_trait]
impl AuditService for FoldersApi {
    async fn list_folder_audit(
        &self,
        request: Request<ListFolderAuditRequest>,
    ) -> Result<Response<ListFolderAuditResponse>, Status> {
        let req = request.get_ref().clone();
        let (events, next) = self
            .handle(&request, "audit.list_folder", &req.folder_id, false, |call| {
                let req = req.clone();
                async move {
                    self.require(&call, &req.folder_id, AccessLevel::Manage).await?;
                    self.events(doc! { "folder_id": &req.folder_id }, &req.page).await
                }
            })
            .await?;
        Ok(Response::new(ListFolderAuditResponse { events, page: Some(PageResponse { next_page_token: next }) }))
    }

    async fn list_my_errors(
        &self,
        request: Request<ListMyErrorsRequest>,
    ) -> Result<Response<ListMyErrorsResponse>, Status> {
        let page = request.get_ref().page.clone();
        let (events, next) = self
            .handle(&request, "audit.list_my_errors", "", false, |call| async move {
                // Failed sign-ins before the account existed name only the address tried.
                let mine = doc! { "$or": [
                    { "actor_user_id": &call.user.user_id },
                    { "actor_user_id": "", "actor_email": &call.user.email },
                ] };
                self.events(doc! { "$and": [mine, { "status_code": { "$ne": "OK" } }] }, &page).await
            })
            .await?;
        Ok(Response::new(ListMyErrorsResponse { events, page: Some(PageResponse { next_page_token: next }) }))
    }
}

#[tonic::async_trait]
impl AuditIngestService for FoldersApi {
    async fn record_audit_event(
        &self,
        request: Request<RecordAuditEventRequest>,
    ) -> Result<Response<RecordAuditEventResponse>, Status> {
        let r = request.into_inner();
        if r.action.is_empty() || r.status_code.is_empty() {
            return Err(Status::invalid_argument("action and status_code are required"));
        }
        self.record_audit(
            &r.actor_email,
            &r.actor_user_id,
            &r.folder_id,
            &r.license_id,
            &r.action,
            &r.status_code,
            &r.request_id,
        )
        .await;
        Ok(Response::new(RecordAuditEventResponse {}))
    }
}

#[tonic::async_trait]
impl LicenseAuditService for FoldersApi {
    async fn list_license_audit_events(
        &self,
        request: Request<ListLicenseAuditEventsRequest>,
    ) -> Result<Response<ListLicenseAuditEventsResponse>, Status> {
        // Only auth calls this, after checking that its caller is an admin of the license.
        let r = request.into_inner();
        if r.license_id.is_empty() {
            return Err(Status::invalid_argument("license_id is required"));
        }
        let (events, next) = self.events(doc! { "license_id": &r.license_id }, &r.page).await?;
        Ok(Response::new(ListLicenseAuditEventsResponse { events, page: Some(PageResponse { next_page_token: next }) }))
    }
}
