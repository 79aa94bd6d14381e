//! [`Client`]: one connection to the gateway, the session, and every RPC of the public API
//! with the chores done (token, refresh, errors, retries, paging, request ids).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::metadata::MetadataValue;

use crate::connection::{ConnectionInput, SharedConnection, connection_uri, strip_secrets, target_fingerprint};
use crate::credentials::{CredentialStore, LocalCredentials};
use crate::proto::audit_service_client::AuditServiceClient;
use crate::proto::auth_service_client::AuthServiceClient;
use crate::proto::folder_service_client::FolderServiceClient;
use crate::proto::invitation_service_client::InvitationServiceClient;
use crate::proto::item_service_client::ItemServiceClient;
use crate::proto::license_admin_service_client::LicenseAdminServiceClient;
use crate::proto::member_service_client::MemberServiceClient;
use crate::proto::privacy_service_client::PrivacyServiceClient;
use crate::proto::{self, AccessLevel, ErrorReason, item_content};
use crate::retry::{RetryPolicy, Safety};
use crate::session::{SessionStore, Tokens};
use crate::{ApiError, Error, ExportDocument, ExportPart};

/// The HTTP/2 service calls go through: a tonic channel, or one wrapped in tower layers
/// (tracing, capture in tests).
pub type Transport = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    TransportError,
>;

/// Why the transport could not carry a call (connection refused, TLS, a layer's refusal).
#[derive(Debug)]
pub struct TransportError(pub Box<dyn std::error::Error + Send + Sync>);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// How to reach the gateway and how patient to be.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The gateway, such as `https://teamshare.example.com:8443`.
    pub endpoint: String,
    /// A CA bundle (PEM) to trust instead of the system's roots (for `make dev`: `.dev/certs/ca.pem`).
    pub ca_pem: Option<Vec<u8>>,
    /// The name the gateway's certificate must carry, when it differs from the endpoint's host.
    pub tls_domain: Option<String>,
    /// Deadline of each attempt.
    pub timeout: Duration,
    /// Retries of safe calls.
    pub retry: RetryPolicy,
    /// Refresh the access token when it expires within this.
    pub refresh_margin: Duration,
}

impl ClientConfig {
    /// Defaults for `endpoint`: system roots, 30 s per attempt, refresh a minute early.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            ca_pem: None,
            tls_domain: None,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            refresh_margin: Duration::from_secs(60),
        }
    }
}

#[derive(Clone)]
struct Inner {
    transport: Transport,
    config: ClientConfig,
    /// The live tokens; held across a refresh, so that one refresh runs at a time and the
    /// calls waiting behind it use its result.
    tokens: Arc<tokio::sync::Mutex<Option<Tokens>>>,
    sessions: Arc<dyn SessionStore>,
    credentials: Option<Arc<dyn CredentialStore>>,
}

