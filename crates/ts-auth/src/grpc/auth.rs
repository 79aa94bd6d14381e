//! `AuthService` (public, through the gateway): sign-in by email code or SSO, sessions, the caller's account.

use tonic::{Request, Response, Status};
use ts_proto::public::auth_service_server::AuthService;
use ts_proto::public::*;

use super::*;

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
                    self.auth.audit.record_in_background(ts_contract::audit::Event {
                        actor_email: email,
                        actor_user_id: user_id.into(),
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
            .revoke_sessions(
                crate::store::Sessions::OfUser { id: &user.session_id, user_id: &user.user_id },
                "signed out",
            )
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
