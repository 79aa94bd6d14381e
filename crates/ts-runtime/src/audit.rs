//! The one audit wrapper every service runs its calls through ([`audited`]: every failure
//! and every successful mutation is recorded), and the [`Sink`] that sends events to folders'
//! trail from services that do not own it (auth, keyvault, invitations, the gateway): every
//! string bounded, a failure logged and never shown to the caller.

use std::future::Future;

use tonic::{Code, Status};

use ts_contract::audit::{Event, bounded};
use ts_contract::status::code_name;
use ts_proto::internal::RecordAuditEventRequest;
use ts_proto::internal::audit_ingest_service_client::AuditIngestServiceClient;

use crate::client::InternalChannel;

/// Where an audited call's outcome goes: folders writes its own trail; every other service
/// sends it there through a [`Sink`].
pub trait Trail: Send + Sync {
    /// Records `event` (with the current request id); a failure is logged, never returned.
    fn record(&self, event: Event) -> impl Future<Output = ()> + Send;
}

/// Answers with `result` after recording it in `trail` as `event` with the outcome's code:
/// every failure, and a success when the call `mutating` changed something.
pub async fn audited<R>(
    trail: &impl Trail,
    event: Event,
    mutating: bool,
    result: Result<R, Status>,
) -> Result<R, Status> {
    let code = match &result {
        Ok(_) if mutating => Some(Code::Ok),
        Ok(_) => None,
        Err(status) => Some(status.code()),
    };
    if let Some(code) = code {
        trail.record(Event { code, ..event }).await;
    }
    result
}

/// Sends events to folders' `AuditIngestService` (the default sends nowhere).
#[derive(Debug, Clone, Default)]
pub struct Sink {
    client: Option<AuditIngestServiceClient<InternalChannel>>,
    wait: bool,
}

impl Sink {
    /// Records through `channel` (folders), in the background: an answer never waits on it.
    pub fn new(channel: InternalChannel) -> Self {
        Sink { client: Some(AuditIngestServiceClient::new(channel)), wait: false }
    }

    /// The same sink, but each record waits for folders to have written the event.
    pub fn waiting(self) -> Self {
        Sink { wait: true, ..self }
    }

    /// Records `event` in the background, with the current request id.
    pub fn record_in_background(&self, event: Event) {
        if let Some(send) = self.send(event) {
            tokio::spawn(send);
        }
    }

    fn send(&self, event: Event) -> Option<impl Future<Output = ()> + Send + 'static> {
        let client = self.client.clone()?;
        let request = RecordAuditEventRequest {
            actor_email: bounded(&event.actor_email),
            actor_user_id: bounded(&event.actor_user_id),
            folder_id: bounded(&event.folder_id),
            action: bounded(&event.action),
            status_code: code_name(event.code).to_owned(),
            request_id: bounded(&crate::server::current_request_id().map(|r| r.0).unwrap_or_default()),
            license_id: bounded(&event.license_id),
        };
        Some(async move {
            let action = request.action.clone();
            if let Err(e) = client.clone().record_audit_event(request).await {
                tracing::error!(code = ?e.code(), action, "cannot record an audit event");
            }
        })
    }
}

impl Trail for Sink {
    async fn record(&self, event: Event) {
        match self.send(event) {
            Some(send) if self.wait => send.await,
            Some(send) => {
                tokio::spawn(send);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, Code)>>);

    impl Trail for Recorded {
        async fn record(&self, event: Event) {
            self.0.lock().unwrap().push((event.action, event.code));
        }
    }

    fn event(action: &str) -> Event {
        Event { action: action.into(), ..Default::default() }
    }

    #[tokio::test]
    async fn failures_always_and_successes_of_mutations_only_are_recorded() {
        let trail = Recorded::default();
        assert!(audited(&trail, event("read"), false, Ok::<_, Status>(1)).await.is_ok());
        assert!(audited(&trail, event("write"), true, Ok::<_, Status>(1)).await.is_ok());
        let refused = audited(&trail, event("read"), false, Err::<u8, _>(Status::permission_denied("no"))).await;
        assert_eq!(refused.unwrap_err().code(), Code::PermissionDenied);
        let failed = audited(&trail, event("write"), true, Err::<u8, _>(Status::not_found("gone"))).await;
        assert_eq!(failed.unwrap_err().code(), Code::NotFound);
        assert_eq!(
            *trail.0.lock().unwrap(),
            [("write".into(), Code::Ok), ("read".into(), Code::PermissionDenied), ("write".into(), Code::NotFound)]
        );
    }
}
