//! One RPC as the SDK sends it (crates/ts-client/src/client.rs `call`), but more patient:
//! UNAVAILABLE, DEADLINE_EXCEEDED and (where the caller says it is safe) ABORTED are sent
//! again, RESOURCE_EXHAUSTED only when it carries a RetryInfo, and so are the transport
//! errors the client library reports without any error details (a connection lost while a
//! gateway restarts: UNKNOWN, INTERNAL or CANCELLED with no `google.rpc.ErrorInfo`; every
//! error the gateway itself answers carries one, common.proto). Backoff 50 ms doubling to 1 s
//! with jitter, never sooner than a RetryInfo delay, at most [`BUDGET`] per logical call. An
//! ACCESS_TOKEN_EXPIRED answer refreshes the user's session (RefreshSession) once and sends
//! the call again.

use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use ts_proto::public::RefreshSessionRequest;
use ts_proto::public::auth_service_client::AuthServiceClient;

use super::Workload;
use super::stats::{Stats, transient_code};
use crate::users::bearer;

/// How long one logical call may take, retries and waits included.
pub(super) const BUDGET: Duration = Duration::from_secs(20);
/// The deadline of one attempt (the gateway's own downstream deadline is 5 s).
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(8);

/// Which failures a call may be sent again on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// Whether ABORTED is retried: yes for creates with a request id (CONTENTION) and
    /// idempotent changes; no for UpdateItem, whose ABORTED (VERSION_CONFLICT) never heals.
    pub retry_aborted: bool,
}

/// Reads, creates with a request id, idempotent changes.
pub(super) const RETRY: Policy = Policy { retry_aborted: true };
/// UpdateItem: ABORTED is answered to the caller (who reads the item back).
pub(super) const NO_ABORTED: Policy = Policy { retry_aborted: false };

/// A call's final failure.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// The final gRPC code.
    pub code: Code,
    /// The `ErrorInfo` reason, empty without one.
    pub reason: String,
    /// The message (shortened).
    pub message: String,
    /// The final failure was one the retry loop retries: it gave up (budget spent).
    pub transient: bool,
    /// Some attempt may have taken effect (a transient failure of a write that was sent).
    pub ambiguous: bool,
    /// The status carried an `ErrorInfo`: it came from the server, not the client library.
    pub detailed: bool,
}

impl Failure {
    /// The failure `status` describes (not yet classified as transient).
    pub fn of(status: &Status) -> Failure {
        let details = status.get_error_details();
        let info = details.error_info();
        let mut message: String = status.message().chars().take(200).collect();
        if message.len() < status.message().len() {
            message.push('…');
        }
        Failure {
            code: status.code(),
            reason: info.map(|i| i.reason.clone()).unwrap_or_default(),
            message,
            transient: false,
            ambiguous: false,
            detailed: info.is_some(),
        }
    }

    /// A failure of the workload's own making (an answer lacking a part it always has).
    pub fn local(message: &str) -> Failure {
        Failure {
            code: Code::Internal,
            reason: String::new(),
            message: message.to_owned(),
            transient: false,
            ambiguous: false,
            detailed: true,
        }
    }

    /// Whether the server named `reason` (without the `ERROR_REASON_` prefix).
    pub fn is(&self, reason: &str) -> bool {
        self.reason == reason
    }

    /// Expected during a fault: the retry loop gave up on a transient failure. An INTERNAL or
    /// UNKNOWN from the server (with details) never is.
    pub fn expected(&self) -> bool {
        self.transient && (transient_code(self.code) || !self.detailed)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)?;
        if !self.reason.is_empty() {
            write!(f, " ({})", self.reason)?;
        }
        Ok(())
    }
}

/// The wait the server asks for in a RetryInfo detail.
fn retry_after(status: &Status) -> Option<Duration> {
    status.get_error_details().retry_info().and_then(|r| r.retry_delay)
}

