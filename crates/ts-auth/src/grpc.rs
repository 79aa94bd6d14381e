//! auth's gRPC surface: request parsing and the mapping from `Auth` results to replies.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};
use ts_contract::user::CLIENT_ADDR_HEADER;
use ts_contract::user::UserContext;
use ts_proto::internal::identity_service_server::IdentityService;
use ts_proto::internal::license_operator_service_server::LicenseOperatorService;
use ts_proto::internal::*;
use ts_proto::public::auth_service_server::AuthService;
use ts_proto::public::license_admin_service_server::LicenseAdminService;
use ts_proto::public::*;

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

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

fn user_message(u: &UserView) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        license_id: u.license_id.clone(),
        email_verified: u.email_verified,
        sharing_allowed: u.denial.is_none(),
    }
}

fn tokens(i: &Issued) -> SessionTokens {
    SessionTokens {
        access_token: i.access_token.clone(),
        access_token_expires_at: Some(timestamp(i.access_expires)),
        refresh_token: i.refresh_token.clone(),
    }
}

fn caller<T>(request: &Request<T>) -> Result<UserContext, Status> {
    UserContext::from_metadata(request.metadata())
}

/// The license id of a request, when it is a valid one (refused ids are not recorded).
fn license_of_request(id: &str) -> String {
    crate::licenses::check_license_id(id).map(str::to_owned).unwrap_or_default()
}

