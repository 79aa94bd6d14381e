//! Caching that is never needed and never stale: every Redis call fails fast, and after a
//! failure Redis is skipped for a few seconds, so that with Redis down each request goes
//! straight to the system of record instead of waiting on a dead connection.
//!
//! Answers that must never outlive a change (memberships, items, "may share") are grouped
//! under a *generation*: a random token per group in Redis, replaced by every change before
//! the change is acknowledged. The answers themselves stay in the memory of the process that
//! read them ([`Tagged`]), each tagged with the generation read *before* the store was read;
//! an answer is served only while its group's generation is still that token. So a reader
//! that raced a change can never serve its answer after the change, on any replica, and a
//! warm read costs one pipelined Redis round trip for every generation it depends on
//! ([`Cache::generations`]) and nothing else. A missing generation (first use, or Redis
//! lost its data) is created with a fresh token in the same command, so a Redis that forgot
//! everything can never make an old answer current again. Without Redis no generation is
//! known and nothing is served from memory.

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::SetOptions;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;

/// How long Redis is skipped after a failed call.
const BACKOFF: Duration = Duration::from_secs(5);

/// How long a failed invalidation is retried in the background: past the longest entry
/// lifetime, whatever it missed has expired anyway.
const RETRY_INVALIDATION_FOR: Duration = Duration::from_secs(120);

/// How long a generation lives in Redis after it was made: a key per folder and per user
/// must not stay forever (deleted folders, ids that were only asked about). An expired
/// generation is made afresh by the next reader, which retires every answer kept under it,
/// so expiry is always safe; it is far longer than any answer is kept.
const GENERATION_LIFETIME: Duration = Duration::from_secs(3600);

/// A group's generation as read before a store read; see [`Cache::generations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    token: Option<Arc<str>>,
}

impl Generation {
    /// A generation that is not known (Redis unusable): nothing is served or kept under it.
    pub fn unknown() -> Self {
        Generation { token: None }
    }

    /// Whether the generation is known, so that answers may be served and kept under it.
    pub fn is_known(&self) -> bool {
        self.token.is_some()
    }

    /// Both generations at once, for answers that depend on two groups: it changes when
    /// either does, and is unknown when either is.
    pub fn and(&self, other: &Generation) -> Generation {
        match (&self.token, &other.token) {
            (Some(a), Some(b)) => Generation { token: Some(Arc::from(format!("{a}/{b}"))) },
            _ => Generation::unknown(),
        }
    }
}

