//! Connections to the stores: MongoDB (system of record, feature `mongo`, on by default) and
//! Redis (cache and counters). Both accept TLS and credentials in their URLs; neither is
//! contacted until first use, so a service starts even while a store is briefly away. The
//! gateway, which owns no data, uses Redis alone.

use std::time::Duration;

use secrecy::ExposeSecret;
use ts_config::{ConfigError, RedisConfig};

pub mod cache;
#[cfg(feature = "mongo")]
mod mongo;
pub mod testing;

#[cfg(feature = "mongo")]
pub use mongo::{UNREADABLE, is_duplicate_key, is_unreadable, mongo, store_status};

/// Builds a Redis client for the configured URL and starts connecting (and reconnecting)
/// in the background. Callers must treat Redis as optional: it is a cache and a home for
/// shared counters, never the system of record; every command fails within 500 ms.
pub fn redis(config: &RedisConfig) -> Result<fred::clients::Client, ConfigError> {
    use fred::prelude::*;
    let mut cfg = fred::types::config::Config::from_url(config.url.expose_secret())
        .map_err(|_| ConfigError::key("redis.url", "invalid redis URL"))?;
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