/// `Some(least wait)` when `status` may be retried under `policy`.
fn retryable(status: &Status, failure: &Failure, policy: Policy) -> Option<Duration> {
    let hint = retry_after(status);
    match failure.code {
        Code::Unavailable | Code::DeadlineExceeded => Some(hint.unwrap_or_default()),
        Code::Aborted if policy.retry_aborted => Some(hint.unwrap_or_default()),
        Code::ResourceExhausted => hint,
        Code::Unknown | Code::Internal | Code::Cancelled if !failure.detailed => Some(Duration::ZERO),
        _ => None,
    }
}

/// The backoff before attempt `attempt + 1`: 50 ms doubling to 1 s, the upper half jittered.
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(50).saturating_mul(1u32 << attempt.min(10)).min(Duration::from_secs(1));
    let unit = (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64;
    ceiling / 2 + (ceiling / 2).mul_f64(unit)
}

impl Workload {
    /// Sends `request` as user `who` (no token when `None`), retrying as the module says;
    /// retries and refreshes are counted in `stats`.
    pub(super) async fn call<Q, R, F, Fut>(
        &self,
        who: Option<usize>,
        policy: Policy,
        request: &Q,
        stats: &mut Stats,
        rpc: F,
    ) -> Result<R, Failure>
    where
        Q: Clone,
        F: Fn(Channel, Request<Q>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let mut ambiguous = false;
        let mut refreshed = false;
        loop {
            let token = who.map(|u| self.users[u].access());
            let mut req = match &token {
                Some(t) => bearer(t, request.clone()),
                None => Request::new(request.clone()),
            };
            req.set_timeout(ATTEMPT_TIMEOUT);
            let status = match rpc(self.channel.clone(), req).await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) => status,
            };
            let mut failure = Failure::of(&status);
            if failure.code == Code::Unauthenticated
                && failure.is("ACCESS_TOKEN_EXPIRED")
                && !refreshed
                && let (Some(user), Some(stale)) = (who, token.as_deref())
            {
                refreshed = true;
                self.refresh(user, stale, stats).await?;
                continue;
            }
            let Some(hint) = retryable(&status, &failure, policy) else {
                failure.ambiguous = ambiguous;
                return Err(failure);
            };
            if failure.code != Code::ResourceExhausted {
                ambiguous = true;
            }
            let wait = backoff(attempt).max(hint);
            if started.elapsed() + wait > BUDGET {
                failure.ambiguous = ambiguous;
                failure.transient = true;
                return Err(failure);
            }
            attempt += 1;
            stats.retries += 1;
            tokio::time::sleep(wait).await;
        }
    }

    /// Refreshes `user`'s session unless another call already replaced the `stale` token.
    async fn refresh(&self, user: usize, stale: &str, stats: &mut Stats) -> Result<(), Failure> {
        let u = &self.users[user];
        let _one_at_a_time = u.refresh_lock.lock().await;
        if u.access() != stale {
            return Ok(());
        }
        let request = RefreshSessionRequest { refresh_token: u.refresh_token() };
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let mut req = Request::new(request.clone());
            req.set_timeout(ATTEMPT_TIMEOUT);
            // Sent again only within RefreshSession's 10 s retry window, where a repeat
            // returns the same successor instead of revoking the session.
            let status = match AuthServiceClient::new(self.channel.clone()).refresh_session(req).await {
                Ok(reply) => {
                    let tokens = reply.into_inner().tokens.ok_or_else(|| Failure::local("no tokens refreshed"))?;
                    self.remember("token", [tokens.access_token.clone(), tokens.refresh_token.clone()]);
                    u.set_tokens(tokens.access_token, tokens.refresh_token);
                    stats.refreshes += 1;
                    return Ok(());
                }
                Err(status) => status,
            };
            let mut failure = Failure::of(&status);
            let wait = match retryable(&status, &failure, RETRY) {
                Some(hint) => backoff(attempt).max(hint),
                None => return Err(failure),
            };
            if started.elapsed() + wait > Duration::from_secs(8) {
                failure.transient = true;
                return Err(failure);
            }
            attempt += 1;
            stats.retries += 1;
            tokio::time::sleep(wait).await;
        }
    }
}
