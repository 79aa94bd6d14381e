//! Authenticating public callers: access tokens verified with auth's public keys (fetched
//! over mTLS, cached, refreshed when an unknown key id appears), revocation checked in Redis
//! only while auth vouches that the Redis view is fresh (otherwise asking auth, whose "live"
//! answers are cached for at most a second), and the "may share right now" check for
//! sharing RPCs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;
use tonic::{Request, Status};
use ts_runtime::client::InternalChannel;

use crate::ratelimit::{Charge, InviteLimiter};
use ts_contract::audit::Event;
use ts_contract::clock::{SharedClock, unix_secs};
use ts_contract::ids::{LicenseId, SessionId, UserId};
use ts_contract::revocation;
use ts_contract::status::{self, Reason};
use ts_contract::tokens::{PublicKey, TokenError, Verifier};
use ts_contract::user::UserContext;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::{CheckSessionRequest, CheckSharingAllowedRequest, GetTokenKeysRequest};
use ts_runtime::audit::Sink;
use ts_runtime::server::RpcName;

/// How long a "live" answer from auth may be reused. With auth's vouching window this keeps
/// every acknowledged revocation effective everywhere within 2 s.
const LIVE_ANSWER_FOR: Duration = Duration::from_millis(900);
/// Most sessions whose "live" answer is remembered.
const LIVE_ANSWERS_MAX: usize = 10_000;
/// Least time between two key refreshes triggered by unknown key ids.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Keys older than this are fetched again before a token is verified in full, so that a key
/// auth stopped publishing (a compromised one removed from its configuration) stops
/// verifying within about a minute even if no token names an unknown key.
const KEYS_MAX_AGE: Duration = Duration::from_secs(60);
/// How long a verified token's identity is kept, so that a client's next calls skip the
/// signature check (Ed25519 verification was ~8 % of the gateway's CPU per read). Expiry is
/// still checked on every call, against the injected clock.
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// Most verified tokens kept.
const VERIFIED_MAX: u64 = 50_000;

/// Auth's public keys as last fetched (sorted by key id), when, and when a fetch was last
/// tried.
#[derive(Default)]
struct Keys {
    verifier: Verifier,
    public: Vec<PublicKey>,
    fetched: Option<Instant>,
    tried: Option<Instant>,
}

/// A token the gateway verified: who it names, and until when (Unix seconds).
#[derive(Debug)]
struct Verified {
    user: UserContext,
    exp: u64,
}

/// Tokens are kept by their SHA-256, never as themselves: the cache holds no bearer secret.
type TokenDigest = [u8; 32];

fn digest_of(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
    out
}

/// Verifies access tokens and sharing permission for the gateway.
pub struct Authenticator {
    identity: IdentityServiceClient<InternalChannel>,
    audit: Sink,
    limiter: Option<Arc<InviteLimiter>>,
    /// Redis, backed off from when it (or a cluster shard) failed instead of waiting
    /// `REDIS_WAIT` on every request; shared with the send limiter, so one failure holds for
    /// both.
    redis: ts_stores::cache::Cache,
    clock: SharedClock,
    keys: RwLock<Keys>,
    /// Tokens verified in the last `VERIFIED_FOR`, by digest; emptied when the keys change.
    verified: moka::sync::Cache<TokenDigest, Arc<Verified>>,
    /// Sessions auth said were live, with when we asked.
    live: std::sync::Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("redis", &self.redis.client().is_some()).finish_non_exhaustive()
    }
}

/// A public caller as the gateway established them: the identity to forward, and the
/// invitation charged to them, if the RPC sends one.
#[derive(Debug, Default)]
pub struct Caller {
    /// The verified user, for RPCs that need one.
    pub user: Option<UserContext>,
    /// The send-limit charge, to be given back if the invitation is refused downstream.
    pub charge: Option<Charge>,
}

impl From<Option<UserContext>> for Caller {
    fn from(user: Option<UserContext>) -> Self {
        Caller { user, charge: None }
    }
}

/// Downstream refusals that mean no invitation went out, so its charge is given back: a
/// sender who is not a manager, a folder that is not there, an invitee already in it, a
/// folder or invitee cap. Failures that might have happened after the mail was sent
/// (UNAVAILABLE, INTERNAL, a deadline) keep the charge.
fn nothing_sent(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument | NotFound | AlreadyExists | PermissionDenied | FailedPrecondition | ResourceExhausted
    )
}

