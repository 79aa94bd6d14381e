//! `IdentityService` (internal): who a user is and whether they may share right now, for folders, invitations and the gateway.

use tonic::{Request, Response, Status};
use ts_proto::internal::identity_service_server::IdentityService;
use ts_proto::internal::*;

use super::*;

fn record(view: UserView) -> UserRecord {
    UserRecord {
        id: view.id.into(),
        email: view.email,
        license_id: view.license_id.map(String::from).unwrap_or_default(),
        email_verified: view.email_verified,
    }
}

#[tonic::async_trait]
impl IdentityService for AuthApi {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<GetUserResponse>, Status> {
        let id = &request.get_ref().user_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("user_id is required"));
        }
        Ok(Response::new(GetUserResponse { user: Some(record(self.auth.user_view_by_text(id).await?)) }))
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
        let reply = match self.auth.user_view_by_text(id).await {
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