/// Redis, used for generations only (callers keep answers in memory, [`Tagged`]).
#[derive(Clone)]
pub struct Cache {
    client: Option<fred::clients::Client>,
    started: Instant,
    skip_until_ms: Arc<AtomicU64>,
    /// Bumped on every reconnection and every failed call: a Redis that came back may have
    /// lost recent writes (an append-only file synced every second, a restored snapshot, a
    /// failover to a lagging replica) and hand out an older generation again, so answers
    /// kept before are retired with the connection they were read over.
    era: Arc<AtomicU64>,
    lookups: Counter<u64>,
    failures: Counter<u64>,
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
            .u64_counter("cache.generation_reads")
            .with_description("generation reads by outcome (ok, error, skipped)")
            .build();
        let failures = opentelemetry::global::meter("teamshare")
            .u64_counter("redis.failures")
            .with_description("failed Redis calls by operation; each makes its caller skip Redis for a few seconds")
            .build();
        let era = Arc::new(AtomicU64::new(0));
        if let Some(client) = &client {
            use fred::interfaces::EventInterface;
            let on_reconnect = era.clone();
            client.on_reconnect(move |_| {
                on_reconnect.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            });
            let on_error = era.clone();
            client.on_error(move |_| {
                on_error.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            });
        }
        Cache { client, started: Instant::now(), skip_until_ms: Arc::new(AtomicU64::new(0)), era, lookups, failures }
    }

    /// The Redis client, whether or not it is worth trying now (see [`Cache::usable_now`]).
    pub fn client(&self) -> Option<&fred::clients::Client> {
        self.client.as_ref()
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
        self.era.fetch_add(1, Ordering::SeqCst);
        self.failures.add(1, &[KeyValue::new("op", op.to_owned())]);
        tracing::warn!(op, error = %e, "redis unavailable; skipping the cache for a few seconds");
    }

    /// The current generation of one group; see [`Cache::generations`].
    pub async fn generation(&self, gen_key: &str) -> Generation {
        self.generations(&[gen_key]).await.pop().unwrap_or_else(Generation::unknown)
    }

    /// The current generations of the groups at `gen_keys`, in order, read in one pipelined
    /// round trip before the store is read. A group without one gets a fresh token in the
    /// same command (`SET key token NX GET`, Redis 7). All are unknown when Redis is not
    /// usable. Each command touches one key, so the keys may live in different cluster slots.
    pub async fn generations(&self, gen_keys: &[&str]) -> Vec<Generation> {
        let unknown = || gen_keys.iter().map(|_| Generation::unknown()).collect();
        let Some(redis) = self.usable() else {
            self.lookups.add(1, &[KeyValue::new("outcome", "skipped")]);
            return unknown();
        };
        let era = self.era.load(Ordering::SeqCst);
        let pipeline = redis.pipeline();
        let fresh: Vec<String> = gen_keys.iter().map(|_| new_token()).collect();
        for (key, token) in gen_keys.iter().zip(&fresh) {
            let queued: Result<(), _> =
                pipeline.set(*key, token.as_str(), Some(lifetime()), Some(SetOptions::NX), true).await;
            if let Err(e) = queued {
                self.mark_failed("queue generation", &e);
                return unknown();
            }
        }
        match pipeline.all::<Vec<Option<String>>>().await {
            // Read over one connection era only: across a reconnection nothing is known.
            Ok(found) if found.len() == gen_keys.len() && self.era.load(Ordering::SeqCst) == era => {
                self.lookups.add(1, &[KeyValue::new("outcome", "ok")]);
                found
                    .into_iter()
                    .zip(fresh)
                    .map(|(old, set)| Generation { token: Some(Arc::from(format!("{era}:{}", old.unwrap_or(set)))) })
                    .collect()
            }
            Ok(_) => unknown(),
            Err(e) => {
                self.mark_failed("read generations", &e);
                self.lookups.add(1, &[KeyValue::new("outcome", "error")]);
                unknown()
            }
        }
    }

    /// After a change to a group, before it is acknowledged: a new generation, so that no
    /// answer read before the change is served again anywhere. Always tried, even while reads
    /// skip Redis; when Redis fails it is retried in the background until it lands or every
    /// answer it guards has expired (readers that cannot reach Redis serve nothing from
    /// memory meanwhile). Whether it landed now: when it did not, replicas that still reach
    /// Redis may serve what they kept until the retry lands, and callers whose change takes
    /// something away say so (UNAVAILABLE: saved, retry) instead of acknowledging it.
    pub async fn invalidate(&self, gen_key: &str) -> bool {
        let Some(redis) = self.client.clone() else { return true };
        let result = new_generation(&redis, gen_key).await;
        if let Err(e) = &result {
            self.mark_failed("invalidate", e);
            let cache = self.clone();
            let gen_key = gen_key.to_owned();
            tokio::spawn(async move {
                let until = Instant::now() + RETRY_INVALIDATION_FOR;
                let mut wait = Duration::from_millis(100);
                while Instant::now() < until {
                    tokio::time::sleep(wait).await;
                    match new_generation(&redis, &gen_key).await {
                        Ok(()) => return,
                        Err(e) => cache.mark_failed("invalidate retry", &e),
                    }
                    wait = next_wait(wait);
                }
                tracing::warn!("gave up an invalidation; its entries have expired by now");
            });
        }
        result.is_ok()
    }
}

