//! The gateway's limits on sending invitations, per inviter and per license. The shared
//! limit is GCRA over Redis, both keys checked and updated in one Lua call (one round trip),
//! so it holds across gateway replicas; when Redis is unreachable each gateway falls back to
//! the same GCRA in process with `governor`. Time comes from the injected clock.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::clock::Clock as GovernorClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tonic::Status;
use ts_config::InvitationLimits;
use ts_contract::clock::SharedClock;
use ts_contract::user::UserContext;

/// The injected clock as a `governor` clock.
#[derive(Clone)]
struct Clock(SharedClock);

impl GovernorClock for Clock {
    type Instant = SystemTime;
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

type Local = RateLimiter<String, DashMapStateStore<String>, Clock, NoOpMiddleware<SystemTime>>;

/// GCRA over every key at once: all are allowed (and charged) or none is.
/// KEYS: the limited keys. ARGV: now_ms, then per key: emission interval ms, burst tolerance ms.
/// Returns {allowed, index of the refusing key, wait ms}.
const GCRA: &str = r#"
local now = tonumber(ARGV[1])
local new = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i])
  local tolerance = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  if tat - now > tolerance then return {0, i, tat - now - tolerance} end
  new[i] = tat + interval
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', math.ceil(new[i] - now + tonumber(ARGV[2 * i])))
end
return {1, 0, 0}
"#;

/// Gives back one emission interval on every key (an invitation that was charged but never
/// sent), dropping a key that falls back to the present. KEYS: the charged keys. ARGV: now_ms,
/// then each key's emission interval ms.
const REFUND: &str = r#"
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local interval = tonumber(ARGV[i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local back = tat - interval
  if back <= now then
    redis.call('DEL', KEYS[i])
  else
    redis.call('SET', KEYS[i], string.format('%d', back), 'PX', math.ceil(back - now + interval))
  end
end
return 1
"#;

/// One invitation charged to its sender's limits, to be refunded if nothing was sent.
#[derive(Debug)]
pub struct Charge {
    /// The shared keys charged, with their emission intervals; empty when the charge was
    /// made by the in-process fallback, which cannot give back (it only over-counts).
    keys: Vec<(String, i64)>,
}

struct Scope {
    name: &'static str,
    interval: Duration,
    burst: u32,
    local: Local,
}

impl Scope {
    fn new(name: &'static str, per_minute: u32, burst: u32, clock: &Clock) -> Self {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst_nz = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst_nz);
        Scope {
            name,
            interval: Duration::from_millis(60_000 / u64::from(per_minute.get())),
            burst: burst_nz.get(),
            local: RateLimiter::dashmap_with_clock(quota, clock.clone()),
        }
    }

    fn tolerance(&self) -> Duration {
        self.interval * (self.burst - 1)
    }
}

/// The limiter keys in Redis of one charge, in the order of `scopes`. The scripts touch every
/// key of a charge at once, so they share one hash tag (on a Redis Cluster a cross-slot call
/// fails, and the gateway would fall back to per-replica limits): the widest scope's key (the
/// license, else the inviter), so that different licenses spread over the cluster's slots.
fn shared_keys(scopes: &[(&Scope, String)]) -> Vec<String> {
    let tag = scopes.last().map_or("", |(_, k)| k.as_str());
    let kind = if scopes.iter().any(|(s, _)| s.name == "license") { "l" } else { "u" };
    scopes.iter().map(|(s, k)| format!("ts:{{rl:{kind}:{tag}}}:invite:{}:{k}", s.name)).collect()
}

/// Invitation send limits.
pub struct InviteLimiter {
    redis: ts_stores::cache::Cache,
    clock: Clock,
    inviter: Scope,
    license: Scope,
    rejected: Counter<u64>,
}

impl std::fmt::Debug for InviteLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteLimiter").field("redis", &self.redis.client().is_some()).finish_non_exhaustive()
    }
}

fn exhausted(scope: &str, wait: Duration) -> Status {
    ts_contract::status::resource_exhausted(
        ts_contract::status::Reason::RateLimited,
        &format!("too many invitations sent (per {scope})"),
        wait,
    )
}

impl InviteLimiter {
    /// Limits from `[invitation_limits]`, shared through `redis` when there is one.
    pub fn new(limits: &InvitationLimits, redis: ts_stores::cache::Cache, clock: SharedClock) -> Arc<Self> {
        let clock = Clock(clock);
        Arc::new(InviteLimiter {
            redis,
            inviter: Scope::new("inviter", limits.per_inviter_per_minute, limits.inviter_burst, &clock),
            license: Scope::new("license", limits.per_license_per_minute, limits.license_burst, &clock),
            clock,
            rejected: opentelemetry::global::meter("teamshare")
                .u64_counter("gateway.rate_limit.rejections")
                .with_description("invitations refused by a send rate limit")
                .build(),
        })
    }

