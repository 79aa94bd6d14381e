//! A Redis-backed cache that is never needed: every call fails fast, and after a failure
//! Redis is skipped for a few seconds, so that with Redis down each request goes straight to
//! MongoDB instead of waiting on a dead connection.
//!
//! Entries that must never outlive a change (memberships, items) are grouped under a
//! *generation*: a random token per group, replaced by every change. A reader that misses
//! reads the generation before it reads the store, and writes its answer only if the
//! generation is still the same (compare-and-set in one Lua call), so an answer read before
//! a change can never be written after that change's invalidation, on any replica. The
//! generation key and its entries share a hash tag, so each call stays in one cluster slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// How long Redis is skipped after a failed call.
const BACKOFF: Duration = Duration::from_secs(5);

/// Writes ARGV[2] at KEYS[2] for ARGV[3] seconds if the generation at KEYS[1] is still ARGV[1]
/// (an absent generation reads as the empty string). Returns 1 when written.
const SET_IF_GENERATION: &str = r#"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1
"#;

/// Replaces the generation at KEYS[1] with ARGV[1] and deletes KEYS[2..].
const NEW_GENERATION: &str = r#"
redis.call('SET', KEYS[1], ARGV[1])
for i = 2, #KEYS do redis.call('DEL', KEYS[i]) end
return 1
"#;

/// How long a failed invalidation is retried in the background: past the longest entry
/// lifetime, whatever it missed has expired anyway.
const RETRY_INVALIDATION_FOR: Duration = Duration::from_secs(120);

/// A generation read before a store read; see [`Cache::generation`].
#[derive(Debug, Clone)]
pub struct Generation {
    key: String,
    token: Option<String>,
}

/// An optional Redis cache of opaque bytes (callers store ciphertext or ids, never secrets).
#[derive(Clone)]
pub struct Cache {
    client: Option<fred::clients::Client>,
    started: Instant,
    skip_until_ms: Arc<AtomicU64>,
    lookups: Counter<u64>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("redis", &self.client.is_some()).finish()
    }
}

impl Cache {
    /// A cache over `client`; `None` caches nothing.
    pub fn new(client: Option<fred::clients::Client>) -> Self {
        let lookups = opentelemetry::global::meter("teamshare")
            .u64_counter("cache.lookups")
            .with_description("cache look-ups by outcome (hit, miss, error)")
            .build();
        Cache { client, started: Instant::now(), skip_until_ms: Arc::new(AtomicU64::new(0)), lookups }
    }

    /// Whether Redis is worth trying now (it has not failed in the last few seconds).
    pub fn usable_now(&self) -> bool {
        self.usable().is_some()
    }

    fn usable(&self) -> Option<&fred::clients::Client> {
        let now = self.started.elapsed().as_millis() as u64;
        if now < self.skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        self.client.as_ref()
    }

    /// Records a failed Redis call (also one made outside this cache), so that Redis is
    /// skipped for a few seconds.
    pub fn mark_failed(&self, op: &str, e: &fred::error::Error) {
        let until = (self.started.elapsed() + BACKOFF).as_millis() as u64;
        self.skip_until_ms.store(until, Ordering::Relaxed);
        tracing::warn!(op, error = %e, "redis unavailable; skipping the cache for a few seconds");
    }

    /// The cached value, if any (a Redis failure reads as a miss).
    pub async fn get(&self, key: &str) -> Option<Vec<u8>> {
        let redis = self.usable()?;
        let outcome = match redis.get::<Option<Vec<u8>>, _>(key).await {
            Ok(v) => v,
            Err(e) => {
                self.mark_failed("get", &e);
                self.lookups.add(1, &[KeyValue::new("outcome", "error")]);
                return None;
            }
        };
        self.lookups.add(1, &[KeyValue::new("outcome", if outcome.is_some() { "hit" } else { "miss" })]);
        outcome
    }