/// Whether tokens naming an unknown key id may fetch auth's keys again: at most every
/// `REFRESH_EVERY`, so a flood of tokens with made-up key ids costs auth one call per period.
fn refresh_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|at| now.saturating_duration_since(at) >= REFRESH_EVERY)
}

fn unauthenticated(e: TokenError) -> Status {
    let reason = match e {
        TokenError::Expired => Reason::AccessTokenExpired,
        TokenError::Malformed | TokenError::UnknownKey | TokenError::Invalid => Reason::AccessTokenInvalid,
    };
    status::failure(tonic::Code::Unauthenticated, reason, e.to_string())
}

impl Authenticator {
    /// Checks tokens with keys from `identity`, revocations in `redis`, time from `clock`.
    pub fn new(
        identity: IdentityServiceClient<InternalChannel>,
        redis: ts_stores::cache::Cache,
        clock: SharedClock,
    ) -> Self {
        Authenticator {
            identity,
            audit: Sink::default(),
            limiter: None,
            redis,
            clock,
            keys: RwLock::new(Keys::default()),
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_MAX).time_to_live(VERIFIED_FOR).build(),
            live: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Records sharing refusals in folders' audit trail through `audit`.
    pub fn with_audit(mut self, audit: Sink) -> Self {
        self.audit = audit;
        self
    }

    /// Applies invitation send limits to `inviting` calls.
    pub fn with_limiter(mut self, limiter: Arc<InviteLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// For RPCs that send invitations: a user who may share, a well-formed request (checked
    /// before the limiter, so a malformed one spends nothing), within the send rate limits.
    /// Pass the charge to [`Authenticator::settle`] with the downstream answer.
    pub async fn inviting<T>(
        &self,
        request: &Request<T>,
        check: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Caller, Status> {
        let user = self.sharing(request, check).await?;
        let (Some(limiter), Some(u)) = (&self.limiter, &user) else { return Ok(user.into()) };
        if cfg!(feature = "insecure-bench") {
            return Ok(user.into());
        }
        match limiter.check(u).await {
            Ok(charge) => Ok(Caller { user, charge: Some(charge) }),
            Err(status) => {
                self.audit_refusal(request, u, &status);
                Err(status)
            }
        }
    }

    /// Settles an invitation charge once the downstream service has answered: a refusal
    /// that sent nothing gives it back, so only invitations that went out count against
    /// the sender and their license (a member without MANAGE cannot drain the license's
    /// budget by asking for what they may not do).
    pub async fn settle<R>(&self, charge: Charge, answer: &Result<R, Status>) {
        if let (Some(limiter), Err(status)) = (&self.limiter, answer)
            && nothing_sent(status.code())
        {
            limiter.refund(charge).await;
        }
    }

    /// Audits a refused sharing call in the background; the caller's answer never waits on it.
    fn audit_refusal<T>(&self, request: &Request<T>, user: &UserContext, status: &Status) {
        self.audit.record_in_background(Event {
            actor_email: user.email.clone(),
            actor_user_id: user.user_id.to_string(),
            action: request.extensions().get::<RpcName>().map(|r| r.0.clone()).unwrap_or_default(),
            code: status.code(),
            ..Default::default()
        });
    }

    async fn refresh_keys(&self) -> Result<(), Status> {
        let mut keys = self.keys.write().await;
        if !refresh_due(keys.tried, Instant::now()) {
            return Ok(());
        }
        // `tried` is set once the fetch has finished, not before: a request whose client gave
        // up (a 1 ms deadline) drops this future mid-fetch, and must not leave the gateway
        // with no keys and no retry for REFRESH_EVERY (every valid token refused).
        let reply = self.identity.clone().get_token_keys(GetTokenKeysRequest {}).await;
        keys.tried = Some(Instant::now());
        let reply = reply.map_err(|s| {
            tracing::warn!(code = ?s.code(), "cannot fetch token keys from auth");
            Status::unavailable("cannot verify access tokens right now; retry later")
        })?;
        let mut public: Vec<PublicKey> =
            reply.into_inner().keys.into_iter().map(|k| PublicKey { kid: k.key_id, bytes: k.public_key }).collect();
        public.sort_by(|a, b| a.kid.cmp(&b.kid));
        // A key auth no longer publishes must not keep vouching for what it signed; an
        // unchanged set (a refresh forced by a made-up key id) keeps what was verified.
        if public != keys.public {
            self.verified.invalidate_all();
        }
        let now = Some(Instant::now());
        *keys = Keys { verifier: Verifier::new(&public), public, fetched: now, tried: now };
        Ok(())
    }

    /// The identity a token names: checked in full (signature, issuer, audience, well-formed
    /// ids) the first time, then by digest; expiry every time.
    async fn verify(&self, token: &str) -> Result<Arc<Verified>, Status> {
        let digest = digest_of(token);
        let now = unix_secs(self.clock.now());
        if let Some(v) = self.verified.get(&digest) {
            return if now < v.exp { Ok(v) } else { Err(unauthenticated(TokenError::Expired)) };
        }
        let kid = Verifier::kid_of(token).map_err(unauthenticated)?;
        let (known, stale) = {
            let keys = self.keys.read().await;
            (keys.verifier.knows(&kid), keys.fetched.is_none_or(|at| at.elapsed() >= KEYS_MAX_AGE))
        };
        if !known {
            self.refresh_keys().await?;
        } else if stale {
            // Auth unreachable: the keys it published last still verify (the failure is logged).
            let _ = self.refresh_keys().await;
        }
        let keys = self.keys.read().await;
        let claims = keys.verifier.verify(token, self.clock.now()).map_err(unauthenticated)?;
        // Auth minted these; a token that names malformed ids is refused like a forged one.
        let malformed = |_| unauthenticated(TokenError::Malformed);
        let verified = Arc::new(Verified {
            user: UserContext {
                user_id: UserId::parse("sub", &claims.sub).map_err(malformed)?,
                email: claims.email,
                license_id: LicenseId::optional("lic", &claims.lic).map_err(malformed)?,
                session_id: SessionId::parse("sid", &claims.sid).map_err(malformed)?,
            },
            exp: claims.exp,
        });
        // Kept under the read lock: a key refresh (which empties the cache) cannot slip in
        // between the check with the old keys and the insert.
        self.verified.insert(digest, verified.clone());
        drop(keys);
        Ok(verified)
    }

    /// Whether a session was revoked. The warm path is one Redis `MGET` of the session's
    /// revocation key and auth's freshness key: a revocation key answers "revoked"; its
    /// absence answers "live" only while auth vouches for the view. Otherwise (Redis down,
    /// auth unable to publish) auth answers.
    async fn session_revoked(&self, sid: &str) -> Result<bool, Status> {
        use fred::prelude::*;
        if let Some(redis) = self.redis.client().filter(|_| self.redis.usable_now()) {
            let keys = vec![revocation::revoked_key(sid), revocation::FRESH_KEY.to_owned()];
            match tokio::time::timeout(revocation::REDIS_WAIT, redis.mget::<Vec<Option<String>>, _>(keys)).await {
                Ok(Ok(found)) => match found.as_slice() {
                    [Some(_), _] => {
                        // Seen revoked: an older "live" answer from auth no longer counts.
                        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(sid);
                        return Ok(true);
                    }
                    [None, Some(_)] => return Ok(false),
                    _ => tracing::debug!("the redis revocation view is not vouched for; asking auth"),
                },
                Ok(Err(e)) => self.redis.mark_failed("revocation check", &e),
                Err(_) => {
                    let e = fred::error::Error::new(fred::error::ErrorKind::Timeout, "no answer in time");
                    self.redis.mark_failed("revocation check", &e);
                }
            }
        }
        if self.recently_live(sid) {
            return Ok(false);
        }
        let asked = Instant::now();
        let live =
            self.identity.clone().check_session(CheckSessionRequest { session_id: sid.to_owned() }).await.map_err(
                |s| {
                    tracing::warn!(code = ?s.code(), "cannot check session with auth");
                    Status::unavailable("cannot verify the session right now; retry later")
                },
            )?;
        let live = live.into_inner().live;
        if live {
            self.remember_live(sid, asked);
        }
        Ok(!live)
    }

    /// Forgets auth's "live" answer for a session that just ended through this gateway.
    pub fn forget_live(&self, sid: &str) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).remove(sid);
    }

    fn recently_live(&self, sid: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.get(sid).is_some_and(|asked| asked.elapsed() < LIVE_ANSWER_FOR)
    }

    /// Remembers a "live" answer by when it was asked for, not received: the answer is no
    /// older than that.
    fn remember_live(&self, sid: &str, asked: Instant) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if live.len() >= LIVE_ANSWERS_MAX {
            live.retain(|_, at| at.elapsed() < LIVE_ANSWER_FOR);
            if live.len() >= LIVE_ANSWERS_MAX {
                live.clear();
            }
        }
        live.insert(sid.to_owned(), asked);
    }