/// The pause before the next retry of a failed invalidation: doubling, at most a second.
fn next_wait(wait: Duration) -> Duration {
    (wait * 2).min(Duration::from_secs(1))
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

async fn new_generation(redis: &fred::clients::Client, gen_key: &str) -> Result<(), fred::error::Error> {
    redis.set::<(), _, _>(gen_key, new_token(), Some(lifetime()), None, false).await
}

fn lifetime() -> Expiration {
    Expiration::EX(GENERATION_LIFETIME.as_secs() as i64)
}

/// Answers kept in this process, each tagged with the generation it was read under, bounded
/// in number (or in bytes, [`Tagged::weighed`]) and in age (a backstop: a generation change
/// is what retires an answer).
pub struct Tagged<K, V> {
    entries: moka::sync::Cache<K, (Arc<str>, V)>,
}

impl<K, V> std::fmt::Debug for Tagged<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagged").field("entries", &self.entries.entry_count()).finish()
    }
}

impl<K, V> Tagged<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// At most `max_entries` answers, each at most `max_age` old.
    pub fn new(max_entries: u64, max_age: Duration) -> Self {
        Tagged { entries: moka::sync::Cache::builder().max_capacity(max_entries).time_to_live(max_age).build() }
    }

    /// At most `max_bytes` of answers as `size` weighs them, each at most `max_age` old.
    pub fn weighed(max_bytes: u64, max_age: Duration, size: fn(&V) -> u32) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_: &K, (_, v): &(Arc<str>, V)| size(v))
            .time_to_live(max_age)
            .build();
        Tagged { entries }
    }

    /// The answer at `key`, if it was read under `current`.
    pub fn get(&self, key: &K, current: &Generation) -> Option<V> {
        let token = current.token.as_ref()?;
        let (tag, value) = self.entries.get(key)?;
        (tag == *token).then_some(value)
    }

    /// Keeps `value`, read from the store after `read_under` was read (not kept when that
    /// generation is unknown).
    pub fn insert(&self, key: K, read_under: &Generation, value: V) {
        if let Some(token) = &read_under.token {
            self.entries.insert(key, (token.clone(), value));
        }
    }

    /// What is kept at `key` under any generation, never to be served: a hint at which
    /// generations to read before the store is read (such as the folders a listing held).
    pub fn peek(&self, key: &K) -> Option<V> {
        self.entries.get(key).map(|(_, value)| value)
    }

    /// Forgets what is kept at `key` in this process (an erasure: memory must not keep a
    /// person's data until it expires; other processes' copies are retired by generation).
    pub fn remove(&self, key: &K) {
        self.entries.invalidate(key);
    }

    /// Keeps `value` as a hint only ([`Tagged::peek`]): no generation will ever match it.
    pub fn hint(&self, key: K, value: V) {
        self.entries.insert(key, (Arc::from(""), value));
    }
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

    #[tokio::test]
    async fn an_answer_read_before_an_invalidation_is_never_served_and_a_current_one_is() {
        let redis = start(Redis::free_port());
        let raw = redis.client().await;
        let cache = Cache::new(Some(raw.clone()));
        let answers: Tagged<&str, u32> = Tagged::new(100, Duration::from_secs(60));
        let (folder, epoch) = ("ts:{f:1}:gen", "ts:{sharing}:epoch");

        // A reader read the generations (and then the store) before a change landed.
        let before = cache.generations(&[folder, epoch]).await;
        assert!(before.iter().all(Generation::is_known), "a missing generation is created");
        assert_ne!(before[0], before[1], "each group has its own token");
        cache.invalidate(folder).await;
        answers.insert("member", &before[0], 1);
        let now = cache.generations(&[folder, epoch]).await;
        assert_eq!(answers.get(&"member", &now[0]), None, "an answer that raced a change outlived it");
        assert_eq!(now[1], before[1], "another group's generation did not move");

        // A reader that started after the change is served until the next change.
        answers.insert("member", &now[0], 2);
        assert_eq!(answers.get(&"member", &cache.generation(folder).await), Some(2));
        cache.invalidate(folder).await;
        assert_eq!(answers.get(&"member", &cache.generation(folder).await), None);
    }

    #[tokio::test]
    async fn a_redis_that_lost_its_data_never_makes_an_old_answer_current_again() {
        let redis = start(Redis::free_port());
        let raw = redis.client().await;
        let cache = Cache::new(Some(raw.clone()));
        let answers: Tagged<&str, u32> = Tagged::new(100, Duration::from_secs(60));
        let first = cache.generation("ts:{f:3}:gen").await;
        answers.insert("k", &first, 1);
        // The invalidation of a change made while Redis was away never landed, and Redis came
        // back empty: the generation must not read as what it was.
        raw.flushall::<()>(false).await.expect("flushall");
        let after = cache.generation("ts:{f:3}:gen").await;
        assert!(after.is_known());
        assert_eq!(answers.get(&"k", &after), None);
        assert_eq!(cache.generation("ts:{f:3}:gen").await, after, "the new generation is kept");
    }

    #[tokio::test]
    async fn answers_kept_before_redis_reconnected_are_retired_even_if_it_kept_its_data() {
        let port = Redis::free_port();
        let redis = start(port);
        let config = RedisConfig { url: format!("redis://127.0.0.1:{port}").into() };
        let cache = Cache::new(Some(crate::redis(&config, false).expect("client")));
        let answers: Tagged<&str, u32> = Tagged::new(100, Duration::from_secs(60));
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut first = cache.generation("ts:{f:4}:gen").await;
        while !first.is_known() {
            assert!(Instant::now() < deadline, "never connected");
            tokio::time::sleep(Duration::from_millis(50)).await;
            first = cache.generation("ts:{f:4}:gen").await;
        }
        answers.insert("k", &first, 1);
        // Redis restarts with its data (as after a crash with an append-only file that may
        // have lost the last second): the token in Redis is the same, but what was kept over
        // the old connection is not trusted.
        let raw = redis.client().await;
        let token: Option<String> = raw.get("ts:{f:4}:gen").await.expect("get");
        drop((raw, redis));
        let redis = start(port);
        let raw = redis.client().await;
        raw.set::<(), _, _>("ts:{f:4}:gen", token.expect("token"), None, None, false).await.expect("set");
        let mut after = cache.generation("ts:{f:4}:gen").await;
        while !after.is_known() {
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = cache.generation("ts:{f:4}:gen").await;
        }
        assert_eq!(answers.get(&"k", &after), None, "an answer kept over the old connection was served");
    }

    #[test]
    fn answers_are_bounded_by_their_weight() {
        let answers: Tagged<u32, Vec<u8>> = Tagged::weighed(10_000, Duration::from_secs(60), |v| v.len() as u32);
        let g = Generation { token: Some(Arc::from("t")) };
        for i in 0..100 {
            answers.insert(i, &g, vec![0; 1000]);
        }
        answers.entries.run_pending_tasks();
        assert!(answers.entries.weighted_size() <= 10_000, "{}", answers.entries.weighted_size());
        assert_eq!(answers.get(&0, &Generation::unknown()), None, "nothing is served under an unknown generation");
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
        assert!(!cache.generation("g").await.is_known(), "no generation: nothing is served or kept");
    }

    #[tokio::test]
    async fn a_failure_skips_redis_for_a_while_but_invalidations_are_retried_until_they_land() {
        let port = Redis::free_port();
        // A client for a Redis that is not there yet (as when a service starts before it):
        // it must connect once Redis is up.
        let config = RedisConfig { url: format!("redis://127.0.0.1:{port}").into() };
        let client = crate::redis(&config, false).expect("client");
        let cache = Cache::new(Some(client.clone()));
        assert!(cache.usable_now());
        assert!(!cache.generation("ts:{f:2}:gen").await.is_known(), "a failed read knows no generation");
        assert!(!cache.usable_now(), "after a failure Redis is skipped");

        // An invalidation is attempted even while reads skip Redis, and retried.
        cache.invalidate("ts:{f:2}:gen").await;
        let redis = start(port);
        let raw = redis.client().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while raw.get::<Option<String>, _>("ts:{f:2}:gen").await.expect("get").is_none() {
            assert!(Instant::now() < deadline, "the failed invalidation was never retried");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