/// The client address the gateway saw, for per-address limits (empty when not called
/// through the gateway).
fn client_of<T>(request: &Request<T>) -> String {
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
    async fn failed_attempt(&self, client: &str, status: &Status) {
        if caller_failed(status.code()) {
            self.auth.note_sign_in_failure(client).await;
        }
    }

    /// Records a failed action of someone who is not signed in, as the account of `email`
    /// (the address that was tried) when it exists, else under that address alone.
    async fn audit_attempt(&self, email: Option<crate::email::Email>, action: &str, status: &Status) {
        let Some(email) = email else { return };
        let user_id = self.auth.user_id_by_email(&email).await.ok().flatten().unwrap_or_default();
        self.auth.audit.record(ts_contract::audit::Event {
            actor_email: email.as_str().to_owned(),
            actor_user_id: user_id,
            action: action.to_owned(),
            code: status.code(),
            ..Default::default()
        });
    }

    /// Records an action of the signed-in `user` concerning `license_id`.
    fn audit_user(&self, user: &UserContext, license_id: &str, action: &str, code: tonic::Code) {
        self.auth.audit.record(ts_contract::audit::Event {
            actor_email: user.email.clone(),
            actor_user_id: user.user_id.to_string(),
            license_id: license_of_request(license_id),
            action: action.to_owned(),
            code,
            ..Default::default()
        });
    }

    /// Records an operator action concerning `license_id` (empty: the deployment).
    fn audit_operator(&self, license_id: &str, action: &str, code: tonic::Code) {
        self.auth.audit.record(ts_contract::audit::Event {
            actor_email: ts_contract::audit::OPERATOR.to_owned(),
            license_id: license_of_request(license_id),
            action: action.to_owned(),
            code,
            ..Default::default()
        });
    }

    async fn sign_in(&self, email: crate::email::Email, via: &str) -> Result<(SessionTokens, User), Status> {
        let user_id = self.auth.verified_user(&email, via).await?;
        let issued = self.auth.open_session(&user_id, email.as_str()).await?;
        let view = self.auth.user_view(&user_id).await?;
        tracing::info!(user_id, via, "signed in");
        Ok((tokens(&issued), user_message(&view)))
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn start_email_verification(
        &self,
        request: Request<StartEmailVerificationRequest>,
    ) -> Result<Response<StartEmailVerificationResponse>, Status> {
        let client = client_of(&request);
        let raw = &request.get_ref().email;
        match self.auth.start_verification(raw, &client).await {
            Ok(expires) => Ok(Response::new(StartEmailVerificationResponse { expires_at: Some(timestamp(expires)) })),
            Err(e) => {
                let status = Status::from(e);
                let email = crate::email::Email::parse(raw).ok();
                self.audit_attempt(email, "auth.start_email_verification", &status).await;
                Err(status)
            }
        }
    }

    async fn complete_email_verification(
        &self,
        request: Request<CompleteEmailVerificationRequest>,
    ) -> Result<Response<CompleteEmailVerificationResponse>, Status> {
        let client = client_of(&request);
        self.auth.check_sign_in_failures(&client).await?;
        let req = request.into_inner();
        let result = match self.auth.complete_verification(&req.email, &req.code).await {
            Ok(email) => self.sign_in(email, "email").await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok((tokens, user)) => {
                Ok(Response::new(CompleteEmailVerificationResponse { tokens: Some(tokens), user: Some(user) }))
            }
            Err(status) => {
                self.failed_attempt(&client, &status).await;
                let email = crate::email::Email::parse(&req.email).ok();
                self.audit_attempt(email, "auth.complete_email_verification", &status).await;
                Err(status)
            }
        }
    }

    async fn sign_in_with_sso(
        &self,
        request: Request<SignInWithSsoRequest>,
    ) -> Result<Response<SignInWithSsoResponse>, Status> {
        let client = client_of(&request);
        self.auth.check_sign_in_failures(&client).await?;
        let token = &request.get_ref().id_token;
        let result = match self.auth.verify_id_token(token).await {
            Ok(email) => self.sign_in(email, "sso").await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok((tokens, user)) => Ok(Response::new(SignInWithSsoResponse { tokens: Some(tokens), user: Some(user) })),
            Err(status) => {
                self.failed_attempt(&client, &status).await;
                let signed = self.auth.signed_email(token).await;
                self.audit_attempt(signed, "auth.sign_in_with_sso", &status).await;
                Err(status)
            }
        }
    }

    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        let client = client_of(&request);
        self.auth.check_sign_in_failures(&client).await?;
        let token = &request.get_ref().refresh_token;
        match self.auth.refresh(token).await {
            Ok(issued) => Ok(Response::new(RefreshSessionResponse { tokens: Some(tokens(&issued)) })),
            Err(e) => {
                let status = Status::from(e);
                self.failed_attempt(&client, &status).await;
                // Only a token naming a real session has someone to tell.
                if let Some((user_id, email)) = self.auth.session_owner(token).await {
                    self.auth.audit.record(ts_contract::audit::Event {
                        actor_email: email,
                        actor_user_id: user_id,
                        action: "auth.refresh_session".into(),
                        code: status.code(),
                        ..Default::default()
                    });
                }
                Err(status)
            }
        }
    }

    async fn sign_out(&self, request: Request<SignOutRequest>) -> Result<Response<SignOutResponse>, Status> {
        let user = caller(&request)?;
        if let Err(e) = self
            .auth
            .revoke_sessions(bson::doc! { "_id": &user.session_id, "user_id": &user.user_id }, "signed out")
            .await
        {
            let status = Status::from(e);
            self.audit_user(&user, "", "auth.sign_out", status.code());
            return Err(status);
        }
        Ok(Response::new(SignOutResponse {}))
    }

    async fn get_me(&self, request: Request<GetMeRequest>) -> Result<Response<GetMeResponse>, Status> {
        let user = caller(&request)?;
        let view = self.auth.user_view(&user.user_id).await?;
        Ok(Response::new(GetMeResponse { user: Some(user_message(&view)) }))
    }
}

