//! `PrivacyService` (public, through the gateway): the caller's export and the erasure of
//! their account. Both work while sharing is switched off or blocked for the caller.

use futures::StreamExt;
use tonic::{Request, Response, Status};
use ts_proto::public::export_my_data_response::Part;
use ts_proto::public::privacy_service_server::PrivacyService;
use ts_proto::public::*;

use super::*;
use crate::privacy::Requester;

/// Parts buffered between the services that produce them and the caller.
const EXPORT_BUFFER: usize = 32;
/// The most sessions an export lists (newest first).
const EXPORT_SESSIONS: i64 = 1_000;

/// Counts of what an export sent, for its summary.
#[derive(Debug, Default)]
struct Counts {
    memberships: u32,
    invitations: u32,
    items: u32,
    sessions: u32,
    audit_events: u32,
}

impl Counts {
    fn add(&mut self, part: &Option<Part>) {
        match part {
            Some(Part::Membership(_)) => self.memberships += 1,
            Some(Part::Invitation(_)) => self.invitations += 1,
            Some(Part::Item(_)) => self.items += 1,
            Some(Part::Session(_)) => self.sessions += 1,
            Some(Part::AuditEvent(_)) => self.audit_events += 1,
            _ => {}
        }
    }
}

type Parts = tonic::codegen::BoxStream<ExportMyDataResponse>;

/// Ends an export whose part could not be read: the cause is logged, the caller told to retry.
async fn failed(tx: &tokio::sync::mpsc::Sender<Result<ExportMyDataResponse, Status>>, status: Status) {
    tracing::warn!(error = %status.message(), "an export part failed");
    let _ = tx.send(Err(crate::privacy::export_failed())).await;
}

/// An internal stream's message that carries one export part.
trait Carries {
    fn data(self) -> Option<ExportMyDataResponse>;
}

impl Carries for ts_proto::internal::ExportUserDataResponse {
    fn data(self) -> Option<ExportMyDataResponse> {
        self.data
    }
}

impl Carries for ts_proto::internal::ExportUserInvitationsResponse {
    fn data(self) -> Option<ExportMyDataResponse> {
        self.data
    }
}

/// Forwards every part of `parts` to `tx`, counting them; false when the caller went away
/// or the stream failed (the caller is told).
async fn forward<M: Carries>(
    tx: &tokio::sync::mpsc::Sender<Result<ExportMyDataResponse, Status>>,
    mut parts: tonic::Streaming<M>,
    counts: &mut Counts,
) -> bool {
    loop {
        match parts.message().await {
            Ok(Some(message)) => {
                let Some(part) = message.data() else { continue };
                counts.add(&part.part);
                if tx.send(Ok(part)).await.is_err() {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(status) => {
                failed(tx, status).await;
                return false;
            }
        }
    }
}

#[tonic::async_trait]
impl PrivacyService for AuthApi {
    async fn export_my_data(&self, request: Request<ExportMyDataRequest>) -> Result<Response<Parts>, Status> {
        let user = caller(&request)?;
        let account = match self.auth.export_account(&user).await {
            Ok(a) => a,
            Err(e) => {
                let status = Status::from(e);
                self.audit_user(&user, "", "privacy.export", status.code());
                return Err(status);
            }
        };
        let sessions = self.auth.store.sessions_of(&user.user_id, EXPORT_SESSIONS).await.map_err(AuthError::from)?;
        self.audit_user(&user, "", "privacy.export", tonic::Code::Ok);
        let (tx, rx) = tokio::sync::mpsc::channel(EXPORT_BUFFER);
        let auth = self.auth.clone();
        tokio::spawn(async move {
            let mut counts = Counts::default();
            let part = |p: Part| Ok(ExportMyDataResponse { part: Some(p) });
            if tx.send(part(Part::Account(account))).await.is_err() {
                return;
            }
            let (user_id, email) = (user.user_id.to_string(), user.email.clone());
            let folders_part =
                ts_proto::internal::ExportUserDataRequest { user_id: user_id.clone(), email: email.clone() };
            let invitations_part = ts_proto::internal::ExportUserInvitationsRequest { user_id, email };
            // Folders' parts (memberships, items, audit events), then invitations'.
            match auth.privacy.folders().export_user_data(folders_part).await {
                Ok(parts) => {
                    if !forward(&tx, parts.into_inner(), &mut counts).await {
                        return;
                    }
                }
                Err(status) => return failed(&tx, status).await,
            }
            match auth.privacy.invitations().export_user_invitations(invitations_part).await {
                Ok(parts) => {
                    if !forward(&tx, parts.into_inner(), &mut counts).await {
                        return;
                    }
                }
                Err(status) => return failed(&tx, status).await,
            }
            for s in sessions {
                let session = ExportedSession {
                    current: s.id == user.session_id,
                    session_id: s.id.to_string(),
                    create_time: Some(timestamp(s.created_at.to_system_time())),
                    expire_time: Some(timestamp(s.expires_at.to_system_time())),
                    revoked: s.revoked,
                    revoke_time: s.revoked_at.map(|t| timestamp(t.to_system_time())),
                };
                counts.add(&Some(Part::Session(session.clone())));
                if tx.send(part(Part::Session(session))).await.is_err() {
                    return;
                }
            }
            let summary = ExportSummary {
                export_time: Some(timestamp(auth.now())),
                memberships: counts.memberships,
                invitations: counts.invitations,
                items: counts.items,
                sessions: counts.sessions,
                audit_events: counts.audit_events,
            };
            let _ = tx.send(part(Part::Summary(summary))).await;
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).boxed();
        Ok(Response::new(stream))
    }

    async fn delete_my_account(
        &self,
        request: Request<DeleteMyAccountRequest>,
    ) -> Result<Response<DeleteMyAccountResponse>, Status> {
        let user = caller(&request)?;
        let confirm = request.get_ref().confirm_email.clone();
        // Its own task, failures audited there: a caller that hangs up (or a deadline) stops
        // neither the erasure half-way nor the record of how it ended.
        let (api, who) = (self.clone(), user.clone());
        let erased = tokio::spawn(async move {
            let erased = api.auth.delete_account(&who, &confirm).await.map_err(Status::from);
            if let Err(status) = &erased {
                api.audit_user(&who, "", "privacy.delete_account", status.code());
            }
            erased
        })
        .await
        .unwrap_or_else(|e| Err(Status::from(AuthError::Internal(format!("the erasure task failed: {e}")))))?;
        Ok(Response::new(DeleteMyAccountResponse {
            pseudonym: erased.pseudonym,
            deleted_folder_ids: erased.deleted_folder_ids,
            memberships_removed: erased.memberships_removed,
            invitations_removed: erased.invitations_removed,
        }))
    }
}

impl AuthApi {
    /// Used by the operator service too: erasure of `email` on an operator's request.
    pub(super) async fn erase_subject(
        &self,
        email: &str,
        hand_over: bool,
    ) -> Result<crate::privacy::Erased, AuthError> {
        let email = crate::email::Email::parse(email)
            .map_err(|why| AuthError::InvalidArgument(format!("email is not a valid address: {why}")))?;
        // Its own task: a caller that hangs up does not stop an erasure half-way.
        let auth = self.auth.clone();
        tokio::spawn(async move { auth.erase(&email, None, hand_over, Requester::Operator).await })
            .await
            .unwrap_or_else(|e| Err(AuthError::Internal(format!("the erasure task failed: {e}"))))
    }
}
