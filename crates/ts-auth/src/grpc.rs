//! auth's gRPC surface: request parsing and the mapping from `Auth` results to replies.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::{Request, Response, Status};
use ts_common::user::UserContext;
use ts_proto::internal::identity_service_server::IdentityService;
use ts_proto::internal::license_operator_service_server::LicenseOperatorService;
use ts_proto::internal::*;
use ts_proto::public::auth_service_server::AuthService;
use ts_proto::public::license_admin_service_server::LicenseAdminService;
use ts_proto::public::*;

use crate::sessions::{Issued, UserView};
use crate::state::{Auth, AuthError};

/// Metadata key the gateway uses for the client's address (for send rate limits).
pub const CLIENT_ADDR: &str = "x-teamshare-client-addr";

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

impl AuthApi {
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
        let client = request.metadata().get(CLIENT_ADDR).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let expires = self.auth.start_verification(&request.get_ref().email, &client).await?;
        Ok(Response::new(StartEmailVerificationResponse { expires_at: Some(timestamp(expires)) }))
    }

    async fn complete_email_verification(
        &self,
        request: Request<CompleteEmailVerificationRequest>,
    ) -> Result<Response<CompleteEmailVerificationResponse>, Status> {
        let req = request.into_inner();
        let email = self.auth.complete_verification(&req.email, &req.code).await?;
        let (tokens, user) = self.sign_in(email, "email").await?;
        Ok(Response::new(CompleteEmailVerificationResponse { tokens: Some(tokens), user: Some(user) }))
    }

    async fn sign_in_with_sso(
        &self,
        request: Request<SignInWithSsoRequest>,
    ) -> Result<Response<SignInWithSsoResponse>, Status> {
        let email = self.auth.verify_id_token(&request.get_ref().id_token).await?;
        let (tokens, user) = self.sign_in(email, "sso").await?;
        Ok(Response::new(SignInWithSsoResponse { tokens: Some(tokens), user: Some(user) }))
    }

    async fn refresh_session(
        &self,
        request: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        let issued = self.auth.refresh(&request.get_ref().refresh_token).await?;
        Ok(Response::new(RefreshSessionResponse { tokens: Some(tokens(&issued)) }))
    }

    async fn sign_out(&self, request: Request<SignOutRequest>) -> Result<Response<SignOutResponse>, Status> {
        let user = caller(&request)?;
        self.auth
            .revoke_sessions(bson::doc! { "_id": &user.session_id, "user_id": &user.user_id }, "signed out")
            .await?;
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
        let l = self.auth.license_as_admin(&user.user_id, &request.get_ref().license_id).await?;
        Ok(Response::new(ListLicenseEmailsResponse {
            emails: l.emails,
            domains: l.domains,
            admin_emails: l.admin_emails,
        }))
    }

    async fn set_license_sharing_blocked(
        &self,
        request: Request<SetLicenseSharingBlockedRequest>,
    ) -> Result<Response<SetLicenseSharingBlockedResponse>, Status> {
        let user = caller(&request)?;
        let req = request.get_ref();
        let blocked = self.auth.set_license_blocked(&user.user_id, &req.license_id, req.blocked).await?;
        Ok(Response::new(SetLicenseSharingBlockedResponse { blocked }))
    }

    async fn get_license_sharing_state(
        &self,
        request: Request<GetLicenseSharingStateRequest>,
    ) -> Result<Response<GetLicenseSharingStateResponse>, Status> {
        let user = caller(&request)?;
        let l = self.auth.license_as_admin(&user.user_id, &request.get_ref().license_id).await?;
        let deployment = self.auth.sharing_enabled("").await?;
        Ok(Response::new(GetLicenseSharingStateResponse {
            blocked: l.blocked,
            disabled_by_operator: !(deployment && l.sharing_enabled),
        }))
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
        self.auth.upsert_license(&r.license_id, &r.admin_emails, &r.emails, &r.domains).await?;
        Ok(Response::new(UpsertLicenseResponse {}))
    }

    async fn set_sharing_enabled(
        &self,
        request: Request<SetSharingEnabledRequest>,
    ) -> Result<Response<SetSharingEnabledResponse>, Status> {
        let r = request.into_inner();
        self.auth.set_sharing_enabled(&r.license_id, r.enabled).await?;
        Ok(Response::new(SetSharingEnabledResponse {}))
    }

    async fn get_sharing_enabled(
        &self,
        request: Request<GetSharingEnabledRequest>,
    ) -> Result<Response<GetSharingEnabledResponse>, Status> {
        Ok(Response::new(GetSharingEnabledResponse {
            enabled: self.auth.sharing_enabled(&request.get_ref().license_id).await?,
        }))
    }
}