/// A client of the public API. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.inner.config.endpoint).finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the gateway in `config` over TLS, resuming the session kept in `sessions`
    /// if there is one. Connects on the first call.
    pub fn connect(config: ClientConfig, sessions: Arc<dyn SessionStore>) -> Result<Client, Error> {
        let channel = channel(&config)?;
        let transport = Transport::new(tower::ServiceExt::map_err(channel, |e| TransportError(Box::new(e))));
        Ok(Client::with_transport(transport, config, sessions))
    }

    /// A client that sends through `transport` (a channel wrapped in layers of your own).
    pub fn with_transport(transport: Transport, config: ClientConfig, sessions: Arc<dyn SessionStore>) -> Client {
        Client {
            inner: Arc::new(Inner {
                transport,
                config,
                tokens: Arc::new(tokio::sync::Mutex::new(None)),
                sessions,
                credentials: None,
            }),
        }
    }

    /// This client with `store` holding the user's own connection credentials (the same
    /// session: one refresh at a time across both).
    pub fn with_credentials(self, store: Arc<dyn CredentialStore>) -> Client {
        let mut inner = (*self.inner).clone();
        inner.credentials = Some(store);
        Client { inner: Arc::new(inner) }
    }

    /// Every RPC of the public API, with token, refresh, retries and errors handled.
    pub fn api(&self) -> Api {
        Api { client: self.clone() }
    }

    // ---- sign-in -------------------------------------------------------------------------

    /// Emails a sign-in code to `email`; when it expires.
    pub async fn start_email_sign_in(&self, email: &str) -> Result<SystemTime, Error> {
        let request = proto::StartEmailVerificationRequest { email: email.to_owned() };
        let r = self
            .call(Safety::Once, false, request, |t, r| async move {
                AuthServiceClient::new(t).start_email_verification(r).await
            })
            .await?;
        Ok(r.expires_at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now))
    }

    /// Signs in with the code emailed to `email`; the signed-in user.
    pub async fn complete_email_sign_in(&self, email: &str, code: &str) -> Result<proto::User, Error> {
        let request = proto::CompleteEmailVerificationRequest { email: email.to_owned(), code: code.to_owned() };
        let r = self
            .call(Safety::Once, false, request, |t, r| async move {
                AuthServiceClient::new(t).complete_email_verification(r).await
            })
            .await?;
        self.signed_in(r.tokens, r.user).await
    }

    /// Signs in with an id token from the deployment's SSO issuer; the signed-in user.
    pub async fn sign_in_with_sso(&self, id_token: &str) -> Result<proto::User, Error> {
        let request = proto::SignInWithSsoRequest { id_token: id_token.to_owned() };
        let r =
            self.call(Safety::Once, false, request, |t, r| async move {
                AuthServiceClient::new(t).sign_in_with_sso(r).await
            })
            .await?;
        self.signed_in(r.tokens, r.user).await
    }

    async fn signed_in(
        &self,
        tokens: Option<proto::SessionTokens>,
        user: Option<proto::User>,
    ) -> Result<proto::User, Error> {
        let user = user.ok_or(Error::Incomplete("user"))?;
        let tokens = live_tokens(tokens.ok_or(Error::Incomplete("tokens"))?, &user.email, &user.id);
        let stored = tokens.stored(&self.inner.config.endpoint);
        *self.inner.tokens.lock().await = Some(tokens);
        self.inner.sessions.save(&stored)?;
        Ok(user)
    }

    /// Whether a session is live or kept.
    pub async fn is_signed_in(&self) -> Result<bool, Error> {
        Ok(self.inner.tokens.lock().await.is_some() || self.inner.sessions.load()?.is_some())
    }

    /// Ends the session on the server and forgets it here (also when the server already
    /// ended it).
    pub async fn sign_out(&self) -> Result<(), Error> {
        let ended = self
            .call(Safety::Once, true, proto::SignOutRequest {}, |t, r| async move {
                AuthServiceClient::new(t).sign_out(r).await
            })
            .await;
        *self.inner.tokens.lock().await = None;
        self.inner.sessions.clear()?;
        match ended {
            Ok(_) | Err(Error::NotSignedIn) => Ok(()),
            Err(e) if e.api().is_some_and(|a| a.code == tonic::Code::Unauthenticated) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The signed-in user.
    pub async fn me(&self) -> Result<proto::User, Error> {
        let r = self.api().get_me(proto::GetMeRequest {}).await?;
        r.user.ok_or(Error::Incomplete("user"))
    }

    // ---- folders, members ------------------------------------------------------------------

    /// Creates a folder (retried safely: one folder whatever happens to the answers).
    pub async fn create_folder(&self, name: &str) -> Result<proto::Folder, Error> {
        let request = proto::CreateFolderRequest { name: name.to_owned(), request_id: request_id() };
        self.api().create_folder(request).await?.folder.ok_or(Error::Incomplete("folder"))
    }

    /// Every folder the user is a member of.
    pub fn folders(&self) -> impl Stream<Item = Result<proto::Folder, Error>> + Send + 'static {
        self.pages(|c, page| async move {
            let r = c.api().list_folders(proto::ListFoldersRequest { page }).await?;
            Ok((r.folders, r.page))
        })
    }

    /// One folder.
    pub async fn folder(&self, folder_id: &str) -> Result<proto::Folder, Error> {
        let r = self.api().get_folder(proto::GetFolderRequest { folder_id: folder_id.to_owned() }).await?;
        r.folder.ok_or(Error::Incomplete("folder"))
    }

    /// Every member of a folder.
    pub fn members(&self, folder_id: &str) -> impl Stream<Item = Result<proto::Member, Error>> + Send + 'static {
        self.folder_pages(folder_id, |c, folder_id, page| async move {
            let r = c.api().list_members(proto::ListMembersRequest { folder_id, page }).await?;
            Ok((r.members, r.page))
        })
    }

    /// Sets a member's access level.
    pub async fn set_member_access(
        &self,
        folder_id: &str,
        user_id: &str,
        access: AccessLevel,
    ) -> Result<proto::Member, Error> {
        let request = proto::UpdateMemberAccessRequest {
            folder_id: folder_id.to_owned(),
            user_id: user_id.to_owned(),
            access: access as i32,
        };
        self.api().update_member_access(request).await?.member.ok_or(Error::Incomplete("member"))
    }

    /// Removes a member from a folder.
    pub async fn remove_member(&self, folder_id: &str, user_id: &str) -> Result<(), Error> {
        let request = proto::RemoveMemberRequest { folder_id: folder_id.to_owned(), user_id: user_id.to_owned() };
        self.api().remove_member(request).await.map(drop)
    }

    // ---- items -------------------------------------------------------------------------------

    /// Every item of a folder (names and versions, without content).
    pub fn items(&self, folder_id: &str) -> impl Stream<Item = Result<proto::ItemSummary, Error>> + Send + 'static {
        self.folder_pages(folder_id, |c, folder_id, page| async move {
            let r = c.api().list_items(proto::ListItemsRequest { folder_id, page }).await?;
            Ok((r.items, r.page))
        })
    }

    /// One item with its content.
    pub async fn item(&self, folder_id: &str, item_id: &str) -> Result<proto::Item, Error> {
        let request = proto::GetItemRequest { folder_id: folder_id.to_owned(), item_id: item_id.to_owned() };
        self.api().get_item(request).await?.item.ok_or(Error::Incomplete("item"))
    }

    /// Creates an item (retried safely). A connection's secrets are refused here, before
    /// anything is sent: share connections with [`Client::share_connection`].
    pub async fn create_item(
        &self,
        folder_id: &str,
        name: &str,
        description: &str,
        content: item_content::Content,
    ) -> Result<proto::CreateItemResponse, Error> {
        if let item_content::Content::Connection(c) = &content
            && !strip_secrets(c)?.1.is_empty()
        {
            return Err(Error::InvalidInput {
                field: "content",
                message: "holds a connection secret; share connections with share_connection".into(),
            });
        }
        let request = proto::CreateItemRequest {
            folder_id: folder_id.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            content: Some(proto::ItemContent { content: Some(content) }),
            request_id: request_id(),
        };
        self.api().create_item(request).await
    }

    /// Shares a connection: every secret is taken out of it before it leaves this machine
    /// and kept, with `input.credentials`, in the local credential store under the new item.
    pub async fn share_connection(
        &self,
        folder_id: &str,
        name: &str,
        description: &str,
        input: ConnectionInput,
    ) -> Result<SharedConnection, Error> {
        let store = self.credential_store()?;
        let (shared, found) = strip_secrets(&input.connection)?;
        let mut mine = found.merged(&input.credentials);
        mine.bound_to = Some(target_fingerprint(&shared));
        let request = proto::CreateItemRequest {
            folder_id: folder_id.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            content: Some(proto::ItemContent { content: Some(item_content::Content::Connection(shared)) }),
            request_id: request_id(),
        };
        let created = self.api().create_item(request).await?;
        let item = created.item.ok_or(Error::Incomplete("item"))?;
        let item_id = item.summary.as_ref().map(|s| s.id.clone()).ok_or(Error::Incomplete("item id"))?;
        if !mine.is_empty() {
            store.set(&item_id, &mine)?;
        }
        Ok(SharedConnection { item, kept_locally: mine.set_fields() })
    }

    /// A ready-to-use MongoDB URI for a shared connection, with this user's own credentials
    /// (from the local store) merged in.
    pub async fn connection_uri(&self, folder_id: &str, item_id: &str) -> Result<String, Error> {
        let item = self.item(folder_id, item_id).await?;
        let Some(item_content::Content::Connection(c)) = item.content.and_then(|c| c.content) else {
            return Err(Error::InvalidInput { field: "item_id", message: "is not a connection".into() });
        };
        let store = self.credential_store()?;
        let Some(mut mine) = store.get(item_id)? else { return connection_uri(&c, None) };
        let target = target_fingerprint(&c);
        match &mine.bound_to {
            Some(bound) if *bound != target => {
                return Err(Error::InvalidInput {
                    field: "item_id",
                    message: "the shared connection now points elsewhere (hosts, options, mechanism or TLS changed since your credentials were kept), so they are not used; check it, then keep your credentials for it again".into(),
                });
            }
            Some(_) => {}
            // Kept without a connection at hand: bound to the first one they are used with.
            None => {
                mine.bound_to = Some(target);
                store.set(item_id, &mine)?;
            }
        }
        connection_uri(&c, Some(&mine))
    }

    /// Keeps this user's own credentials for a shared connection (merged over what is kept).
    /// They are bound anew to the connection as it is at their next use.
    pub fn set_credentials(&self, item_id: &str, credentials: &LocalCredentials) -> Result<(), Error> {
        let store = self.credential_store()?;
        let mut merged = store.get(item_id)?.unwrap_or_default().merged(credentials);
        merged.bound_to = None;
        store.set(item_id, &merged)
    }

    /// The credentials kept for a shared connection.
    pub fn credentials(&self, item_id: &str) -> Result<Option<LocalCredentials>, Error> {
        self.credential_store()?.get(item_id)
    }

    /// Forgets the credentials kept for a shared connection.
    pub fn forget_credentials(&self, item_id: &str) -> Result<(), Error> {
        self.credential_store()?.forget(item_id)
    }

    fn credential_store(&self) -> Result<&Arc<dyn CredentialStore>, Error> {
        self.inner
            .credentials
            .as_ref()
            .ok_or_else(|| Error::Store("no credential store: use Client::with_credentials".into()))
    }

    // ---- invitations -------------------------------------------------------------------------

    /// Invites `email` to a folder (retried safely: one invitation, one email).
    pub async fn invite(&self, folder_id: &str, email: &str, access: AccessLevel) -> Result<proto::Invitation, Error> {
        let request = proto::CreateInvitationRequest {
            folder_id: folder_id.to_owned(),
            invitee_email: email.to_owned(),
            access: access as i32,
            request_id: request_id(),
        };
        self.api().create_invitation(request).await?.invitation.ok_or(Error::Incomplete("invitation"))
    }

    /// The pending invitations sent to the user.
    pub fn my_invitations(&self) -> impl Stream<Item = Result<proto::Invitation, Error>> + Send + 'static {
        self.pages(|c, page| async move {
            let r = c.api().list_my_invitations(proto::ListMyInvitationsRequest { page }).await?;
            Ok((r.invitations, r.page))
        })
    }

    /// The pending invitations of a folder (MANAGE only).
    pub fn folder_invitations(
        &self,
        folder_id: &str,
    ) -> impl Stream<Item = Result<proto::Invitation, Error>> + Send + 'static {
        self.folder_pages(folder_id, |c, folder_id, page| async move {
            let r = c.api().list_folder_invitations(proto::ListFolderInvitationsRequest { folder_id, page }).await?;
            Ok((r.invitations, r.page))
        })
    }

    /// A folder's audit trail, newest first (MANAGE only).
    pub fn folder_audit(
        &self,
        folder_id: &str,
    ) -> impl Stream<Item = Result<proto::AuditEvent, Error>> + Send + 'static {
        self.folder_pages(folder_id, |c, folder_id, page| async move {
            let r = c.api().list_folder_audit(proto::ListFolderAuditRequest { folder_id, page }).await?;
            Ok((r.events, r.page))
        })
    }

    /// Accepts an invitation; the folder joined.
    pub async fn accept_invitation(&self, invitation_id: &str) -> Result<proto::AcceptInvitationResponse, Error> {
        self.api().accept_invitation(proto::AcceptInvitationRequest { invitation_id: invitation_id.to_owned() }).await
    }

    // ---- privacy (GDPR) ------------------------------------------------------------------

    /// Everything the service holds about the user (the rights of access and portability),
    /// part by part as it streams: the account first, then memberships, invitations sent and
    /// received, the items they shared or last edited, their sessions, the audit events where
    /// they are the actor, and the summary last. Opening the stream is retried like a read; a
    /// stream broken part-way ends with its error (export again: it is read-only).
    pub fn export_my_data(&self) -> impl Stream<Item = Result<ExportPart, Error>> + Send + 'static {
        let api = self.api();
        futures::stream::once(async move { api.export_my_data(proto::ExportMyDataRequest {}).await })
            .try_flatten()
            .map(|message| message.and_then(|m| m.part.ok_or(Error::Incomplete("an export part"))))
            .boxed()
    }

    /// Exports everything held about the user into one JSON document at `path`
    /// ([`ExportDocument`]: the account, an array per part, the summary), readable by its
    /// owner only and written whole or not at all; the summary.
    pub async fn export_my_data_to(&self, path: impl AsRef<Path>) -> Result<proto::ExportSummary, Error> {
        let mut document = ExportDocument::new();
        let mut parts = std::pin::pin!(self.export_my_data());
        while let Some(part) = parts.next().await {
            document.push(&part?);
        }
        document.write(path.as_ref())?;
        Ok(*document.check_complete()?)
    }

    /// Erases the user's account (the right to erasure): every session ends, the account,
    /// memberships and invitations go, the email is replaced by a pseudonym where it remains,
    /// and folders where the user was the only member are deleted with their keys.
    /// `confirm_email` is the user's email typed again. Safe to retry (the service completes
    /// an erasure interrupted part-way). Refused with `LAST_MANAGER` while the user is the
    /// last manager of folders that have other members (the error names them). On success
    /// the session kept here is forgotten; credentials kept in a [`CredentialStore`] are the
    /// user's own and stay until forgotten.
    pub async fn delete_my_account(&self, confirm_email: &str) -> Result<proto::DeleteMyAccountResponse, Error> {
        let request = proto::DeleteMyAccountRequest { confirm_email: confirm_email.to_owned() };
        let erased = self.api().delete_my_account(request).await?;
        *self.inner.tokens.lock().await = None;
        self.inner.sessions.clear()?;
        Ok(erased)
    }

    // ---- plumbing ----------------------------------------------------------------------------

    /// A listing of one folder as a stream of its entries.
    fn folder_pages<T, F, Fut>(
        &self,
        folder_id: &str,
        fetch: F,
    ) -> impl Stream<Item = Result<T, Error>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(Client, String, Option<proto::PageRequest>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(Vec<T>, Option<proto::PageResponse>), Error>> + Send + 'static,
    {
        let folder_id = folder_id.to_owned();
        self.pages(move |c, page| fetch(c, folder_id.clone(), page))
    }

    /// A listing as a stream of its entries, fetching page after page as it is read.
    fn pages<T, F, Fut>(&self, fetch: F) -> impl Stream<Item = Result<T, Error>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(Client, Option<proto::PageRequest>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(Vec<T>, Option<proto::PageResponse>), Error>> + Send + 'static,
    {
        let client = self.clone();
        futures::stream::try_unfold(Some(String::new()), move |next| {
            let (client, fetch) = (client.clone(), fetch.clone());
            async move {
                let Some(page_token) = next else { return Ok::<_, Error>(None) };
                let (entries, page) = fetch(client, Some(proto::PageRequest { page_size: 0, page_token })).await?;
                let next = page.map(|p| p.next_page_token).filter(|t| !t.is_empty());
                Ok(Some((futures::stream::iter(entries.into_iter().map(Ok)), next)))
            }
        })
        .try_flatten()
        .boxed()
    }

    /// The `authorization` value for a call: the access token, refreshed first when it is
    /// about to expire (or was refused as expired: `stale`).
    async fn bearer(&self, stale: Option<&str>) -> Result<MetadataValue<tonic::metadata::Ascii>, Error> {
        let mut tokens = self.inner.tokens.lock().await;
        let endpoint = &self.inner.config.endpoint;
        let refresh_token = match tokens.as_ref() {
            Some(t) if !t.expiring(self.inner.config.refresh_margin) && stale != Some(t.access_token.as_str()) => None,
            Some(t) => {
                // Another client of the same store (another process) may have rotated the
                // token since: its newer one is the one to use.
                let kept = self.inner.sessions.load()?.filter(|k| &k.endpoint == endpoint && k.user_id == t.user_id);
                let current = kept.map_or_else(|| t.refresh_token.clone(), |k| k.refresh_token.clone());
                Some((current, t.email.clone(), t.user_id.clone()))
            }
            None => {
                let kept = self.inner.sessions.load()?.ok_or(Error::NotSignedIn)?;
                // A session is only ever sent to the gateway that opened it.
                if &kept.endpoint != endpoint {
                    return Err(Error::NotSignedIn);
                }
                Some((kept.refresh_token.clone(), kept.email.clone(), kept.user_id.clone()))
            }
        };
        if let Some((refresh_token, email, user_id)) = refresh_token {
            let request = proto::RefreshSessionRequest { refresh_token };
            // A refresh whose answer is lost may be sent again: the server returns the same
            // new token for a few seconds.
            let refreshed = self
                .call(Safety::Idempotent, false, request, |t, r| async move {
                    AuthServiceClient::new(t).refresh_session(r).await
                })
                .await;
            match refreshed {
                Ok(r) => {
                    let fresh = live_tokens(r.tokens.ok_or(Error::Incomplete("tokens"))?, &email, &user_id);
                    let stored = fresh.stored(endpoint);
                    // In memory first: a store that fails to save must not lose the new token.
                    *tokens = Some(fresh);
                    self.inner.sessions.save(&stored)?;
                }
                Err(e) if e.is(ErrorReason::RefreshTokenInvalid) || e.is(ErrorReason::RefreshTokenReused) => {
                    *tokens = None;
                    self.inner.sessions.clear()?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            }
        }
        let access = tokens.as_ref().map(|t| t.access_token.as_str()).ok_or(Error::NotSignedIn)?;
        MetadataValue::try_from(format!("Bearer {access}")).map_err(|_| Error::Incomplete("a well-formed access token"))
    }

    /// One RPC: the token attached (when `authed`), an UNAVAILABLE answer retried when the
    /// call is safe to repeat, an expired token refreshed and the call sent once more.
    async fn call<Q, R, F, Fut>(&self, safety: Safety, authed: bool, request: Q, rpc: F) -> Result<R, Error>
    where
        Q: Clone,
        F: Fn(Transport, tonic::Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let policy = self.inner.config.retry;
        let mut attempt = 0;
        let mut stale: Option<String> = None;
        loop {
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(self.inner.config.timeout);
            let sent_token = if authed {
                let bearer = Box::pin(self.bearer(stale.as_deref())).await?;
                let token = bearer.to_str().unwrap_or_default().trim_start_matches("Bearer ").to_owned();
                req.metadata_mut().insert("authorization", bearer);
                Some(token)
            } else {
                None
            };
            let error = match rpc(self.inner.transport.clone(), req).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => ApiError::from(status),
            };
            if authed && stale.is_none() && error.is(ErrorReason::AccessTokenExpired) {
                stale = sent_token;
                continue;
            }
            attempt += 1;
            let retryable = matches!(error.code, tonic::Code::Unavailable) && safety == Safety::Idempotent;
            if !retryable || attempt >= policy.max_attempts {
                return Err(Error::Api(error));
            }
            tokio::time::sleep(policy.wait(attempt - 1, error.retry_after)).await;
        }
    }
}

fn live_tokens(t: proto::SessionTokens, email: &str, user_id: &str) -> Tokens {
    let expires = t.access_token_expires_at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now);
    Tokens {
        access_token: t.access_token.clone(),
        access_expires: expires,
        refresh_token: t.refresh_token.clone(),
        email: email.to_owned(),
        user_id: user_id.to_owned(),
    }
}

