//! Recording events in folders' audit trail from services that do not own it (auth,
//! keyvault): every string bounded, the call in the background so that an answer never waits
//! on it, and a failure logged. Callers put no codes, tokens or secrets in events.

use ts_proto::internal::RecordAuditEventRequest;
use ts_proto::internal::audit_ingest_service_client::AuditIngestServiceClient;

use crate::client::InternalChannel;

/// The most bytes any string of an audit event keeps.
pub const MAX_FIELD_BYTES: usize = 256;

/// The actor name of operator actions (the operator has no account).
pub const OPERATOR: &str = "operator";

/// `s` cut to at most `MAX_FIELD_BYTES`, on a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// One event, as the recording service knows it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who acted: their email (the one tried, for a failed sign-in), or `OPERATOR`.
    pub actor_email: String,
    /// Their user id, when they have an account.
    pub actor_user_id: String,
    /// The license concerned, if any.
    pub license_id: String,
    /// The folder concerned, if any.
    pub folder_id: String,
    /// Action name, such as `auth.refresh_session`.
    pub action: String,
    /// The outcome.
    pub code: tonic::Code,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            actor_email: String::new(),
            actor_user_id: String::new(),
            license_id: String::new(),
            folder_id: String::new(),
            action: String::new(),
            code: tonic::Code::Ok,
        }
    }
}

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
            status_code: crate::code_name(event.code).to_owned(),
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

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_bounded_on_character_boundaries() {
        assert_eq!(super::bounded("short"), "short");
        let long = "é".repeat(200);
        let cut = super::bounded(&long);
        assert!(cut.len() <= super::MAX_FIELD_BYTES && long.starts_with(&cut));
    }
}
