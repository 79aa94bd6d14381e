//! A bounded in-memory cache of plaintext data keys: each entry lives at most `max_age` and
//! serves at most `max_uses` look-ups, and the cache holds at most `max_entries`. Evicted
//! keys are zeroized when dropped. Time is `tokio::time`, so tests pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::DataKey;

/// Bounds on cached plaintext keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// Longest time an entry is served after it was inserted.
    pub max_age: Duration,
    /// Most look-ups one entry serves before it must be fetched again.
    pub max_uses: u64,
    /// Most entries held; the oldest is evicted first.
    pub max_entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits { max_age: Duration::from_secs(300), max_uses: 100_000, max_entries: 10_000 }
    }
}

struct Entry {
    key: DataKey,
    inserted: Instant,
    uses: u64,
}

/// Plaintext data keys by `(folder_id, version)`.
pub struct KeyCache {
    limits: CacheLimits,
    entries: Mutex<HashMap<(String, u32), Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache").field("limits", &self.limits).field("len", &self.len()).finish()
    }
}

impl KeyCache {
    /// An empty cache.
    pub fn new(limits: CacheLimits) -> Self {
        KeyCache { limits, entries: Mutex::new(HashMap::new()), hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Entry>> {
        // A panic while holding the lock cannot leave an entry half-updated, so poison is moot.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key, if cached and within its bounds; counts one use.
    pub fn get(&self, folder_id: &str, version: u32) -> Option<DataKey> {
        let mut entries = self.lock();
        let id = (folder_id.to_owned(), version);
        let found = match entries.get_mut(&id) {
            Some(e) if e.inserted.elapsed() < self.limits.max_age && e.uses < self.limits.max_uses => {
                e.uses += 1;
                Some(e.key.clone())
            }
            Some(_) => {
                entries.remove(&id);
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Caches a key (its first use is the caller's own).
    pub fn insert(&self, folder_id: &str, key: DataKey) {
        let mut entries = self.lock();
        if entries.len() >= self.limits.max_entries {
            let now = Instant::now();
            entries
                .retain(|_, e| now.duration_since(e.inserted) < self.limits.max_age && e.uses < self.limits.max_uses);
            while entries.len() >= self.limits.max_entries {
                let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.inserted).map(|(k, _)| k.clone()) else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        let version = key.version();
        entries.insert((folder_id.to_owned(), version), Entry { key, inserted: Instant::now(), uses: 1 });
    }

    /// Forgets every version of a folder's key (rotation retired some, or the folder is gone).
    pub fn evict_folder(&self, folder_id: &str) {
        self.lock().retain(|(f, _), _| f != folder_id);
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Look-ups served from the cache, and look-ups that missed.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CacheLimits {
        CacheLimits { max_age: Duration::from_secs(60), max_uses: 3, max_entries: 2 }
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_by_age() {
        let c = KeyCache::new(limits());
        c.insert("f", DataKey::new(1, [1; 32]));
        assert!(c.get("f", 1).is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(c.get("f", 1).is_none());
        assert!(c.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_by_uses() {
        let c = KeyCache::new(limits());
        c.insert("f", DataKey::new(1, [1; 32]));
        assert!(c.get("f", 1).is_some());
        assert!(c.get("f", 1).is_some());
        assert!(c.get("f", 1).is_none(), "insert counts as the first of 3 uses");
        assert_eq!(c.stats(), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn size_is_bounded_and_folders_evict() {
        let c = KeyCache::new(limits());
        c.insert("a", DataKey::new(1, [1; 32]));
        tokio::time::advance(Duration::from_secs(1)).await;
        c.insert("b", DataKey::new(1, [2; 32]));
        c.insert("c", DataKey::new(1, [3; 32]));
        assert_eq!(c.len(), 2);
        assert!(c.get("a", 1).is_none(), "oldest went first");
        c.evict_folder("b");
        assert!(c.get("b", 1).is_none());
        assert!(c.get("c", 1).is_some());
    }
}