/// A fresh AIP-155 request id: a retry of the same create reuses it.
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn channel(config: &ClientConfig) -> Result<tonic::transport::Channel, Error> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let connect = |e: tonic::transport::Error| Error::Connect(e.to_string());
    let mut tls = ClientTlsConfig::new();
    tls = match &config.ca_pem {
        Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
        None => tls.with_native_roots(),
    };
    if let Some(domain) = &config.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    let endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(connect)?
        .tls_config(tls)
        .map_err(connect)?
        .connect_timeout(Duration::from_secs(10))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Every RPC of the public API as it is, through the client's session, retries and errors
/// (`Client::api()`). Creates sent here carry whatever `request_id` the caller set.
#[derive(Debug, Clone)]
pub struct Api {
    client: Client,
}

impl Api {
    /// PrivacyService.ExportMyData: the stream of export messages. Opening it is retried on
    /// UNAVAILABLE like a read; a stream broken part-way ends with its error.
    pub async fn export_my_data(
        &self,
        request: proto::ExportMyDataRequest,
    ) -> Result<BoxStream<'static, Result<proto::ExportMyDataResponse, Error>>, Error> {
        let stream = self
            .client
            .call(Safety::Idempotent, true, request, |t, r| async move {
                PrivacyServiceClient::new(t).export_my_data(r).await
            })
            .await?;
        Ok(stream.map_err(Error::from).boxed())
    }
}

