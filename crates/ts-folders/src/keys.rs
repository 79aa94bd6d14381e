//! The folders service's access to data keys: fetched from keyvault over mTLS and cached in
//! memory within the configured bounds. Plaintext keys never leave this process. Keyvault's
//! answers become `FoldersError` here, where they arrive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tonic::{Code, Status};
use ts_crypto::{CacheLimits, DataKey, KeyCache};
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::{
    CreateDataKeyRequest, DestroyDataKeysRequest, GetDataKeyRequest, RetireDataKeyVersionsRequest, RotateDataKeyRequest,
};
use ts_runtime::client::InternalChannel;

use crate::error::{FoldersError, KeyvaultRefusal};

/// Data keys for folders, through keyvault, with a bounded plaintext cache.
pub struct FolderKeys {
    client: KeyVaultServiceClient<InternalChannel>,
    cache: Arc<KeyCache>,
    /// Keyvault calls under way for versions not in the cache: concurrent readers of one
    /// cold key share one call (a listing of 50 folders read by 64 callers at once asked for
    /// 3,200 keys instead of 50).
    fetching: Arc<Mutex<Fetching>>,
}

/// The keyvault calls under way, and how many times keys were forgotten.
#[derive(Default)]
struct Fetching {
    /// A call caches its key only while it is still registered here: forgetting a folder
    /// removes its calls, so a key fetched across a retirement or destruction is not cached.
    running: HashMap<(String, u32), (u64, Fetch)>,
    next: u64,
    /// Bumped by every retirement and destruction, for `newest` (which is not registered):
    /// a newest key fetched across one is returned but not cached.
    erasures: u64,
}

/// Leaves the in-flight map when its call ends, however it ends (a panic too), so that a
/// failed call is never handed to later readers.
struct Registered {
    fetching: Arc<Mutex<Fetching>>,
    which: (String, u32),
    id: u64,
}

/// The in-flight map, locked (no lock holder leaves it half-changed, so poison is moot).
fn lock(fetching: &Mutex<Fetching>) -> std::sync::MutexGuard<'_, Fetching> {
    fetching.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registered {
    fn current(fetching: &Fetching, which: &(String, u32), id: u64) -> bool {
        fetching.running.get(which).is_some_and(|(running, _)| *running == id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut fetching = lock(&self.fetching);
        // A newer call for the same key that replaced this one is left alone.
        if Registered::current(&fetching, &self.which, self.id) {
            fetching.running.remove(&self.which);
        }
    }
}

/// One keyvault call, run as its own task (so that it finishes, fills the cache and leaves
/// the map even when every reader who wanted it has gone), which every concurrent reader of
/// the key awaits.
type Fetch = Shared<BoxFuture<'static, Result<DataKey, FetchError>>>;

/// A failed fetch, as every reader that shared it sees it.
#[derive(Debug, Clone)]
enum FetchError {
    Refused(KeyvaultRefusal, String),
    Unavailable,
    Unreadable,
    Malformed,
}

impl From<FetchError> for FoldersError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Refused(refusal, message) => FoldersError::Keyvault { refusal, message },
            FetchError::Unavailable => FoldersError::KeysUnavailable,
            FetchError::Unreadable => FoldersError::KeysUnreadable,
            FetchError::Malformed => FoldersError::MalformedKey,
        }
    }
}

impl From<FoldersError> for FetchError {
    fn from(e: FoldersError) -> Self {
        match e {
            FoldersError::Keyvault { refusal, message } => FetchError::Refused(refusal, message),
            FoldersError::KeysUnavailable => FetchError::Unavailable,
            FoldersError::MalformedKey => FetchError::Malformed,
            // `from_keyvault` and `key_from` make no other error.
            _ => FetchError::Unreadable,
        }
    }
}

impl std::fmt::Debug for FolderKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderKeys").field("cache", &self.cache).finish_non_exhaustive()
    }
}

/// Keeps keyvault's caller-facing refusals as they came, and hides the rest behind
/// UNAVAILABLE (keyvault unreachable) or INTERNAL (logged).
fn from_keyvault(s: Status) -> FoldersError {
    let refusal = match s.code() {
        Code::NotFound => KeyvaultRefusal::NotFound,
        Code::InvalidArgument => KeyvaultRefusal::InvalidArgument,
        Code::FailedPrecondition => KeyvaultRefusal::FailedPrecondition,
        Code::Unavailable | Code::DeadlineExceeded => return FoldersError::KeysUnavailable,
        _ => {
            tracing::error!(code = ?s.code(), message = s.message(), "keyvault failed");
            return FoldersError::KeysUnreadable;
        }
    };
    FoldersError::Keyvault { refusal, message: s.message().to_owned() }
}

fn key_from(version: u32, bytes: &[u8]) -> Result<DataKey, FoldersError> {
    DataKey::from_slice(version, bytes).ok_or(FoldersError::MalformedKey)
}