    /// Caches a value for `ttl`.
    pub async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        let Some(redis) = self.usable() else { return };
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        if let Err(e) = redis.set::<(), _, _>(key, value, Some(Expiration::EX(secs)), None, false).await {
            self.mark_failed("set", &e);
        }
    }

    /// The current generation of the group at `gen_key`, read before the store is: pass it to
    /// [`Cache::set_if_generation`] with what the store answered. `None` inside when Redis is
    /// not usable (nothing will be written).
    pub async fn generation(&self, gen_key: &str) -> Generation {
        let token = match self.usable() {
            Some(redis) => match redis.get::<Option<String>, _>(gen_key).await {
                Ok(v) => Some(v.unwrap_or_default()),
                Err(e) => {
                    self.mark_failed("get generation", &e);
                    None
                }
            },
            None => None,
        };
        Generation { key: gen_key.to_owned(), token }
    }

    /// Caches `value` at `key` for `ttl` only if the group's generation is still `read`: an
    /// answer that raced with a change is dropped instead of outliving it.
    pub async fn set_if_generation(&self, read: &Generation, key: &str, value: Vec<u8>, ttl: Duration) {
        let Some(token) = &read.token else { return };
        let Some(redis) = self.usable() else { return };
        let secs = ttl.as_secs().max(1).to_string();
        let args: Vec<fred::types::Value> = vec![token.clone().into(), value.as_slice().into(), secs.into()];
        if let Err(e) =
            redis.eval::<i64, _, _, _>(SET_IF_GENERATION, vec![read.key.clone(), key.to_owned()], args).await
        {
            self.mark_failed("set if generation", &e);
        }
    }

    /// After a change to a group: a new generation (so in-flight fills of older answers are
    /// dropped) and its `keys` forgotten, in one call. Always tried, even while reads skip
    /// Redis; when Redis fails it is retried in the background until it lands or every
    /// entry it guards has expired.
    pub async fn invalidate(&self, gen_key: &str, keys: &[String]) {
        let Some(redis) = self.client.clone() else { return };
        let mut all = Vec::with_capacity(keys.len() + 1);
        all.push(gen_key.to_owned());
        all.extend(keys.iter().cloned());
        if let Err(e) = new_generation(&redis, &all).await {
            self.mark_failed("invalidate", &e);
            let cache = self.clone();
            tokio::spawn(async move {
                let until = Instant::now() + RETRY_INVALIDATION_FOR;
                let mut wait = Duration::from_millis(100);
                while Instant::now() < until {
                    tokio::time::sleep(wait).await;
                    match new_generation(&redis, &all).await {
                        Ok(()) => return,
                        Err(e) => cache.mark_failed("invalidate retry", &e),
                    }
                    wait = next_wait(wait);
                }
                tracing::warn!("gave up an invalidation; its entries have expired by now");
            });
        }
    }

    /// Forgets keys; call after every change to what they cache. Always tried, even while
    /// reads skip Redis: a missed invalidation would serve stale entries once it is back
    /// (bounded by their short TTL).
    pub async fn delete(&self, keys: &[String]) {
        let Some(redis) = self.client.as_ref() else { return };
        if keys.is_empty() {
            return;
        }
        if let Err(e) = redis.del::<(), _>(keys.to_vec()).await {
            self.mark_failed("del", &e);
        }
    }
}

/// The pause before the next retry of a failed invalidation: doubling, at most a second.
fn next_wait(wait: Duration) -> Duration {
    (wait * 2).min(Duration::from_secs(1))
}

async fn new_generation(redis: &fred::clients::Client, keys: &[String]) -> Result<(), fred::error::Error> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    redis.eval::<i64, _, _, _>(NEW_GENERATION, keys.to_vec(), vec![token]).await.map(drop)
}

#[cfg(test)]
mod tests {
    //! Against a real `redis-server` (deploy/install-prereqs.sh installs it) on a free port.
    use super::*;
    use ts_config::RedisConfig;

    use crate::testing::LocalRedis as Redis;

    fn start(port: u16) -> Redis {
        Redis::start_on(port).expect("redis-server is installed (deploy/install-prereqs.sh)")
    }

    async fn ttl(client: &fred::clients::Client, key: &str) -> i64 {
        client.ttl::<i64, _>(key).await.expect("ttl")
    }

