//! auth's gRPC surface, one file per proto service (`auth.rs` serves `AuthService`, …): request
//! parsing and the mapping from `Auth` results to replies. The shared helpers live here.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};
use ts_contract::user::CLIENT_ADDR_HEADER;
use ts_contract::user::UserContext;
use ts_proto::public::*;

mod auth;
mod identity;
mod license_admin;
mod license_operator;
mod privacy;
mod privacy_operator;

use ts_contract::audit::{Event, OPERATOR};
use ts_runtime::audit::audited;

use crate::sessions::{Issued, UserView};
use crate::state::{Auth, AuthError};

/// Handlers for every auth service.
#[derive(Debug, Clone)]
pub struct AuthApi {
    auth: Arc<Auth>,
}

impl AuthApi {
    /// Serves `auth`.
    pub fn new(auth: Arc<Auth>) -> Self {
        AuthApi { auth }
    }
}

pub(super) fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub(crate) fn user_message(u: &UserView) -> User {
    User {
        id: u.id.to_string(),
        email: u.email.clone(),
        license_id: ts_contract::ids::license_text(&u.license_id).to_owned(),
        email_verified: u.email_verified,
        sharing_allowed: u.denial.is_none(),
    }
}

pub(super) fn tokens(i: &Issued) -> SessionTokens {
    SessionTokens {
        access_token: i.access_token.clone(),
        access_token_expires_at: Some(timestamp(i.access_expires)),
        refresh_token: i.refresh_token.clone(),
    }
}

pub(super) fn caller<T>(request: &Request<T>) -> Result<UserContext, Status> {
    UserContext::from_metadata(request.metadata())
}

/// The license id of a request, when it is a valid one (refused ids are not recorded).
fn license_of_request(id: &str) -> String {
    crate::licenses::check_license_id(id).map(str::to_owned).unwrap_or_default()
}

/// The client address the gateway saw, for per-address limits (empty when not called
/// through the gateway).
pub(super) fn client_of<T>(request: &Request<T>) -> String {
    request.metadata().get(CLIENT_ADDR_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// Refusals of a sign-in attempt that the caller caused (a wrong code, a forged or stolen
/// token), counted against their address; our own failures are not.
fn caller_failed(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(code, Unauthenticated | InvalidArgument | NotFound | PermissionDenied | FailedPrecondition)
}

impl AuthApi {
    /// Counts a refused sign-in attempt against the client's address.
    pub(super) async fn failed_attempt(&self, client: &str, status: &Status) {
        if caller_failed(status.code()) {
            self.auth.note_sign_in_failure(client).await;
        }
    }

    /// Records a failed action of someone who is not signed in, as the account of `email`
    /// (the address that was tried) when it exists, else under that address alone.
    pub(super) async fn audit_attempt(&self, email: Option<crate::email::Email>, action: &str, status: &Status) {
        let Some(email) = email else { return };
        let user_id = self.auth.user_id_by_email(&email).await.ok().flatten();
        // An erased address stays erased: anyone trying it afterwards is recorded under its
        // pseudonym (if the record cannot be read, under the pseudonym too).
        let pseudonym = self.auth.pseudonym(email.as_str());
        let erased = user_id.is_none() && !matches!(self.auth.store.erasure(&pseudonym).await, Ok(None));
        self.auth.audit.record_in_background(Event {
            actor_email: if erased { pseudonym } else { email.as_str().to_owned() },
            actor_user_id: user_id.map(String::from).unwrap_or_default(),
            action: action.to_owned(),
            code: status.code(),
            ..Default::default()
        });
    }

    /// Records an action of the signed-in `user` concerning `license_id`.
    pub(super) fn audit_user(&self, user: &UserContext, license_id: &str, action: &str, code: tonic::Code) {
        self.auth.audit.record_in_background(Event { code, ..user_event(user, license_id, action) });
    }

    pub(super) async fn sign_in(&self, email: crate::email::Email, via: &str) -> Result<(SessionTokens, User), Status> {
        let user_id = self.auth.verified_user(&email, via).await?;
        let issued = self.auth.open_session(&user_id, email.as_str()).await?;
        // Checked again once the session exists: an erasure that began in between may have
        // revoked this account's sessions before this one was made.
        if self.auth.erasure_running(email.as_str()).await? {
            let user = std::slice::from_ref(&user_id);
            self.auth.revoke_sessions(crate::store::Sessions::OfUsers(user), "account erased").await?;
            return Err(AuthError::Erasing.into());
        }
        let view = self.auth.user_view(&user_id).await?;
        tracing::info!(%user_id, via, "signed in");
        Ok((tokens(&issued), user_message(&view)))
    }
}

/// An event of the signed-in `user` concerning `license_id` (kept only when well-formed).
fn user_event(user: &UserContext, license_id: &str, action: &str) -> Event {
    Event {
        actor_email: user.email.clone(),
        actor_user_id: user.user_id.to_string(),
        license_id: license_of_request(license_id),
        action: action.to_owned(),
        ..Default::default()
    }
}

impl AuthApi {
    /// Audits a license-admin call of `user` and turns its result into the reply.
    pub(super) async fn license_outcome<R>(
        &self,
        user: &UserContext,
        license_id: &str,
        action: &str,
        mutating: bool,
        result: Result<R, AuthError>,
    ) -> Result<Response<R>, Status> {
        let event = user_event(user, license_id, action);
        audited(&self.auth.audit, event, mutating, result.map_err(Status::from)).await.map(Response::new)
    }

    /// Audits an operator call and turns its result into the reply.
    pub(super) async fn operator_outcome<R>(
        &self,
        license_id: &str,
        action: &str,
        mutating: bool,
        result: Result<R, AuthError>,
    ) -> Result<Response<R>, Status> {
        let event = Event {
            actor_email: OPERATOR.to_owned(),
            license_id: license_of_request(license_id),
            action: action.to_owned(),
            ..Default::default()
        };
        audited(&self.auth.audit, event, mutating, result.map_err(Status::from)).await.map(Response::new)
    }
}