#[tonic::async_trait]
impl LicenseAdminService for AuthApi {
    async fn list_license_emails(
        &self,
        request: Request<ListLicenseEmailsRequest>,
    ) -> Result<Response<ListLicenseEmailsResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = async {
            let l = self.auth.license_as_admin(&user.user_id, &req.license_id).await?;
            let accounts = self.auth.license_accounts(&l, &req.page).await?;
            Ok::<_, AuthError>(ListLicenseEmailsResponse {
                emails: l.emails,
                domains: l.domains,
                admin_emails: l.admin_emails,
                accounts: accounts.emails,
                page: Some(PageResponse { next_page_token: accounts.next }),
            })
        }
        .await;
        self.license_outcome(&user, &req.license_id, "license.list_emails", false, result)
    }

    async fn set_license_sharing_blocked(
        &self,
        request: Request<SetLicenseSharingBlockedRequest>,
    ) -> Result<Response<SetLicenseSharingBlockedResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = self
            .auth
            .set_license_blocked(&user.user_id, &req.license_id, req.blocked)
            .await
            .map(|blocked| SetLicenseSharingBlockedResponse { blocked });
        let action = if req.blocked { "license.block" } else { "license.unblock" };
        self.license_outcome(&user, &req.license_id, action, true, result)
    }

    async fn get_license_sharing_state(
        &self,
        request: Request<GetLicenseSharingStateRequest>,
    ) -> Result<Response<GetLicenseSharingStateResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let result = async {
            let l = self.auth.license_as_admin(&user.user_id, &req.license_id).await?;
            let deployment = self.auth.sharing_enabled("").await?;
            Ok(GetLicenseSharingStateResponse {
                blocked: l.blocked,
                disabled_by_operator: !(deployment && l.sharing_enabled),
            })
        }
        .await;
        self.license_outcome(&user, &req.license_id, "license.get_sharing_state", false, result)
    }

    async fn list_license_audit(
        &self,
        request: Request<ListLicenseAuditRequest>,
    ) -> Result<Response<ListLicenseAuditResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let action = "license.list_audit";
        if let Err(e) = self.auth.license_as_admin(&user.user_id, &req.license_id).await {
            return self.license_outcome(&user, &req.license_id, action, false, Err(e));
        }
        let Some(client) = self.auth.license_audit.clone() else {
            return Err(Status::unavailable("the audit trail is not configured"));
        };
        let reply = client
            .clone()
            .list_license_audit_events(ListLicenseAuditEventsRequest {
                license_id: req.license_id.clone(),
                page: req.page.clone(),
            })
            .await;
        match reply {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Response::new(ListLicenseAuditResponse { events: r.events, page: r.page }))
            }
            Err(status) => {
                self.audit_user(&user, &req.license_id, action, status.code());
                Err(status)
            }
        }
    }
}

impl AuthApi {
    /// Audits a license-admin call (failures always, successes when `mutating`) and turns
    /// its result into the reply.
    fn license_outcome<R>(
        &self,
        user: &UserContext,
        license_id: &str,
        action: &str,
        mutating: bool,
        result: Result<R, AuthError>,
    ) -> Result<Response<R>, Status> {
        match result {
            Ok(r) => {
                if mutating {
                    self.audit_user(user, license_id, action, tonic::Code::Ok);
                }
                Ok(Response::new(r))
            }
            Err(e) => {
                let status = Status::from(e);
                self.audit_user(user, license_id, action, status.code());
                Err(status)
            }
        }
    }
}

fn record(view: UserView) -> UserRecord {
    UserRecord { id: view.id, email: view.email, license_id: view.license_id, email_verified: view.email_verified }
}