impl FolderKeys {
    /// Keys through `client`, cached within `limits`.
    pub fn new(client: KeyVaultServiceClient<InternalChannel>, limits: CacheLimits) -> Self {
        FolderKeys { client, cache: Arc::new(KeyCache::new(limits)), fetching: Arc::default() }
    }

    /// Creates a folder's first key version.
    pub async fn create(&self, folder_id: &str) -> Result<u32, FoldersError> {
        let req = CreateDataKeyRequest { folder_id: folder_id.to_owned() };
        Ok(self.client.clone().create_data_key(req).await.map_err(from_keyvault)?.into_inner().version)
    }

    /// The newest version, for writes. Always asks keyvault, so a rotation takes effect at
    /// once; the answer also warms the cache for reads.
    pub async fn newest(&self, folder_id: &str) -> Result<DataKey, FoldersError> {
        let erasures = lock(&self.fetching).erasures;
        let req = GetDataKeyRequest { folder_id: folder_id.to_owned(), version: 0 };
        let resp = self.client.clone().get_data_key(req).await.map_err(from_keyvault)?.into_inner();
        let key = key_from(resp.version, &resp.key)?;
        let fetching = lock(&self.fetching);
        if fetching.erasures == erasures {
            self.cache.insert(folder_id, key.clone());
        }
        Ok(key)
    }

    /// A given version, for reads; from the cache while it is within its bounds, else one
    /// keyvault call shared by every concurrent reader of that version.
    pub async fn version(&self, folder_id: &str, version: u32) -> Result<DataKey, FoldersError> {
        if let Some(key) = self.cache.get(folder_id, version) {
            return Ok(key);
        }
        let which = (folder_id.to_owned(), version);
        let fetch = {
            let mut fetching = lock(&self.fetching);
            match fetching.running.get(&which) {
                Some((_, fetch)) => fetch.clone(),
                None => {
                    fetching.next += 1;
                    let id = fetching.next;
                    let fetch = self.fetch(which.clone(), id);
                    fetching.running.insert(which, (id, fetch.clone()));
                    fetch
                }
            }
        };
        Ok(fetch.await?)
    }

    /// Forgets a folder's keys. Under the lock that fills the cache: the folder's calls under
    /// way are unregistered (so they fill nothing, and a reader who comes after starts a call
    /// of its own), the erasure count moves (for `newest`), and the cache is emptied.
    fn forget(&self, folder_id: &str) {
        let mut fetching = lock(&self.fetching);
        fetching.erasures += 1;
        fetching.running.retain(|(f, _), _| f != folder_id);
        self.cache.evict_folder(folder_id);
    }

    /// Starts the keyvault call for `which`, known to the map as `id`.
    fn fetch(&self, which: (String, u32), id: u64) -> Fetch {
        let (mut client, cache) = (self.client.clone(), self.cache.clone());
        let registered = Registered { fetching: self.fetching.clone(), which, id };
        let task = tokio::spawn(async move {
            let which = &registered.which;
            let req = GetDataKeyRequest { folder_id: which.0.clone(), version: which.1 };
            let fetched = async {
                let resp = client.get_data_key(req).await.map_err(from_keyvault)?.into_inner();
                key_from(resp.version, &resp.key)
            }
            .await
            .map_err(FetchError::from);
            if let Ok(key) = &fetched {
                let fetching = lock(&registered.fetching);
                if Registered::current(&fetching, which, registered.id) {
                    cache.insert(&which.0, key.clone());
                }
            }
            // Done, for everyone who shared it (`registered` leaves the map): the next
            // reader finds the cache or starts afresh.
            drop(registered);
            fetched
        });
        async move { task.await.unwrap_or(Err(FetchError::Unreadable)) }.boxed().shared()
    }

    /// Adds a version at keyvault.
    pub async fn rotate(&self, folder_id: &str) -> Result<u32, FoldersError> {
        let req = RotateDataKeyRequest { folder_id: folder_id.to_owned() };
        Ok(self.client.clone().rotate_data_key(req).await.map_err(from_keyvault)?.into_inner().version)
    }

    /// Retires versions older than `keep_from` at keyvault and here.
    pub async fn retire(&self, folder_id: &str, keep_from: u32) -> Result<u32, FoldersError> {
        let req = RetireDataKeyVersionsRequest { folder_id: folder_id.to_owned(), keep_from_version: keep_from };
        let retired =
            self.client.clone().retire_data_key_versions(req).await.map_err(from_keyvault)?.into_inner().retired;
        self.forget(folder_id);
        Ok(retired)
    }

    /// Destroys every version at keyvault and forgets them here (crypto-erasure).
    pub async fn destroy(&self, folder_id: &str) -> Result<u32, FoldersError> {
        let req = DestroyDataKeysRequest { folder_id: folder_id.to_owned() };
        let destroyed = self.client.clone().destroy_data_keys(req).await.map_err(from_keyvault)?.into_inner().destroyed;
        self.forget(folder_id);
        Ok(destroyed)
    }

    /// Cache hits and misses.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }
}
