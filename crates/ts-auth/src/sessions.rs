//! Users, sessions and tokens: short-lived signed access tokens, and opaque refresh tokens
//! stored only as a hash, rotated on every use, whose reuse revokes the whole session.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::ReturnDocument;
use ts_contract::clock::{bson_date, unix_secs};
use ts_contract::revocation;
use ts_contract::tokens::{AUDIENCE, Claims, ISSUER};
use ts_proto::internal::SharingDenial;

use crate::email::Email;
use crate::state::{Auth, AuthError, AuthResult};
use crate::verification::{ct_eq, getrandom};

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
    pub user_id: String,
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
    pub id: String,
    /// Email.
    pub email: String,
    /// License id or empty.
    pub license_id: String,
    /// Verified now.
    pub email_verified: bool,
    /// Why sharing is not allowed, if it is not.
    pub denial: Option<SharingDenial>,
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b).as_ref().to_vec()
}

fn bin(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

impl Auth {
    /// Marks `email` verified, creating the user on first sight; returns the user id.
    pub(crate) async fn verified_user(&self, email: &Email, via: &str) -> AuthResult<String> {
        for _ in 0..2 {
            let result = self
                .users()
                .find_one_and_update(
                    doc! { "email": email.as_str() },
                    doc! {
                        "$set": { "email_verified": true, "verified_at": bson_date(self.now()), "verified_via": via },
                        "$setOnInsert": { "_id": uuid::Uuid::new_v4().to_string(), "created_at": bson_date(self.now()) },
                    },
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match result {
                Ok(Some(doc)) => {
                    return Ok(doc
                        .get_str("_id")
                        .map_err(|_| AuthError::Internal("user without id".into()))?
                        .to_owned());
                }
                Ok(None) => {}
                Err(e) if ts_stores::is_duplicate_key(&e) => continue, // a concurrent first sign-in created it
                Err(e) => return Err(e.into()),
            }
        }
        Err(AuthError::Internal("could not create the user".into()))
    }

    /// The license an email belongs to: by explicit address, else by domain.
    pub(crate) async fn license_of(&self, email: &str) -> AuthResult<Option<Document>> {
        let domain = email.split_once('@').map(|(_, d)| d).unwrap_or_default();
        if let Some(l) = self.licenses().find_one(doc! { "emails": email }).sort(doc! { "_id": 1 }).await? {
            return Ok(Some(l));
        }
        Ok(self.licenses().find_one(doc! { "domains": domain }).sort(doc! { "_id": 1 }).await?)
    }

    /// The id of the license an email belongs to, or empty.
    async fn license_id_of(&self, email: &str) -> AuthResult<String> {
        Ok(self.license_of(email).await?.and_then(|l| l.get_str("_id").ok().map(str::to_owned)).unwrap_or_default())
    }

    fn mint(&self, user_id: &str, email: &str, license_id: &str, session_id: &str) -> AuthResult<(String, SystemTime)> {
        let now = self.now();
        let expires = now + Duration::from_secs(self.policy.access_token_ttl_secs);
        let claims = Claims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            lic: license_id.to_owned(),
            sid: session_id.to_owned(),
            iat: unix_secs(now),
            exp: unix_secs(expires),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        let token = self.signer.sign(&claims).map_err(|e| AuthError::Internal(format!("signing failed: {e}")))?;
        Ok((token, expires))
    }

    fn new_refresh(session_id: &str) -> AuthResult<(String, Vec<u8>)> {
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        getrandom(&mut secret[..])?;
        Ok((format!("{session_id}.{}", URL_SAFE_NO_PAD.encode(&secret[..])), sha256(&secret[..])))
    }

    /// Opens a session for a verified user.
    pub(crate) async fn open_session(&self, user_id: &str, email: &str) -> AuthResult<Issued> {
        let license = self.license_id_of(email).await?;
        let sid = uuid::Uuid::new_v4().to_string();
        let (refresh_token, hash) = Self::new_refresh(&sid)?;
        let now = self.now();
        self.sessions()
            .insert_one(doc! {
                "_id": &sid,
                "user_id": user_id,
                "refresh_hash": bin(hash),
                "used_hashes": [],
                "revoked": false,
                "created_at": bson_date(now),
                "expires_at": bson_date(now + Duration::from_secs(self.policy.refresh_token_ttl_secs)),
            })
            .await?;
        let (access_token, access_expires) = self.mint(user_id, email, &license, &sid)?;
        Ok(Issued { access_token, access_expires, refresh_token, user_id: user_id.to_owned() })
    }

    /// Rotates a refresh token. Presenting one that was already used revokes the session.
    pub async fn refresh(&self, token: &str) -> AuthResult<Issued> {
        let invalid = || AuthError::Unauthenticated("refresh token is not valid".into());
        let (sid, secret) = token.trim().split_once('.').ok_or_else(invalid)?;
        let secret = URL_SAFE_NO_PAD.decode(secret).map_err(|_| invalid())?;
        let hash = sha256(&secret);
        let session = self.sessions().find_one(doc! { "_id": sid }).await?.ok_or_else(invalid)?;
        let expired = session.get_datetime("expires_at").map(|d| d.to_system_time() <= self.now()).unwrap_or(true);
        if session.get_bool("revoked").unwrap_or(true) || expired {
            return Err(invalid());
        }
        let current = match session.get("refresh_hash") {
            Some(Bson::Binary(b)) => b.bytes.clone(),
            _ => return Err(invalid()),
        };
        if !ct_eq(&current, &hash) {
            let used = session
                .get_array("used_hashes")
                .map(|a| a.iter().any(|h| matches!(h, Bson::Binary(b) if b.bytes == hash)))
                .unwrap_or(false);
            if used {
                self.revoke_sessions(doc! { "_id": sid }, "refresh token reuse").await?;
                return Err(AuthError::Unauthenticated(
                    "refresh token was already used; the session is revoked".into(),
                ));
            }
            return Err(invalid());
        }
        let (refresh_token, new_hash) = Self::new_refresh(sid)?;
        let rotated = self
            .sessions()
            .update_one(
                doc! { "_id": sid, "refresh_hash": bin(current.clone()), "revoked": false },
                doc! { "$set": { "refresh_hash": bin(new_hash) }, "$push": { "used_hashes": bin(current) } },
            )
            .await?;
        if rotated.modified_count != 1 {
            // Another request rotated this same token first: that is reuse too.
            self.revoke_sessions(doc! { "_id": sid }, "concurrent refresh token reuse").await?;
            return Err(AuthError::Unauthenticated("refresh token was already used; the session is revoked".into()));
        }
        let user_id = session.get_str("user_id").map_err(|_| invalid())?;
        let user = self.users().find_one(doc! { "_id": user_id }).await?.ok_or_else(invalid)?;
        let email = user.get_str("email").map_err(|_| invalid())?;
        let license = self.license_id_of(email).await?;
        let (access_token, access_expires) = self.mint(user_id, email, &license, sid)?;
        Ok(Issued { access_token, access_expires, refresh_token, user_id: user_id.to_owned() })
    }

    /// Revokes every live session matching `filter`. The revocation is durable in MongoDB
    /// before this returns, and the session document itself is the outbox entry
    /// (`revocation_pending`), set in the same write: auth publishes it to Redis now, and the
    /// outbox task retries until Redis has it. Until then auth stops vouching for the Redis
    /// view, so gateways ask auth (see `ts_contract::revocation`). Returns how many were revoked.
    pub(crate) async fn revoke_sessions(&self, filter: Document, reason: &str) -> AuthResult<u64> {
        let mut live = filter.clone();
        live.insert("revoked", false);
        let ids = self.session_ids(live).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut set = doc! { "revoked": true, "revoked_at": bson_date(self.now()) };
        if self.redis.is_some() {
            set.insert("revocation_pending", true);
        }
        self.sessions().update_many(doc! { "_id": { "$in": &ids } }, doc! { "$set": set }).await?;
        if let Err(e) = self.publish_revocations(&ids).await {
            tracing::warn!(error = %e, count = ids.len(), "revocations not in redis yet; the outbox retries");
        }
        tracing::info!(count = ids.len(), reason, "sessions revoked");
        Ok(ids.len() as u64)
    }

    async fn session_ids(&self, filter: Document) -> AuthResult<Vec<String>> {
        Ok(self
            .sessions()
            .find(filter)
            .projection(doc! { "_id": 1 })
            .await?
            .try_collect::<Vec<Document>>()
            .await?
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    /// Writes revocation keys for `ids` to Redis, then clears their outbox flag.
    async fn publish_revocations(&self, ids: &[String]) -> Result<(), String> {
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
        self.sessions()
            .update_many(doc! { "_id": { "$in": ids } }, doc! { "$unset": { "revocation_pending": "" } })
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// One outbox round: publishes every pending revocation, and only when none is left
    /// that was acknowledged before the round began, vouches for the Redis view.
    async fn outbox_round(&self) -> Result<(), String> {
        use fred::prelude::*;
        let Some(redis) = &self.redis else { return Ok(()) };
        let began = std::time::Instant::now();
        let pending = self
            .sessions()
            .find(doc! { "revocation_pending": true })
            .projection(doc! { "_id": 1 })
            .limit(OUTBOX_BATCH)
            .await
            .map_err(|e| e.to_string())?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<String> = pending.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_owned)).collect();
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
        let ids = self
            .session_ids(doc! { "revoked": true, "revoked_at": { "$gt": bson_date(since) } })
            .await
            .map_err(|e| e.to_string())?;
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
    pub(crate) async fn session_owner(&self, token: &str) -> Option<(String, String)> {
        let (sid, _) = token.trim().split_once('.')?;
        if sid.is_empty() || sid.len() > 64 {
            return None;
        }
        let session = self.sessions().find_one(doc! { "_id": sid }).await.ok()??;
        let user_id = session.get_str("user_id").ok()?;
        let user = self.users().find_one(doc! { "_id": user_id }).await.ok()??;
        Some((user_id.to_owned(), user.get_str("email").ok()?.to_owned()))
    }

    /// Whether a session is live (not revoked, not expired).
    pub async fn session_live(&self, sid: &str) -> AuthResult<bool> {
        let found = self.sessions().find_one(doc! { "_id": sid, "revoked": false }).await?;
        Ok(found
            .is_some_and(|s| s.get_datetime("expires_at").map(|d| d.to_system_time() > self.now()).unwrap_or(false)))
    }

    /// Whether Team Sharing is on for the deployment.
    pub(crate) async fn deployment_sharing_enabled(&self) -> AuthResult<bool> {
        let found = self.settings().find_one(doc! { "_id": "deployment" }).await?;
        Ok(found.and_then(|d| d.get_bool("sharing_enabled").ok()).unwrap_or(self.policy.sharing_enabled))
    }

    /// A user with why they may not share right now, if they may not.
    pub async fn user_view(&self, user_id: &str) -> AuthResult<UserView> {
        let user = self
            .users()
            .find_one(doc! { "_id": user_id })
            .await?
            .ok_or_else(|| AuthError::NotFound("no such user".into()))?;
        let email = user.get_str("email").unwrap_or_default().to_owned();
        let verified = user.get_bool("email_verified").unwrap_or(false);
        let license = self.license_of(&email).await?;
        let denial = match self.license_denial(license.as_ref()).await? {
            Some(d) => Some(d),
            None if !verified => Some(SharingDenial::Unverified),
            None => None,
        };
        Ok(UserView {
            id: user_id.to_owned(),
            email,
            license_id: license.and_then(|l| l.get_str("_id").ok().map(str::to_owned)).unwrap_or_default(),
            email_verified: verified,
            denial,
        })
    }
}

impl Auth {
    /// The id of the user with this email, if any.
    pub async fn user_id_by_email(&self, email: &Email) -> AuthResult<Option<String>> {
        let found = self.users().find_one(doc! { "email": email.as_str() }).projection(doc! { "_id": 1 }).await?;
        Ok(found.and_then(|d| d.get_str("_id").ok().map(str::to_owned)))
    }
}

impl Auth {
    /// Why sharing is off for everyone under `license` (or the deployment), if it is.
    async fn license_denial(&self, license: Option<&Document>) -> AuthResult<Option<SharingDenial>> {
        if !self.deployment_sharing_enabled().await?
            || license.is_some_and(|l| !l.get_bool("sharing_enabled").unwrap_or(true))
        {
            return Ok(Some(SharingDenial::Disabled));
        }
        Ok(license.is_some_and(|l| l.get_bool("blocked").unwrap_or(false)).then_some(SharingDenial::LicenseBlocked))
    }

    /// Why an email (account or not) may not be shared with, if it may not.
    pub async fn email_denial(&self, email: &str) -> AuthResult<Option<SharingDenial>> {
        let license = self.license_of(email).await?;
        self.license_denial(license.as_ref()).await
    }
}
