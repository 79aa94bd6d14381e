//! The key vault's logic, independent of gRPC: create, fetch, rotate, retire and destroy
//! per-folder data keys, and rewrap them all under a new master key.

use std::sync::Arc;

use ts_crypto::{CacheLimits, DataKey, KeyCache};

use crate::kms::{KeyContext, Kms, KmsError};
use crate::store::{KeyStore, StoredKey, is_duplicate};

/// Why a key-vault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The folder has no such key (never created, retired or destroyed).
    #[error("no data key for folder {folder_id}{}", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    NotFound {
        /// Folder id.
        folder_id: String,
        /// Version asked for, if any.
        version: Option<u32>,
    },
    /// The request cannot be carried out as asked.
    #[error("{0}")]
    Precondition(String),
    /// KMS is unreachable; cached keys still serve.
    #[error("{0}")]
    KmsUnavailable(KmsError),
    /// KMS refused to unwrap or wrap: the stored key does not match its context or master
    /// key. Reported, never papered over with a new key.
    #[error("{0}")]
    KmsRejected(KmsError),
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] mongodb::error::Error),
}

impl From<KmsError> for VaultError {
    fn from(e: KmsError) -> Self {
        match e {
            KmsError::Unavailable(_) => VaultError::KmsUnavailable(e),
            KmsError::Rejected(_) => VaultError::KmsRejected(e),
        }
    }
}

/// What a rewrap pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RewrapReport {
    /// Keys rewrapped by this pass.
    pub rewrapped: u64,
    /// Keys that were already under the new master key.
    pub already_done: u64,
    /// Keys still under another master key after this pass.
    pub remaining: u64,
}

/// Per-folder data keys under a KMS master key, with a bounded plaintext cache.
pub struct KeyVault {
    kms: Arc<dyn Kms>,
    store: KeyStore,
    configured_master: String,
    cache: KeyCache,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("master", &self.configured_master)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl KeyVault {
    /// A vault over `store`, making new keys under `master_key_id` (unless a rewrap has
    /// recorded a newer one).
    pub fn new(kms: Arc<dyn Kms>, store: KeyStore, master_key_id: String, limits: CacheLimits) -> Self {
        KeyVault { kms, store, configured_master: master_key_id, cache: KeyCache::new(limits) }
    }

    /// The store, for index setup.
    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// Cache hits and misses so far.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    async fn master_key(&self) -> Result<String, VaultError> {
        Ok(self.store.active_master_key().await?.unwrap_or_else(|| self.configured_master.clone()))
    }

    /// Makes a new version and stores only its wrapped form. KMS is called before anything
    /// is written, so a KMS failure leaves nothing behind.
    async fn add_version(&self, folder_id: &str, version: u32) -> Result<u32, VaultError> {
        let master = self.master_key().await?;
        let (key, wrapped) = self.kms.generate(&master, KeyContext { folder_id, version }).await?;
        match self.store.insert(&StoredKey { folder_id: folder_id.to_owned(), version, wrapped }).await {
            Ok(()) => {
                self.cache.insert(folder_id, key);
                Ok(version)
            }
            // Another request made this version first: theirs stands.
            Err(e) if is_duplicate(&e) => Ok(self.newest(folder_id).await?.version),
            Err(e) => Err(e.into()),
        }
    }

    async fn newest(&self, folder_id: &str) -> Result<StoredKey, VaultError> {
        self.store
            .find(folder_id, None)
            .await?
            .ok_or_else(|| VaultError::NotFound { folder_id: folder_id.to_owned(), version: None })
    }

    /// Creates version 1 of a folder's key; if the folder has a key already, returns its
    /// newest version.
    pub async fn create(&self, folder_id: &str) -> Result<u32, VaultError> {
        if let Some(existing) = self.store.find(folder_id, None).await? {
            return Ok(existing.version);
        }
        if self.store.is_destroyed(folder_id).await? {
            return Err(VaultError::Precondition(
                "this folder's keys were destroyed; its id cannot have a key again".into(),
            ));
        }
        self.add_version(folder_id, 1).await
    }

    /// A plaintext key version, or the newest when `version` is `None`. Served from the cache
    /// within its bounds; otherwise unwrapped through KMS.
    pub async fn get(&self, folder_id: &str, version: Option<u32>) -> Result<DataKey, VaultError> {
        if let Some(v) = version
            && let Some(key) = self.cache.get(folder_id, v)
        {
            return Ok(key);
        }
        let stored = self
            .store
            .find(folder_id, version)
            .await?
            .ok_or_else(|| VaultError::NotFound { folder_id: folder_id.to_owned(), version })?;
        if let Some(key) = self.cache.get(folder_id, stored.version) {
            return Ok(key);
        }
        let key = self
            .kms
            .unwrap(&stored.wrapped, KeyContext { folder_id, version: stored.version })
            .await
            .inspect_err(|e| {
                if let KmsError::Rejected(reason) = e {
                    tracing::error!(folder_id, version = stored.version, %reason, "stored data key does not unwrap");
                }
            })?;
        self.cache.insert(folder_id, key.clone());
        Ok(key)
    }

    /// Adds a version that new writes use; older versions stay readable.
    pub async fn rotate(&self, folder_id: &str) -> Result<u32, VaultError> {
        let newest = self.newest(folder_id).await?;
        self.add_version(folder_id, newest.version + 1).await
    }

    /// Deletes every version older than `keep_from`; refuses to delete the newest.
    pub async fn retire(&self, folder_id: &str, keep_from: u32) -> Result<u64, VaultError> {
        let newest = self.newest(folder_id).await?;
        if keep_from == 0 || keep_from > newest.version {
            return Err(VaultError::Precondition(format!(
                "keep_from_version must be between 1 and the newest version ({})",
                newest.version
            )));
        }
        let retired = self.store.delete(folder_id, Some(keep_from)).await?;
        self.cache.evict_folder(folder_id);
        Ok(retired)
    }

    /// Deletes every version of a folder's key, here and in the cache (crypto-erasure).
    pub async fn destroy(&self, folder_id: &str) -> Result<u64, VaultError> {
        self.store.tombstone(folder_id).await?;
        let destroyed = self.store.delete(folder_id, None).await?;
        self.cache.evict_folder(folder_id);
        Ok(destroyed)
    }

    /// Re-encrypts every stored key under `new_master_key_id` with KMS ReEncrypt. New keys
    /// are made under it from the start of the pass. Safe to repeat: a key already under the
    /// new master key is skipped, so an interrupted pass resumes where it stopped.
    /// With `limit`, a pass stops after that many keys and reports how many remain.
    pub async fn rewrap_all(&self, new_master_key_id: &str, limit: Option<u64>) -> Result<RewrapReport, VaultError> {
        let target = self.kms.resolve(new_master_key_id).await?;
        self.store.set_active_master_key(&target).await?;
        let (todo, already_done) = self.store.not_wrapped_by(&target).await?;
        let total = todo.len() as u64;
        let take = usize::try_from(limit.unwrap_or(total)).unwrap_or(usize::MAX);
        let mut report = RewrapReport { rewrapped: 0, already_done, remaining: total };
        for key in todo.into_iter().take(take) {
            let ctx = KeyContext { folder_id: &key.folder_id, version: key.version };
            let new = self.kms.rewrap(&key.wrapped, ctx, &target).await?;
            if self.store.replace_wrapped(&key, &new).await? {
                report.rewrapped += 1;
            }
            report.remaining -= 1;
        }
        tracing::info!(
            rewrapped = report.rewrapped,
            already_done = report.already_done,
            "master-key rewrap pass finished"
        );
        Ok(report)
    }
}
