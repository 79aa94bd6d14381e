//! `AuditIngestService`: the gateway, invitations, auth and keyvault record their events in
//! folders' trail through it.

use tonic::{Request, Response, Status};
use ts_proto::internal::audit_ingest_service_server::AuditIngestService;
use ts_proto::internal::{RecordAuditEventRequest, RecordAuditEventResponse};

use super::FoldersApi;
use crate::audit::AuditEntry;

#[tonic::async_trait]
impl AuditIngestService for FoldersApi {
    async fn record_audit_event(
        &self,
        request: Request<RecordAuditEventRequest>,
    ) -> Result<Response<RecordAuditEventResponse>, Status> {
        let r = request.into_inner();
        let entry = AuditEntry {
            actor_email: &r.actor_email,
            actor_user_id: &r.actor_user_id,
            folder_id: &r.folder_id,
            license_id: &r.license_id,
            action: &r.action,
            status_code: &r.status_code,
            request_id: &r.request_id,
        };
        self.folders.ingest_audit(entry).await?;
        Ok(Response::new(RecordAuditEventResponse {}))
    }
}
