//! Recording events in folders' audit trail from services that do not own it (auth,
//! keyvault, invitations, the gateway): every string bounded, the call in the background so
//! that an answer never waits on it, and a failure logged.

use ts_contract::audit::{Event, bounded};
use ts_contract::status::code_name;
use ts_proto::internal::RecordAuditEventRequest;
use ts_proto::internal::audit_ingest_service_client::AuditIngestServiceClient;

use crate::client::InternalChannel;

/// Sends events to folders' `AuditIngestService` (the default sends nowhere).
#[derive(Debug, Clone, Default)]
pub struct Sink {
    client: Option<AuditIngestServiceClient<InternalChannel>>,
}

impl Sink {
    /// Records through `channel` (folders).
    pub fn new(channel: InternalChannel) -> Self {
        Sink { client: Some(AuditIngestServiceClient::new(channel)) }
    }

    /// Records `event` in the background, with the current request id.
    pub fn record(&self, event: Event) {
        let Some(client) = self.client.clone() else { return };
        let request = RecordAuditEventRequest {
            actor_email: bounded(&event.actor_email),
            actor_user_id: bounded(&event.actor_user_id),
            folder_id: bounded(&event.folder_id),
            action: bounded(&event.action),
            status_code: code_name(event.code).to_owned(),
            request_id: bounded(&crate::server::current_request_id().map(|r| r.0).unwrap_or_default()),
            license_id: bounded(&event.license_id),
        };
        tokio::spawn(async move {
            let action = request.action.clone();
            if let Err(e) = client.clone().record_audit_event(request).await {
                tracing::error!(code = ?e.code(), action, "cannot record an audit event");
            }
        });
    }
}