    #[tokio::test]
    async fn a_fill_read_before_an_invalidation_is_dropped_and_a_current_one_lands() {
        let redis = start(Redis::free_port());
        let raw = redis.client().await;
        let cache = Cache::new(Some(raw.clone()));
        let (gen_key, key) = ("ts:{f:1}:gen", "ts:{f:1}:item:a");

        // A reader read the generation (and then the store) before a change landed.
        let before = cache.generation(gen_key).await;
        cache.invalidate(gen_key, &[key.to_owned()]).await;
        cache.set_if_generation(&before, key, b"old".to_vec(), Duration::from_secs(60)).await;
        assert_eq!(cache.get(key).await, None, "a fill that raced a change outlived it");

        // A reader that started after the change fills, for its TTL.
        let after = cache.generation(gen_key).await;
        cache.set_if_generation(&after, key, b"new".to_vec(), Duration::from_secs(7)).await;
        assert_eq!(cache.get(key).await.as_deref(), Some(&b"new"[..]));
        assert!((1..=7).contains(&ttl(&raw, key).await), "the entry expires with its TTL");

        // Every change starts a new generation and forgets the entries named.
        cache.invalidate(gen_key, &[key.to_owned()]).await;
        assert_eq!(cache.get(key).await, None);
        let third = cache.generation(gen_key).await;
        assert!(third.token.is_some() && third.token != after.token && after.token != before.token);
        assert!(raw.get::<Option<String>, _>(gen_key).await.expect("get").is_some_and(|t| t.len() == 32));
    }

    #[tokio::test]
    async fn plain_entries_expire_and_are_deleted() {
        let redis = start(Redis::free_port());
        let raw = redis.client().await;
        let cache = Cache::new(Some(raw.clone()));
        cache.set("k1", b"v".to_vec(), Duration::from_secs(30)).await;
        cache.set("k2", b"v".to_vec(), Duration::from_millis(10)).await;
        assert!((1..=30).contains(&ttl(&raw, "k1").await));
        assert_eq!(ttl(&raw, "k2").await, 1, "a sub-second TTL is rounded up, never 0 (no expiry)");
        cache.delete(&[]).await;
        cache.delete(&["k1".to_owned(), "k2".to_owned()]).await;
        assert_eq!((cache.get("k1").await, cache.get("k2").await), (None, None));
    }

    #[test]
    fn retries_back_off_to_a_second() {
        let waits: Vec<u128> = std::iter::successors(Some(Duration::from_millis(100)), |w| Some(next_wait(*w)))
            .take(6)
            .map(|w| w.as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }

    #[tokio::test]
    async fn without_redis_nothing_is_cached_and_nothing_waits() {
        let cache = Cache::new(None);
        assert_eq!(format!("{cache:?}"), "Cache { redis: false }");
        assert!(!cache.usable_now());
        cache.set("k", b"v".to_vec(), Duration::from_secs(1)).await;
        assert_eq!(cache.get("k").await, None);
        let g = cache.generation("g").await;
        assert!(g.token.is_none(), "no generation: no fill will be written");
    }

    #[tokio::test]
    async fn a_failure_skips_redis_for_a_while_but_invalidations_are_retried_until_they_land() {
        let port = Redis::free_port();
        // A client for a Redis that is not there yet (as when a service starts before it):
        // it must connect once Redis is up.
        let config = RedisConfig { url: format!("redis://127.0.0.1:{port}").into() };
        let client = crate::redis(&config).expect("client");
        let cache = Cache::new(Some(client.clone()));
        assert!(cache.usable_now());
        assert_eq!(cache.get("k").await, None, "a failed read is a miss");
        assert!(!cache.usable_now(), "after a failure Redis is skipped");
        let g = cache.generation("ts:{f:2}:gen").await;
        assert!(g.token.is_none(), "while skipped no generation is read, so nothing is filled");

        // An invalidation is attempted even while reads skip Redis, and retried.
        cache.invalidate("ts:{f:2}:gen", &["ts:{f:2}:item:x".to_owned()]).await;
        let redis = start(port);
        let raw = redis.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while raw.get::<Option<String>, _>("ts:{f:2}:gen").await.expect("get").is_none() {
            assert!(Instant::now() < deadline, "the failed invalidation was never retried");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
