//! Connections to the stores: MongoDB (system of record, feature `mongo`, on by default) and
//! Redis (cache and counters). Both accept TLS and credentials in their URLs, and both refuse
//! to connect without TLS when `production = true`; neither is contacted until first use, so a
//! service starts even while a store is briefly away. The gateway, which owns no data, uses
//! Redis alone. With `mongo`, also the schema versions that `teamshare migrate` records.

use std::time::Duration;

use secrecy::ExposeSecret;
use ts_config::{ConfigError, RedisConfig};

pub mod cache;
#[cfg(feature = "mongo")]
mod mongo;
#[cfg(feature = "mongo")]
pub mod schema;
pub mod testing;

#[cfg(feature = "mongo")]
pub use mongo::{UNREADABLE, is_duplicate_key, is_unreadable, mongo, production_check, store_status};
#[cfg(feature = "mongo")]
pub use schema::{MIGRATIONS, Migration, Schema, SchemaError};

/// Builds a Redis client for the configured URL and starts connecting (and reconnecting)
/// in the background. Callers must treat Redis as optional: it is a cache and a home for
/// shared counters, never the system of record; every command fails within 500 ms. With
/// `production`, a URL without TLS is refused (see [`redis_production_check`]).
pub fn redis(config: &RedisConfig, production: bool) -> Result<fred::clients::Client, ConfigError> {
    use fred::prelude::*;
    let mut cfg = fred::types::config::Config::from_url(config.url.expose_secret())
        .map_err(|_| ConfigError::key("redis.url", "invalid redis URL"))?;
    redis_production_check(&cfg, production)?;
    // Redis down when a service starts must not mean "never connect": the reconnect policy
    // applies to the first connection too (fred's default gives up after one try).
    cfg.fail_fast = false;
    let client = Builder::from_config(cfg)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        // A cache must fail fast: callers fall back to MongoDB or in-process limits.
        .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(500))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|_| ConfigError::key("redis.url", "invalid redis configuration"))?;
    let _connection_task = client.connect();
    Ok(client)
}

/// With `production`, refuses a Redis configuration without TLS, naming `redis.url` and never
/// quoting it (it may carry a password). fred 10 reads TLS from the URL's scheme: a scheme
/// that starts with `rediss` or `valkeys` (`rediss://`, `rediss-cluster://`,
/// `rediss-sentinel://`) gets a rustls configuration with the system's root certificates,
/// any other (`redis://`, `redis-cluster://`, …) none; the parsed configuration is what is
/// checked, so no spelling of the scheme slips past.
pub fn redis_production_check(cfg: &fred::types::config::Config, production: bool) -> Result<(), ConfigError> {
    if production && cfg.tls.is_none() {
        return Err(ConfigError::key(
            "redis.url",
            "production = true requires TLS to Redis: use a rediss:// URL (rediss-cluster:// for a Redis Cluster)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ts_config::RedisConfig;

    fn config(url: &str) -> RedisConfig {
        RedisConfig { url: url.to_owned().into() }
    }

    #[test]
    fn production_refuses_redis_without_tls_and_never_quotes_the_url() {
        for url in [
            "redis://:hunter2@cache.internal:6379",
            "redis-cluster://:hunter2@cache.internal:6379?node=cache2.internal:6379",
            "valkey://:hunter2@cache.internal:6379",
        ] {
            let e = super::redis(&config(url), true).unwrap_err().to_string();
            assert!(e.contains("redis.url") && e.contains("production"), "{url}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("cache.internal"), "{url}: {e}");
        }
        // fred builds its rustls configuration while parsing a TLS URL.
        let _ = fred::rustls::crypto::ring::default_provider().install_default();
        for url in ["rediss://:pw@cache.internal:6379", "rediss-cluster://:pw@cache.internal:6379"] {
            let cfg = fred::types::config::Config::from_url(url).unwrap();
            assert!(super::redis_production_check(&cfg, true).is_ok(), "{url}");
        }
        // Development keeps plain redis://.
        let plain = fred::types::config::Config::from_url("redis://127.0.0.1:6379").unwrap();
        assert!(super::redis_production_check(&plain, false).is_ok());
    }
}
