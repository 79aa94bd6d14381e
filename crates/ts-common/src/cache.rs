//! A Redis-backed cache that is never needed: every call fails fast, and after a failure
//! Redis is skipped for a few seconds, so that with Redis down each request goes straight to
//! MongoDB instead of waiting on a dead connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// How long Redis is skipped after a failed call.
const BACKOFF: Duration = Duration::from_secs(5);

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
