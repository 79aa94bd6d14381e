//! `AuditService` (a folder's trail for MANAGE members, each user's own errors) and the
//! internal `AuditIngestService` through which the gateway and invitations record events.

use bson::{Document, doc};
use futures::TryStreamExt;
use tonic::{Request, Response, Status};
use ts_proto::internal::audit_ingest_service_server::AuditIngestService;
use ts_proto::internal::{RecordAuditEventRequest, RecordAuditEventResponse};
use ts_proto::public::audit_service_server::AuditService;
use ts_proto::public::*;

use crate::paging::{open_plain, page_size, plain_token, token};
use crate::{FoldersApi, store_error, timestamp};

fn event(d: &Document) -> AuditEvent {
    AuditEvent {
        id: d.get_str("_id").unwrap_or_default().to_owned(),
        time: timestamp(d, "time"),
        actor_email: d.get_str("actor_email").unwrap_or_default().to_owned(),
        folder_id: d.get_str("folder_id").unwrap_or_default().to_owned(),
        action: d.get_str("action").unwrap_or_default().to_owned(),
        status_code: d.get_str("status_code").unwrap_or_default().to_owned(),
        request_id: d.get_str("request_id").unwrap_or_default().to_owned(),
    }
}

impl FoldersApi {
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
        let docs: Vec<Document> = self
            .db
            .collection::<Document>("audit_events")
            .find(filter)
            .sort(doc! { "time": -1, "_id": -1 })
            .limit(size as i64 + 1)
            .await
            .map_err(store_error)?
            .try_collect()
            .await
            .map_err(store_error)?;
        let more = docs.len() > size;
        let next = match (more, docs.get(size.saturating_sub(1))) {
            (true, Some(last)) => {
                let at = last.get_datetime("time").map(|d| d.timestamp_millis()).unwrap_or_default();
                plain_token(&[at.to_string(), last.get_str("_id").unwrap_or_default().to_owned()])
            }
            _ => String::new(),
        };
        Ok((docs.iter().take(size).map(event).collect(), next))
    }
}

#[tonic::async_trait]
impl AuditService for FoldersApi {
    async fn list_folder_audit(
        &self,
        request: Request<ListFolderAuditRequest>,
    ) -> Result<Response<ListFolderAuditResponse>, Status> {
        let req = request.get_ref().clone();
        let call = self.begin(&request, "audit.list_folder", &req.folder_id).await?;
        let result = async {
            self.require(&call, &req.folder_id, AccessLevel::Manage).await?;
            self.events(doc! { "folder_id": &req.folder_id }, &req.page).await
        }
        .await;
        let (events, next) = self.finish(&call, "audit.list_folder", &req.folder_id, false, result).await?;
        Ok(Response::new(ListFolderAuditResponse { events, page: Some(PageResponse { next_page_token: next }) }))
    }

    async fn list_my_errors(
        &self,
        request: Request<ListMyErrorsRequest>,
    ) -> Result<Response<ListMyErrorsResponse>, Status> {
        let req = request.get_ref().clone();
        let call = self.begin(&request, "audit.list_my_errors", "").await?;
        let result =
            self.events(doc! { "actor_user_id": &call.user.user_id, "status_code": { "$ne": "OK" } }, &req.page).await;
        let (events, next) = self.finish(&call, "audit.list_my_errors", "", false, result).await?;
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
        self.record_audit(&r.actor_email, &r.actor_user_id, &r.folder_id, &r.action, &r.status_code, &r.request_id)
            .await;
        Ok(Response::new(RecordAuditEventResponse {}))
    }
}
