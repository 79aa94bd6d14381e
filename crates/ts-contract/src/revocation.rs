//! Where session revocations live in Redis, shared by auth (which writes them) and the
//! gateway (which reads them).
//!
//! Every key carries the hash tag `{revocations}`, so a revocation key and the freshness key
//! sit in one slot and the gateway reads both with one `MGET`, also on a Redis Cluster.
//! Auth refreshes the freshness key (with a short Redis-side expiry) only after it has
//! published every revocation it acknowledged before that moment; while the key exists, "no
//! revocation key" is a trustworthy answer. When it has expired (auth cannot write, or Redis
//! lost it) the gateway asks auth instead. Expiry is measured by Redis's own clock, so no two
//! hosts' clocks are compared.

use std::time::Duration;

/// A key with no expiry that auth writes once every revocation that may still matter is in
/// Redis. Redis that lost its data (a restart without persistence, `FLUSHALL`, a failover to
/// an empty replica) loses it too; auth then publishes every recent revocation again before
/// it vouches for the view once more.
pub const EPOCH_KEY: &str = "ts:{revocations}:epoch";

/// Sets KEYS[1] (the freshness key) for ARGV[1] ms only while KEYS[2] (the epoch) exists.
/// Returns 1 when it vouched, 0 when the epoch is gone.
pub const VOUCH_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[1]))
return 1
"#;

/// The key marking a view as fresh; it expires `FRESH_FOR` after auth last vouched for it.
pub const FRESH_KEY: &str = "ts:{revocations}:fresh";
/// How long one vouching lasts. With the time auth may spend before vouching, it bounds how
/// late a revocation can take effect through Redis.
pub const FRESH_FOR: Duration = Duration::from_millis(1000);
/// How often auth vouches (and drains its outbox).
pub const VOUCH_EVERY: Duration = Duration::from_millis(250);
/// A vouching that would come later than this after auth looked at its outbox is skipped,
/// so that the view it vouches for is never older than `VOUCH_BUDGET + FRESH_FOR`.
pub const VOUCH_BUDGET: Duration = Duration::from_millis(500);
/// The longest any revocation call to Redis may take before it counts as failed.
pub const REDIS_WAIT: Duration = Duration::from_millis(500);

/// The generation of every "may share" answer (see `ts_stores::cache`). Auth replaces it
/// after any change that can take sharing away from someone (a license blocked, a Team
/// Sharing switch turned off, a license's emails or domains replaced, a user made to verify
/// again) and before it acknowledges the change, and when it starts (its configured default
/// may have changed). Services that keep auth's "allowed" answers serve them only while it
/// is unchanged, so the very next request after such a change asks auth again.
pub const SHARING_EPOCH_KEY: &str = "ts:{sharing}:epoch";

/// The Redis key marking session `sid` revoked (a session id alone grants nothing).
pub fn revoked_key(sid: &str) -> String {
    format!("ts:{{revocations}}:session:{sid}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn revocation_keys_share_the_freshness_keys_slot() {
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_owned();
        assert_eq!(tag(&super::revoked_key("abc")), tag(super::FRESH_KEY));
        assert_eq!(tag(super::EPOCH_KEY), tag(super::FRESH_KEY));
    }
}
