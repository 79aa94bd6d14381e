//! Users, sessions and tokens: short-lived signed access tokens, and opaque refresh tokens
//! stored only as a hash, rotated on every use, whose reuse revokes the whole session.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::Binary;
use bson::spec::BinarySubtype;
use ts_contract::clock::{bson_date, unix_secs};
use ts_contract::ids::{LicenseId, SessionId, UserId};
use ts_contract::revocation;
use ts_contract::status::Reason;
use ts_contract::tokens::{AUDIENCE, Claims, ISSUER};
use ts_proto::internal::SharingDenial;
use ts_stores::cache::Generation;

use crate::email::Email;
use crate::state::{Auth, AuthError, AuthResult};
use crate::store::{LicenseDoc, RotationDoc, SessionDoc, Sessions};
use crate::verification::{ct_eq, getrandom};

/// How long after a rotation the replaced refresh token still returns the same new token: a
/// client whose answer was lost (a dropped connection, a timeout) retries within it. Reuse
/// after it revokes the session.
pub const REFRESH_RETRY_WINDOW: Duration = Duration::from_secs(10);

/// How many outbox entries one publishing round takes.
const OUTBOX_BATCH: i64 = 500;

/// Tokens of a newly opened or refreshed session.
#[derive(Clone)]
pub struct Issued {
    /// Signed access token.
    pub access_token: String,
    /// Its expiry.
    pub access_expires: SystemTime,
    /// Opaque refresh token.
    pub refresh_token: String,
    /// The user.
    pub user_id: UserId,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("user_id", &self.user_id).finish_non_exhaustive()
    }
}

/// A user as the API shows them.
#[derive(Debug, Clone)]
pub struct UserView {
    /// Id.
    pub id: UserId,
    /// Email.
    pub email: String,
    /// The license the email belongs to, if any.
    pub license_id: Option<LicenseId>,
    /// Verified now.
    pub email_verified: bool,
    /// Why sharing is not allowed, if it is not.
    pub denial: Option<SharingDenial>,
}