    /// For RPCs that need a signed-in user: the verified identity, or UNAUTHENTICATED.
    /// `check` validates the request's fields once the caller is known.
    pub async fn required<T>(
        &self,
        request: &Request<T>,
        check: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Option<UserContext>, Status> {
        let token = bearer_token(request)?;
        let verified = self.verify(token).await?;
        // The benchmark-only build skips the revocation check; a token is still verified
        // once and then found by digest, which is the steady state of the check above.
        if !cfg!(feature = "insecure-bench") && self.session_revoked(verified.user.session_id.as_str()).await? {
            return Err(status::failure(
                tonic::Code::Unauthenticated,
                Reason::SessionRevoked,
                "the session has ended; sign in again",
            ));
        }
        check()?;
        Ok(Some(verified.user.clone()))
    }

    /// For sharing RPCs: a signed-in user who may share right now (verified, not blocked,
    /// Team Sharing on), else FAILED_PRECONDITION saying why.
    pub async fn sharing<T>(
        &self,
        request: &Request<T>,
        check: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Option<UserContext>, Status> {
        let user = self.required(request, check).await?;
        let Some(u) = &user else { return Ok(user) };
        let reply = self
            .identity
            .clone()
            .check_sharing_allowed(CheckSharingAllowedRequest { user_id: u.user_id.to_string(), email: String::new() })
            .await
            .map_err(crate::downstream::public_status)?
            .into_inner();
        if reply.allowed {
            return Ok(user);
        }
        let status = ts_contract::status::sharing_refusal(reply.denial);
        self.audit_refusal(request, u, &status);
        Err(status)
    }

    /// For RPCs that anyone may call (sign-in, status): no identity is forwarded.
    pub async fn anonymous<T>(
        &self,
        _request: &Request<T>,
        check: impl FnOnce() -> Result<(), Status>,
    ) -> Result<Option<UserContext>, Status> {
        check()?;
        Ok(None)
    }
}

/// The bearer token of a request, or UNAUTHENTICATED naming what is wrong. The token itself
/// never appears in the error.
pub fn bearer_token<T>(request: &Request<T>) -> Result<&str, Status> {
    let value = request
        .metadata()
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing access token: send `authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| Status::unauthenticated("authorization header must use the Bearer scheme"))?
        .trim();
    if token.is_empty() {
        return Err(Status::unauthenticated("empty access token"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(v: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert("authorization", v.parse().unwrap());
        r
    }

    #[test]
    fn bearer_tokens_are_parsed_and_never_echoed() {
        assert_eq!(bearer_token(&with_auth("Bearer abc")).unwrap(), "abc");
        let e = bearer_token(&with_auth("Basic c2VjcmV0")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(!e.message().contains("c2VjcmV0"));
        assert_eq!(bearer_token(&Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(bearer_token(&with_auth("Bearer  ")).is_err());
    }

    #[test]
    fn only_refusals_that_sent_nothing_give_the_charge_back() {
        use tonic::Code::*;
        for code in [InvalidArgument, NotFound, AlreadyExists, PermissionDenied, FailedPrecondition, ResourceExhausted]
        {
            assert!(nothing_sent(code), "{code:?}");
        }
        // The mail may have gone out before these: the charge stands.
        for code in [Ok, Unavailable, Internal, DeadlineExceeded, Cancelled, Unknown, Aborted, DataLoss] {
            assert!(!nothing_sent(code), "{code:?}");
        }
    }

    /// An identity client whose every call fails (nothing listens on port 9): whatever a
    /// test gets right, it got without asking auth.
    fn unreachable_auth() -> IdentityServiceClient<InternalChannel> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let certs = ts_devca::write_dev_certs(dir.path()).expect("development certificates");
        let material = ts_runtime::tls::MtlsMaterial::load(
            ("ca", &certs.ca_cert()),
            ("cert", &certs.cert(ts_contract::Peer::Gateway)),
            ("key", &certs.key(ts_contract::Peer::Gateway)),
        )
        .expect("mTLS material");
        let upstream = ts_config::Upstream { url: "https://127.0.0.1:9".into(), server_name: None };
        let settings =
            ts_runtime::client::Settings { timeout: Duration::from_secs(2), refresh: Duration::from_secs(60) };
        IdentityServiceClient::new(
            ts_runtime::client::connect("auth", &upstream, &material, settings).expect("a channel"),
        )
    }

    fn authenticator(redis: Option<fred::clients::Client>) -> Authenticator {
        let redis = ts_stores::cache::Cache::new(redis);
        Authenticator::new(unreachable_auth(), redis, Arc::new(ts_contract::clock::SystemClock))
    }

    #[tokio::test]
    async fn the_warm_revocation_check_needs_only_redis_and_a_revocation_there_always_wins() {
        use fred::prelude::*;
        let redis = ts_stores::testing::LocalRedis::start().expect("redis-server");
        let client = redis.client().await;
        let authn = authenticator(Some(client.clone()));
        // A view auth does not vouch for: only auth may answer, and it cannot.
        assert_eq!(authn.session_revoked("s1").await.unwrap_err().code(), tonic::Code::Unavailable);
        // Vouched for: no revocation key means live, without a call to auth.
        client.set::<(), _, _>(revocation::FRESH_KEY, "1", None, None, false).await.expect("set");
        assert!(!authn.session_revoked("s1").await.expect("answered from redis"));
        // A revocation key wins over an earlier "live" answer from auth, which is forgotten.
        authn.remember_live("s2", Instant::now());
        client.set::<(), _, _>(revocation::revoked_key("s2"), "1", None, None, false).await.expect("set");
        assert!(authn.session_revoked("s2").await.expect("answered from redis"));
        assert!(!authn.recently_live("s2"), "a revoked session's live answer was kept");
    }

    #[tokio::test]
    async fn live_answers_are_reused_briefly_and_kept_bounded() {
        let authn = authenticator(None);
        authn.remember_live("a", Instant::now());
        authn.remember_live("b", Instant::now());
        assert!(authn.recently_live("a") && authn.recently_live("b"));
        assert!(!authn.recently_live("c"));
        let old = Instant::now().checked_sub(LIVE_ANSWER_FOR + Duration::from_millis(50));
        if let Some(old) = old {
            authn.remember_live("d", old);
            assert!(!authn.recently_live("d"), "an answer older than {LIVE_ANSWER_FOR:?} was reused");
        }
        // Full: stale answers make room first; only a map full of fresh ones is cleared.
        let authn = authenticator(None);
        if let Some(old) = Instant::now().checked_sub(LIVE_ANSWER_FOR + Duration::from_millis(50)) {
            authn.remember_live("old", old);
            for i in 0..LIVE_ANSWERS_MAX - 1 {
                authn.remember_live(&format!("s{i}"), Instant::now());
            }
            authn.remember_live("next", Instant::now());
            let live = authn.live.lock().map(|l| (l.len(), l.contains_key("old"))).unwrap_or_default();
            assert_eq!(live, (LIVE_ANSWERS_MAX, false), "only the stale answer made room");
            assert!(authn.recently_live("s0") && authn.recently_live("next"));
        }
        for i in 0..10 {
            authn.remember_live(&format!("x{i}"), Instant::now());
        }
        let kept = authn.live.lock().map(|l| l.len()).unwrap_or(usize::MAX);
        assert!(kept <= LIVE_ANSWERS_MAX && kept > 0, "{kept} answers kept");
    }

    #[test]
    fn unknown_key_ids_refresh_the_keys_at_most_every_few_seconds() {
        let now = Instant::now();
        assert!(refresh_due(None, now));
        assert!(!refresh_due(Some(now), now));
        if let Some(recent) = now.checked_sub(REFRESH_EVERY - Duration::from_millis(100)) {
            assert!(!refresh_due(Some(recent), now));
        }
        if let Some(old) = now.checked_sub(REFRESH_EVERY + Duration::from_millis(100)) {
            assert!(refresh_due(Some(old), now));
        }
    }

    #[tokio::test]
    async fn anonymous_calls_are_still_checked_and_debug_shows_no_secrets() {
        let authn = authenticator(None);
        let refused = authn.anonymous(&Request::new(()), || Err(Status::invalid_argument("email is required"))).await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::InvalidArgument);
        assert!(authn.anonymous(&Request::new(()), || Ok(())).await.expect("anonymous").is_none());
        assert_eq!(format!("{authn:?}"), "Authenticator { redis: false, .. }");
    }
}