#[tonic::async_trait]
impl IdentityService for AuthApi {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = &request.get_ref().user_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("user_id is required"));
        }
        Ok(Response::new(GetUserResponse { user: Some(record(self.auth.user_view(id).await?)) }))
    }

    async fn get_user_by_email(
        &self,
        request: Request<GetUserByEmailRequest>,
    ) -> Result<Response<GetUserByEmailResponse>, Status> {
        let email = crate::email::Email::parse(&request.get_ref().email)
            .map_err(|m| Status::invalid_argument(format!("email {m}")))?;
        let id =
            self.auth.user_id_by_email(&email).await?.ok_or_else(|| Status::not_found("no user with this email"))?;
        Ok(Response::new(GetUserByEmailResponse { user: Some(record(self.auth.user_view(&id).await?)) }))
    }

    async fn check_sharing_allowed(
        &self,
        request: Request<CheckSharingAllowedRequest>,
    ) -> Result<Response<CheckSharingAllowedResponse>, Status> {
        let req = request.get_ref();
        if req.user_id.is_empty() {
            let email =
                crate::email::Email::parse(&req.email).map_err(|m| Status::invalid_argument(format!("email {m}")))?;
            let denial = self.auth.email_denial(email.as_str()).await?;
            return Ok(Response::new(CheckSharingAllowedResponse {
                allowed: denial.is_none(),
                denial: denial.unwrap_or(SharingDenial::Unspecified) as i32,
                email: email.as_str().to_owned(),
            }));
        }
        let id = &req.user_id;
        let reply = match self.auth.user_view(id).await {
            Ok(view) => CheckSharingAllowedResponse {
                allowed: view.denial.is_none(),
                denial: view.denial.unwrap_or(SharingDenial::Unspecified) as i32,
                email: view.email,
            },
            Err(AuthError::NotFound(_)) => CheckSharingAllowedResponse {
                allowed: false,
                denial: SharingDenial::UnknownUser as i32,
                email: String::new(),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(reply))
    }

    async fn get_token_keys(
        &self,
        _request: Request<GetTokenKeysRequest>,
    ) -> Result<Response<GetTokenKeysResponse>, Status> {
        let keys = self
            .auth
            .signer
            .public_keys()
            .into_iter()
            .map(|k| TokenKey { key_id: k.kid, algorithm: "EdDSA".into(), public_key: k.bytes, retire_time: None })
            .collect();
        Ok(Response::new(GetTokenKeysResponse { keys }))
    }

    async fn check_session(
        &self,
        request: Request<CheckSessionRequest>,
    ) -> Result<Response<CheckSessionResponse>, Status> {
        Ok(Response::new(CheckSessionResponse { live: self.auth.session_live(&request.get_ref().session_id).await? }))
    }
}

#[tonic::async_trait]
impl LicenseOperatorService for AuthApi {
    async fn upsert_license(
        &self,
        request: Request<UpsertLicenseRequest>,
    ) -> Result<Response<UpsertLicenseResponse>, Status> {
        let r = request.into_inner();
        let result = self.auth.upsert_license(&r.license_id, &r.admin_emails, &r.emails, &r.domains).await;
        self.operator_outcome(&r.license_id, "operator.upsert_license", true, result.map(|()| UpsertLicenseResponse {}))
    }

    async fn set_sharing_enabled(
        &self,
        request: Request<SetSharingEnabledRequest>,
    ) -> Result<Response<SetSharingEnabledResponse>, Status> {
        let r = request.into_inner();
        let result = self.auth.set_sharing_enabled(&r.license_id, r.enabled).await;
        let action = if r.enabled { "operator.enable_sharing" } else { "operator.disable_sharing" };
        self.operator_outcome(&r.license_id, action, true, result.map(|()| SetSharingEnabledResponse {}))
    }

    async fn get_sharing_enabled(
        &self,
        request: Request<GetSharingEnabledRequest>,
    ) -> Result<Response<GetSharingEnabledResponse>, Status> {
        let id = &request.get_ref().license_id;
        let result = self.auth.sharing_enabled(id).await.map(|enabled| GetSharingEnabledResponse { enabled });
        self.operator_outcome(id, "operator.get_sharing_enabled", false, result)
    }
}

impl AuthApi {
    /// Audits an operator call (failures always, successes when `mutating`).
    fn operator_outcome<R>(
        &self,
        license_id: &str,
        action: &str,
        mutating: bool,
        result: Result<R, AuthError>,
    ) -> Result<Response<R>, Status> {
        match result {
            Ok(r) => {
                if mutating {
                    self.audit_operator(license_id, action, tonic::Code::Ok);
                }
                Ok(Response::new(r))
            }
            Err(e) => {
                let status = Status::from(e);
                self.audit_operator(license_id, action, status.code());
                Err(status)
            }
        }
    }
}