    /// Charges one invitation to the caller and their license, or says how long to wait.
    pub async fn check(&self, user: &UserContext) -> Result<Charge, Status> {
        let mut scopes: Vec<(&Scope, String)> = vec![(&self.inviter, user.user_id.to_string())];
        if let Some(license) = &user.license_id {
            scopes.push((&self.license, license.to_string()));
        }
        let outcome = match self.shared(&scopes).await {
            Some(outcome) => outcome.map(|()| Charge {
                keys: shared_keys(&scopes)
                    .into_iter()
                    .zip(scopes.iter().map(|(s, _)| s.interval.as_millis() as i64))
                    .collect(),
            }),
            None => self.local(&scopes).map(|()| Charge { keys: Vec::new() }),
        };
        if let Err((scope, _)) = &outcome {
            self.rejected.add(1, &[KeyValue::new("scope", *scope)]);
        }
        outcome.map_err(|(scope, wait)| exhausted(scope, wait))
    }

    /// Gives a charge back: the invitation was refused downstream (not a manager, a bad
    /// folder, a cap), so no mail went out and the sender's budget, and their license's, is
    /// as it was. Best effort: if Redis fails the charge simply stands.
    pub async fn refund(&self, charge: Charge) {
        use fred::prelude::*;
        let (Some(client), false) = (self.redis.client(), charge.keys.is_empty()) else { return };
        let now = self.now_ms();
        let (keys, intervals): (Vec<String>, Vec<i64>) = charge.keys.into_iter().unzip();
        let args: Vec<i64> = std::iter::once(now).chain(intervals).collect();
        if let Err(e) = client.eval::<i64, _, _, _>(REFUND, keys, args).await {
            self.redis.mark_failed("rate limit refund", &e);
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }

    async fn shared(&self, scopes: &[(&Scope, String)]) -> Option<Result<(), (&'static str, Duration)>> {
        use fred::prelude::*;
        let client = self.redis.client()?;
        if !self.redis.usable_now() {
            return None;
        }
        let now = self.now_ms();
        let keys = shared_keys(scopes);
        let mut args: Vec<i64> = vec![now];
        for (s, _) in scopes {
            args.push(s.interval.as_millis() as i64);
            args.push(s.tolerance().as_millis() as i64);
        }
        match client.eval::<Vec<i64>, _, _, _>(GCRA, keys, args).await {
            Ok(reply) if reply.first() == Some(&1) => Some(Ok(())),
            Ok(reply) => {
                let index = reply.get(1).copied().unwrap_or(1).max(1) as usize - 1;
                let wait = Duration::from_millis(reply.get(2).copied().unwrap_or(1000).max(0) as u64);
                Some(Err((scopes.get(index).map_or("inviter", |(s, _)| s.name), wait)))
            }
            Err(e) => {
                self.redis.mark_failed("rate limit", &e);
                None
            }
        }
    }

    fn local(&self, scopes: &[(&Scope, String)]) -> Result<(), (&'static str, Duration)> {
        for (scope, key) in scopes {
            if let Err(not_until) = scope.local.check_key(key) {
                return Err((scope.name, not_until.wait_time_from(self.clock.now())));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_of_one_charge_share_a_hash_tag_and_licenses_spread() {
        let clock = Clock(Arc::new(ts_contract::clock::SystemClock));
        let (inviter, license) = (Scope::new("inviter", 20, 5, &clock), Scope::new("license", 100, 20, &clock));
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        let charge = |user: &str, lic: Option<&str>| {
            let mut scopes = vec![(&inviter, user.to_owned())];
            if let Some(l) = lic {
                scopes.push((&license, l.to_owned()));
            }
            shared_keys(&scopes)
        };
        let acme = charge("u1", Some("acme"));
        assert_eq!(acme.len(), 2);
        assert_eq!(tag(&acme[0]), tag(&acme[1]), "{acme:?}");
        assert_ne!(tag(&acme[0]), tag(&charge("u1", Some("globex"))[0]));
        assert_eq!(tag(&acme[0]), tag(&charge("u2", Some("acme"))[0]), "one license's inviters share its slot");
        assert_ne!(tag(&charge("u1", None)[0]), tag(&charge("u2", None)[0]));
        // A user id that happens to equal a license id lands elsewhere.
        assert_ne!(tag(&charge("acme", None)[0]), tag(&acme[0]));
    }
}