/// A call's retry safety: creates are safe to repeat only with a request id.
macro_rules! safety {
    (ByRequestId, $request:expr) => {
        if $request.request_id.is_empty() { Safety::Once } else { Safety::Idempotent }
    };
    ($safety:ident, $request:expr) => {
        Safety::$safety
    };
}

macro_rules! rpcs {
    ($($(#[$doc:meta])* $name:ident: $svc:ident($req:ident) -> $resp:ident, $safety:ident;)*) => {
        impl Api {
            $(
                $(#[$doc])*
                pub async fn $name(&self, request: proto::$req) -> Result<proto::$resp, Error> {
                    let safety = safety!($safety, &request);
                    self.client.call(safety, true, request, |t, r| async move { $svc::new(t).$name(r).await }).await
                }
            )*
        }
    };
}

rpcs! {
    /// AuthService.GetMe.
    get_me: AuthServiceClient(GetMeRequest) -> GetMeResponse, Idempotent;
    /// FolderService.CreateFolder (retried on UNAVAILABLE only when `request_id` is set).
    create_folder: FolderServiceClient(CreateFolderRequest) -> CreateFolderResponse, ByRequestId;
    /// FolderService.ListFolders.
    list_folders: FolderServiceClient(ListFoldersRequest) -> ListFoldersResponse, Idempotent;
    /// FolderService.GetFolder.
    get_folder: FolderServiceClient(GetFolderRequest) -> GetFolderResponse, Idempotent;
    /// FolderService.RenameFolder.
    rename_folder: FolderServiceClient(RenameFolderRequest) -> RenameFolderResponse, Idempotent;
    /// FolderService.DeleteFolder.
    delete_folder: FolderServiceClient(DeleteFolderRequest) -> DeleteFolderResponse, Once;
    /// FolderService.LeaveFolder.
    leave_folder: FolderServiceClient(LeaveFolderRequest) -> LeaveFolderResponse, Once;
    /// MemberService.ListMembers.
    list_members: MemberServiceClient(ListMembersRequest) -> ListMembersResponse, Idempotent;
    /// MemberService.UpdateMemberAccess.
    update_member_access: MemberServiceClient(UpdateMemberAccessRequest) -> UpdateMemberAccessResponse, Idempotent;
    /// MemberService.RemoveMember.
    remove_member: MemberServiceClient(RemoveMemberRequest) -> RemoveMemberResponse, Once;
    /// ItemService.CreateItem (retried on UNAVAILABLE only when `request_id` is set).
    create_item: ItemServiceClient(CreateItemRequest) -> CreateItemResponse, ByRequestId;
    /// ItemService.GetItem.
    get_item: ItemServiceClient(GetItemRequest) -> GetItemResponse, Idempotent;
    /// ItemService.ListItems.
    list_items: ItemServiceClient(ListItemsRequest) -> ListItemsResponse, Idempotent;
    /// ItemService.UpdateItem (guarded by `expected_version`: a retry of an applied update is
    /// ABORTED, never applied twice).
    update_item: ItemServiceClient(UpdateItemRequest) -> UpdateItemResponse, Idempotent;
    /// ItemService.DeleteItem.
    delete_item: ItemServiceClient(DeleteItemRequest) -> DeleteItemResponse, Once;
    /// ItemService.MoveItem.
    move_item: ItemServiceClient(MoveItemRequest) -> MoveItemResponse, Once;
    /// InvitationService.CreateInvitation (retried on UNAVAILABLE only when `request_id` is set).
    create_invitation: InvitationServiceClient(CreateInvitationRequest) -> CreateInvitationResponse, ByRequestId;
    /// InvitationService.ListMyInvitations.
    list_my_invitations: InvitationServiceClient(ListMyInvitationsRequest) -> ListMyInvitationsResponse, Idempotent;
    /// InvitationService.ListFolderInvitations.
    list_folder_invitations: InvitationServiceClient(ListFolderInvitationsRequest) -> ListFolderInvitationsResponse, Idempotent;
    /// InvitationService.AcceptInvitation (idempotent on the server).
    accept_invitation: InvitationServiceClient(AcceptInvitationRequest) -> AcceptInvitationResponse, Idempotent;
    /// InvitationService.DeclineInvitation.
    decline_invitation: InvitationServiceClient(DeclineInvitationRequest) -> DeclineInvitationResponse, Once;
    /// InvitationService.RevokeInvitation.
    revoke_invitation: InvitationServiceClient(RevokeInvitationRequest) -> RevokeInvitationResponse, Once;
    /// InvitationService.ResendInvitation.
    resend_invitation: InvitationServiceClient(ResendInvitationRequest) -> ResendInvitationResponse, Once;
    /// AuditService.ListFolderAudit.
    list_folder_audit: AuditServiceClient(ListFolderAuditRequest) -> ListFolderAuditResponse, Idempotent;
    /// AuditService.ListMyErrors.
    list_my_errors: AuditServiceClient(ListMyErrorsRequest) -> ListMyErrorsResponse, Idempotent;
    /// LicenseAdminService.ListLicenseEmails.
    list_license_emails: LicenseAdminServiceClient(ListLicenseEmailsRequest) -> ListLicenseEmailsResponse, Idempotent;
    /// LicenseAdminService.SetLicenseSharingBlocked.
    set_license_sharing_blocked: LicenseAdminServiceClient(SetLicenseSharingBlockedRequest) -> SetLicenseSharingBlockedResponse, Idempotent;
    /// LicenseAdminService.GetLicenseSharingState.
    get_license_sharing_state: LicenseAdminServiceClient(GetLicenseSharingStateRequest) -> GetLicenseSharingStateResponse, Idempotent;
    /// LicenseAdminService.ListLicenseAudit.
    list_license_audit: LicenseAdminServiceClient(ListLicenseAuditRequest) -> ListLicenseAuditResponse, Idempotent;
    /// PrivacyService.DeleteMyAccount (safe to retry: a second call finds nothing left, and an
    /// erasure interrupted part-way is completed by the service). Leaves the local session as
    /// it is; `Client::delete_my_account` forgets it.
    delete_my_account: PrivacyServiceClient(DeleteMyAccountRequest) -> DeleteMyAccountResponse, Idempotent;
}
