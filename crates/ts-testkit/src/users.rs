//! Signing test users in through the gateway, the way a client SDK does, reading the
//! verification code from the development mailer.

use std::path::Path;

use anyhow::Context;
use teamshare::Service;
use tonic::Request;
use tonic::transport::Channel;
use ts_contract::identity::Peer;
use ts_mail::FileMailer;
use ts_proto::internal::license_operator_service_client::LicenseOperatorServiceClient;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{CompleteEmailVerificationRequest, StartEmailVerificationRequest};

use crate::TestCluster;

/// A signed-in test user.
#[derive(Clone)]
pub struct Session {
    /// User id.
    pub user_id: String,
    /// Email.
    pub email: String,
    /// Access token.
    pub access: String,
    /// Refresh token.
    pub refresh: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("email", &self.email).finish_non_exhaustive()
    }
}

impl Session {
    /// `message` with this session's bearer token.
    pub fn request<T>(&self, message: T) -> Request<T> {
        bearer(&self.access, message)
    }
}

/// `message` with `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    if let Ok(v) = format!("Bearer {token}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

/// The code in the newest verification email sent to `email` among the development mailer's
/// files in `mail_dir`.
pub fn latest_code(mail_dir: &Path, email: &str) -> Option<String> {
    let message = FileMailer::read(mail_dir, email).pop()?;
    let start = message.body.find("code is ")? + "code is ".len();
    Some(message.body[start..].chars().take_while(char::is_ascii_digit).collect())
}

/// Verifies `email` through the gateway behind `gateway`, reading the code from the
/// development mailer's files in `mail_dir`, and returns the session.
pub async fn sign_in(gateway: Channel, mail_dir: &Path, email: &str) -> anyhow::Result<Session> {
    let mut auth = AuthServiceClient::new(gateway);
    auth.start_email_verification(StartEmailVerificationRequest { email: email.into() }).await?;
    let code = latest_code(mail_dir, email).context("no verification email")?;
    let reply = auth
        .complete_email_verification(CompleteEmailVerificationRequest { email: email.into(), code })
        .await?
        .into_inner();
    let tokens = reply.tokens.context("no tokens")?;
    let user = reply.user.context("no user")?;
    Ok(Session { user_id: user.id, email: user.email, access: tokens.access_token, refresh: tokens.refresh_token })
}

impl TestCluster {
    /// The code in the newest verification email sent to `email`.
    pub fn latest_code(&self, email: &str) -> Option<String> {
        latest_code(&self.mail_dir, email)
    }

    /// Verifies `email` through the gateway and returns the session.
    pub async fn sign_in(&self, email: &str) -> anyhow::Result<Session> {
        sign_in(self.gateway().await?, &self.mail_dir, email).await
    }

    /// Makes (or replaces) license `license_id`: `admin` administers it, every account at
    /// `domain` belongs to it.
    pub async fn upsert_license(&self, license_id: &str, admin: &str, domain: &str) -> anyhow::Result<()> {
        let request = ts_proto::internal::UpsertLicenseRequest {
            license_id: license_id.into(),
            admin_emails: vec![admin.into()],
            emails: vec![],
            domains: vec![domain.into()],
        };
        self.license_operator().await?.upsert_license(request).await?;
        Ok(())
    }

    /// The operator's client for licenses and the Team Sharing switch.
    pub async fn license_operator(&self) -> anyhow::Result<LicenseOperatorServiceClient<Channel>> {
        Ok(LicenseOperatorServiceClient::new(self.internal(Service::Auth, Peer::Operator).await?))
    }
}

impl TestCluster {
    /// Adds `user` to a folder at `access`, as invitations does on accept (internal RPC).
    pub async fn add_member(
        &self,
        folder_id: &str,
        user: &Session,
        access: ts_proto::public::AccessLevel,
    ) -> anyhow::Result<()> {
        use ts_proto::internal::AddMemberRequest;
        use ts_proto::internal::folder_membership_service_client::FolderMembershipServiceClient;
        let mut client = FolderMembershipServiceClient::new(self.internal(Service::Folders, Peer::Invitations).await?);
        client
            .add_member(AddMemberRequest {
                folder_id: folder_id.into(),
                user_id: user.user_id.clone(),
                email: user.email.clone(),
                access: access as i32,
                // A direct add, as if by an invitation nobody else knows about.
                invitation_id: uuid::Uuid::new_v4().to_string(),
                inviter_user_id: String::new(),
                inviter_manage_epoch: String::new(),
            })
            .await?;
        Ok(())
    }
}