/// The generation of one user's own state (their verification), replaced when it changes.
pub(crate) fn user_generation_key(user_id: &UserId) -> String {
    format!("ts:{{u:{user_id}}}:gen")
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

fn bin(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

/// The key that seals a rotation's new token: derived from the replaced secret, which the
/// store never holds, so only the holder of that token can open it.
fn rotation_key(secret: &[u8]) -> ts_crypto::DataKey {
    let mut input = b"teamshare refresh rotation key\0".to_vec();
    input.extend_from_slice(secret);
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    ts_crypto::DataKey::from_slice(1, digest.as_ref()).expect("a SHA-256 digest is 32 bytes")
}

/// Where a rotation's sealed token belongs: its session (the envelope is bound to it).
fn rotation_field(sid: &SessionId) -> ts_crypto::FieldRef<'_> {
    ts_crypto::FieldRef { folder_id: sid.as_str(), item_id: "session", field: "last_rotation.sealed_token" }
}

fn seal_rotation(sid: &SessionId, secret: &[u8], token: &str) -> AuthResult<Vec<u8>> {
    ts_crypto::Envelope::seal(&rotation_key(secret), rotation_field(sid), token.as_bytes())
        .map(|e| e.to_bytes())
        .map_err(|e| AuthError::Internal(format!("cannot seal the rotated token: {e}")))
}

fn open_rotation(sid: &SessionId, secret: &[u8], sealed: &[u8]) -> Option<String> {
    let envelope = ts_crypto::Envelope::from_bytes(sealed).ok()?;
    let opened = envelope.open(&rotation_key(secret), rotation_field(sid)).ok()?;
    String::from_utf8(opened.to_vec()).ok()
}

impl Auth {
    /// Marks `email` verified, creating the user on first sight; returns the user id.
    pub(crate) async fn verified_user(&self, email: &Email, via: &str) -> AuthResult<UserId> {
        for _ in 0..2 {
            let new_id = UserId::new();
            let result = self.store.mark_verified(email.as_str(), via, bson_date(self.now()), &new_id).await;
            match result {
                Ok(Some(user)) => {
                    // Checked after the write: an erasure that began before it finds this
                    // account when it looks again; one that began after sees no session.
                    if self.erasure_running(email.as_str()).await? {
                        if user.id == new_id {
                            self.store.delete_user(&user.id).await?;
                        }
                        return Err(AuthError::Erasing);
                    }
                    self.generations.invalidate(&user_generation_key(&user.id)).await;
                    return Ok(user.id);
                }
                Ok(None) => {}
                Err(e) if ts_stores::is_duplicate_key(&e) => continue, // a concurrent first sign-in created it
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("could not create the user".into()))
    }

    /// The license an email belongs to: by explicit address, else by domain.
    pub(crate) async fn license_of(&self, email: &str) -> AuthResult<Option<LicenseDoc>> {
        let domain = email.split_once('@').map(|(_, d)| d).unwrap_or_default();
        if let Some(l) = self.store.license_listing(email).await? {
            return Ok(Some(l));
        }
        Ok(self.store.license_with_domain(domain).await?)
    }

    /// The id of the license an email belongs to, if any.
    async fn license_id_of(&self, email: &str) -> AuthResult<Option<LicenseId>> {
        Ok(self.license_of(email).await?.map(|l| l.id))
    }

    fn mint(
        &self,
        user_id: &UserId,
        email: &str,
        license_id: &Option<LicenseId>,
        session_id: &SessionId,
    ) -> AuthResult<(String, SystemTime)> {
        let now = self.now();
        let expires = now + Duration::from_secs(self.policy.access_token_ttl_secs);
        let claims = Claims {
            sub: user_id.to_string(),
            email: email.to_owned(),
            lic: ts_contract::ids::license_text(license_id).to_owned(),
            sid: session_id.to_string(),
            iat: unix_secs(now),
            exp: unix_secs(expires),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = self.signer.sign(&claims).map_err(|e| AuthError::Internal(format!("signing failed: {e}")))?;
        Ok((token, expires))
    }

    fn new_refresh(session_id: &SessionId) -> AuthResult<(String, Vec<u8>)> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        getrandom(&mut secret[..])?;
        Ok((format!("{session_id}.{}", URL_SAFE_NO_PAD.encode(&secret[..])), sha256(&secret[..])))
    }

    /// Opens a session for a verified user.
    pub(crate) async fn open_session(&self, user_id: &UserId, email: &str) -> AuthResult<Issued> {
        let license = self.license_id_of(email).await?;
        let sid = SessionId::new();
        let (refresh_token, hash) = Self::new_refresh(&sid)?;
        let now = self.now();
        self.store
            .insert_session(&SessionDoc {
                id: sid.clone(),
                user_id: user_id.clone(),
                refresh_hash: bin(hash),
                used_hashes: vec![],
                revoked: false,
                created_at: bson_date(now),
                expires_at: bson_date(now + Duration::from_secs(self.policy.refresh_token_ttl_secs)),
                revoked_at: None,
                revocation_pending: None,
                last_rotation: None,
            })
            .await?;
        let (access_token, access_expires) = self.mint(user_id, email, &license, &sid)?;
        Ok(Issued { access_token, access_expires, refresh_token, user_id: user_id.clone() })
    }

    /// Rotates a refresh token. Presenting one that was already used revokes the session,
    /// except the token just replaced, within [`REFRESH_RETRY_WINDOW`] of its rotation and
    /// while its successor is unused: that is a client retrying a lost answer, and it gets
    /// the same new refresh token again.
    pub async fn refresh(&self, token: &str) -> AuthResult<Issued> {
        let invalid = || AuthError::Unauthenticated(Reason::RefreshTokenInvalid, "refresh token is not valid".into());
        let reused = || {
            AuthError::Unauthenticated(
                Reason::RefreshTokenReused,
                "refresh token was already used; the session is revoked".into(),
            )
        };
        let (sid, secret) = token.trim().split_once('.').ok_or_else(invalid)?;
        let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.decode(secret).map_err(|_| invalid())?);
        let hash = sha256(&secret);
        // Session ids are server-made UUIDs: any other id names no session.
        let sid = SessionId::parse("refresh_token", sid).map_err(|_| invalid())?;
        let session = self.store.session(&sid).await?.ok_or_else(invalid)?;
        let expired = session.expires_at.to_system_time() <= self.now();
        if session.revoked || expired {
            return Err(invalid());
        }
        let current = session.refresh_hash.bytes.clone();
        if !ct_eq(&current, &hash) {
            if let Some(again) = self.retried(&session, &secret, &hash).await? {
                return Ok(again);
            }
            let used = session.used_hashes.iter().any(|b| b.bytes == hash);
            if used {
                self.revoke_sessions(Sessions::Id(&sid), "refresh token reuse").await?;
                return Err(reused());
            }
            return Err(invalid());
        }
        let (refresh_token, new_hash) = Self::new_refresh(&sid)?;
        let rotation = RotationDoc {
            replaced_hash: bin(hash.clone()),
            retry_until: bson_date(self.now() + REFRESH_RETRY_WINDOW),
            sealed_token: bin(seal_rotation(&sid, &secret, &refresh_token)?),
        };
        if !self.store.rotate_refresh(&sid, &bin(current), &bin(new_hash), &rotation).await? {
            // Another request rotated this same token first: a concurrent retry of the same
            // client gets that rotation's answer; anything else is reuse.
            if let Some(session) = self.store.session(&sid).await?
                && let Some(again) = self.retried(&session, &secret, &hash).await?
            {
                return Ok(again);
            }
            self.revoke_sessions(Sessions::Id(&sid), "concurrent refresh token reuse").await?;
            return Err(reused());
        }
        self.issue(&session.user_id, &sid, refresh_token).await
    }

    /// The answer to a retried rotation: when `hash` is the token the session's last
    /// rotation replaced, within its window, and the new token has not been used since.
    async fn retried(&self, session: &SessionDoc, secret: &[u8], hash: &[u8]) -> AuthResult<Option<Issued>> {
        let Some(rotation) = &session.last_rotation else { return Ok(None) };
        let in_window = self.now() < rotation.retry_until.to_system_time();
        if session.revoked || !in_window || !ct_eq(&rotation.replaced_hash.bytes, hash) {
            return Ok(None);
        }
        let Some(token) = open_rotation(&session.id, secret, &rotation.sealed_token.bytes) else { return Ok(None) };
        // The new token must still be the current one: once it was used, the old one is
        // plain reuse.
        let still_current = token
            .split_once('.')
            .and_then(|(_, s)| URL_SAFE_NO_PAD.decode(s).ok())
            .is_some_and(|s| ct_eq(&sha256(&s), &session.refresh_hash.bytes));
        if !still_current {
            return Ok(None);
        }
        Ok(Some(self.issue(&session.user_id, &session.id, token).await?))
    }

    /// Tokens for `user_id`'s session `sid`: a new access token beside `refresh_token`.
    async fn issue(&self, user_id: &UserId, sid: &SessionId, refresh_token: String) -> AuthResult<Issued> {
        let invalid = || AuthError::Unauthenticated(Reason::RefreshTokenInvalid, "refresh token is not valid".into());
        let user = self.store.user(user_id).await?.ok_or_else(invalid)?;
        let license = self.license_id_of(&user.email).await?;
        let (access_token, access_expires) = self.mint(user_id, &user.email, &license, sid)?;
        Ok(Issued { access_token, access_expires, refresh_token, user_id: user_id.clone() })
    }

    /// Revokes every live session of `which`. The revocation is durable in MongoDB
    /// before this returns, and the session document itself is the outbox entry
    /// (`revocation_pending`), set in the same write: auth publishes it to Redis now, and the
    /// outbox task retries until Redis has it. Until then auth stops vouching for the Redis
    /// view, so gateways ask auth (see `ts_contract::revocation`). Returns how many were revoked.
    pub(crate) async fn revoke_sessions(&self, which: Sessions<'_>, reason: &str) -> AuthResult<u64> {
        let ids = self.store.unrevoked_session_ids(which).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        self.store.mark_revoked(&ids, bson_date(self.now()), self.redis.is_some()).await?;
        if let Err(e) = self.publish_revocations(&ids).await {
            tracing::warn!(error = %e, count = ids.len(), "revocations not in redis yet; the outbox retries");
        }
        tracing::info!(count = ids.len(), reason, "sessions revoked");
        Ok(ids.len() as u64)
    }

    /// Writes revocation keys for `ids` to Redis, then clears their outbox flag.
    async fn publish_revocations(&self, ids: &[SessionId]) -> Result<(), String> {
        use fred::prelude::*;
        let Some(redis) = &self.redis else { return Ok(()) };
        // Long enough to outlive every access token of these sessions.
        let ttl = i64::try_from(self.policy.access_token_ttl_secs + 60).unwrap_or(i64::MAX);
        let pipeline = redis.pipeline();
        for id in ids {
            let _: Result<(), _> =
                pipeline.set(revocation::revoked_key(id), 1, Some(Expiration::EX(ttl)), None, false).await;
        }
        match tokio::time::timeout(revocation::REDIS_WAIT, pipeline.all::<Vec<Value>>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("redis timed out".into()),
        }
        self.store.clear_revocation_pending(ids).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One outbox round: publishes every pending revocation, and only when none is left
    /// that was acknowledged before the round began, vouches for the Redis view.
    async fn outbox_round(&self) -> Result<(), String> {
        use fred::prelude::*;
        let Some(redis) = &self.redis else { return Ok(()) };
        let began = std::time::Instant::now();
        let ids = self.store.pending_revocations(OUTBOX_BATCH).await.map_err(|e| e.to_string())?;
        if !ids.is_empty() {
            self.publish_revocations(&ids).await?;
            tracing::info!(count = ids.len(), "outbox published session revocations");
            if ids.len() as i64 == OUTBOX_BATCH {
                return Ok(()); // more are waiting: vouch only once they are all out
            }
        }
        if began.elapsed() > revocation::VOUCH_BUDGET {
            return Err("outbox round too slow to vouch for the redis view".into());
        }
        let px = i64::try_from(revocation::FRESH_FOR.as_millis()).unwrap_or(1000);
        let keys = vec![revocation::FRESH_KEY.to_owned(), revocation::EPOCH_KEY.to_owned()];
        let vouch = redis.eval::<i64, _, _, _>(revocation::VOUCH_SCRIPT, keys, vec![px]);
        match tokio::time::timeout(revocation::REDIS_WAIT, vouch).await {
            Ok(Ok(1)) => Ok(()),
            // Redis lost its data: nothing is vouched for until every revocation that may
            // still matter is back, then the epoch is written and the next round vouches.
            Ok(Ok(_)) => self.restore_revocations().await,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("redis timed out".into()),
        }
    }

    /// Publishes again every revocation recent enough to outlive an access token, then
    /// writes the epoch key: after Redis lost its data, its view is whole again.
    async fn restore_revocations(&self) -> Result<(), String> {
        use fred::prelude::*;
        let Some(redis) = &self.redis else { return Ok(()) };
        let window = Duration::from_secs(self.policy.access_token_ttl_secs + 60);
        let since = self.now().checked_sub(window).unwrap_or(std::time::UNIX_EPOCH);
        let ids = self.store.revoked_since(bson_date(since)).await.map_err(|e| e.to_string())?;
        for chunk in ids.chunks(OUTBOX_BATCH as usize) {
            self.publish_revocations(chunk).await?;
        }
        let epoch = redis.set::<(), _, _>(revocation::EPOCH_KEY, 1, None, None, false);
        match tokio::time::timeout(revocation::REDIS_WAIT, epoch).await {
            Ok(Ok(())) => {
                tracing::warn!(count = ids.len(), "redis had lost the revocations; published them again");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("redis timed out".into()),
        }
    }

    /// Drains the revocation outbox and vouches for the Redis view every
    /// `revocation::VOUCH_EVERY`, until `stop` turns true. Every auth replica runs it:
    /// publishing twice is harmless.
    pub async fn run_revocation_outbox(self: std::sync::Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.redis.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(revocation::VOUCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            match self.outbox_round().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("revocation outbox healthy again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "revocation outbox cannot publish; gateways ask auth meanwhile");
                }
                Err(_) => {}
            }
        }
    }

    /// The user id and email of the session a refresh token names, if it names one; for
    /// telling that user about a refused refresh. Nothing of the token's secret is used.
    pub(crate) async fn session_owner(&self, token: &str) -> Option<(UserId, String)> {
        let (sid, _) = token.trim().split_once('.')?;
        // Only a server-made session id can name a session.
        let sid = SessionId::parse("refresh_token", sid).ok()?;
        let session = self.store.session(&sid).await.ok()??;
        let user = self.store.user(&session.user_id).await.ok()??;
        Some((session.user_id, user.email))
    }

    /// Whether a session is live (not revoked, not expired). An id that is not a session id
    /// names no session.
    pub async fn session_live(&self, sid: &str) -> AuthResult<bool> {
        let Ok(sid) = SessionId::parse("session_id", sid) else { return Ok(false) };
        let found = self.store.unrevoked_session(&sid).await?;
        Ok(found.is_some_and(|s| s.expires_at.to_system_time() > self.now()))
    }

    /// Whether Team Sharing is on for the deployment.
    pub(crate) async fn deployment_sharing_enabled(&self) -> AuthResult<bool> {
        Ok(self.store.deployment_sharing().await?.unwrap_or(self.policy.sharing_enabled))
    }

    /// A user given by an id as received: NOT_FOUND when it is not a user id, as when no
    /// user has it.
    pub async fn user_view_by_text(&self, user_id: &str) -> AuthResult<UserView> {
        match UserId::parse("user_id", user_id) {
            Ok(id) => self.user_view(&id).await,
            Err(_) => Err(AuthError::NotFound("no such user".into())),
        }
    }

    /// A user with why they may not share right now, if they may not: kept in memory under
    /// the sharing epoch and the user's own generation (read in one round trip), else read.
    pub async fn user_view(&self, user_id: &UserId) -> AuthResult<UserView> {
        let read = self.generations.generations(&[revocation::SHARING_EPOCH_KEY, &user_generation_key(user_id)]).await;
        let generation = match read.as_slice() {
            [epoch, user] => epoch.and(user),
            _ => Generation::unknown(),
        };
        if let Some(view) = self.views.get(user_id, &generation) {
            return Ok(view);
        }
        let view = self.read_user_view(user_id).await?;
        self.views.insert(user_id.clone(), &generation, view.clone());
        Ok(view)
    }

    /// After a change that can take sharing away from someone (see
    /// `ts_contract::revocation::SHARING_EPOCH_KEY`), before it is acknowledged.
    /// An error when it could not be made visible everywhere now (retried in the background).
    pub(crate) async fn sharing_changed(&self) -> AuthResult<()> {
        match self.generations.invalidate(revocation::SHARING_EPOCH_KEY).await {
            true => Ok(()),
            false => Err(AuthError::NotYetEverywhere),
        }
    }

    async fn read_user_view(&self, user_id: &UserId) -> AuthResult<UserView> {
        let user = self.store.user(user_id).await?.ok_or_else(|| AuthError::NotFound("no such user".into()))?;
        let email = user.email;
        let verified = user.email_verified;
        let license = self.license_of(&email).await?;
        let denial = match self.license_denial(license.as_ref()).await? {
            Some(d) => Some(d),
            None if !verified => Some(SharingDenial::Unverified),
            None => None,
        };
        Ok(UserView { id: user_id.clone(), email, license_id: license.map(|l| l.id), email_verified: verified, denial })
    }
}

impl Auth {
    /// The id of the user with this email, if any.
    pub async fn user_id_by_email(&self, email: &Email) -> AuthResult<Option<UserId>> {
        Ok(self.store.user_id_by_email(email.as_str()).await?)
    }
}

impl Auth {
    /// Why sharing is off for everyone under `license` (or the deployment), if it is.
    async fn license_denial(&self, license: Option<&LicenseDoc>) -> AuthResult<Option<SharingDenial>> {
        if !self.deployment_sharing_enabled().await? || license.is_some_and(|l| !l.sharing_enabled) {
            return Ok(Some(SharingDenial::Disabled));
        }
        Ok(license.is_some_and(|l| l.blocked).then_some(SharingDenial::LicenseBlocked))
    }

    /// Why an email (account or not) may not be shared with, if it may not.
    pub async fn email_denial(&self, email: &str) -> AuthResult<Option<SharingDenial>> {
        let license = self.license_of(email).await?;
        self.license_denial(license.as_ref()).await
    }
}
