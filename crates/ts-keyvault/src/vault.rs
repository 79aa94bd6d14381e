//! The key vault's logic, independent of gRPC: create, fetch, rotate, retire and destroy
//! per-folder data keys, rewrap them all under a new master key, and retire the old master
//! key (disable it, then delete it once no backup needs it) so that the keys of deleted
//! folders, still wrapped under it in backups, can never be unwrapped again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ts_crypto::{CacheLimits, DataKey, KeyCache};

use crate::kms::{KeyContext, Kms, KmsError, MasterKeyState};
use crate::store::{KeyStore, Retirement, StoredKey, is_duplicate};

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
    /// KMS has no such master key, and keyvault never retired it.
    #[error("kms has no key {0}")]
    UnknownMasterKey(String),
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
            KmsError::Unsupported(m) => VaultError::Precondition(m),
        }
    }
}

/// A KMS failure while managing a master key: a refusal there is about that key (a missing
/// permission, a key in the wrong state), not about a stored data key, so it is the operator's
/// to fix.
fn managing(e: KmsError) -> VaultError {
    match e {
        KmsError::Rejected(m) => VaultError::Precondition(format!("kms refused: {m}")),
        other => other.into(),
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

/// Which master key wraps the stored data keys, and the old keys' retirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterKeyStatus {
    /// The key new data keys are made under (canonical when KMS could resolve it).
    pub current: String,
    /// `kms.key_id` from the configuration, as written there.
    pub configured: String,
    /// Stored data keys by the master key that wraps them, most first.
    pub wrapped: Vec<(String, u64)>,
    /// Every recorded retirement, oldest first.
    pub retirements: Vec<Retirement>,
}

/// What one [`KeyVault::retire_master_key`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireStep {
    /// Disabled the key in KMS; the backup retention window starts now.
    Disabled,
    /// Nothing was due: the key is disabled and the backup retention window has not passed.
    Waiting,
    /// Scheduled the key's deletion in KMS.
    DeletionScheduled,
    /// Nothing is left to do: deletion is scheduled, or KMS has deleted the key.
    Done,
}

/// The outcome of one [`KeyVault::retire_master_key`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetireReport {
    /// What this call did.
    pub step: RetireStep,
    /// The key's state in KMS after this call; `None` once KMS no longer knows it.
    pub kms_state: Option<String>,
    /// The retirement as recorded after this call.
    pub retirement: Retirement,
    /// From when calling again does the next step; `None` when nothing is left to do.
    pub next_step_at: Option<SystemTime>,
}

/// How long KMS may be asked to wait before deleting a key, in days (AWS KMS's bounds).
pub const DELETION_PENDING_DAYS: std::ops::RangeInclusive<u32> = 7..=30;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

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

    /// The key new data keys are made under, canonical: stored rewrap targets already are; a
    /// configured id or alias is resolved through KMS.
    async fn current_master_key(&self) -> Result<String, VaultError> {
        let current = self.master_key().await?;
        self.kms.resolve(&current).await.map_err(managing)
    }

    /// Which key new data keys are made under, how many stored keys each master key wraps,
    /// and every recorded retirement. Reports the current key unresolved when KMS cannot
    /// resolve it, rather than failing a read-only question.
    pub async fn master_key_status(&self) -> Result<MasterKeyStatus, VaultError> {
        let current = self.master_key().await?;
        let current = match self.kms.resolve(&current).await {
            Ok(arn) => arn,
            Err(e) => {
                tracing::warn!(error = %e, master_key_id = %current, "cannot resolve the current master key");
                current
            }
        };
        Ok(MasterKeyStatus {
            current,
            configured: self.configured_master.clone(),
            wrapped: self.store.wrapped_counts().await?,
            retirements: self.store.retirements().await?,
        })
    }

    /// Does the next due step of retiring the master key `old` and says what it did: disables
    /// it in KMS; once `backup_retention_days` have passed since then (on the store's clock),
    /// schedules its deletion with a `deletion_pending_days` window (in
    /// [`DELETION_PENDING_DAYS`]); then reports that nothing is left. Refuses while any stored
    /// key is wrapped under `old`, and when `old` is the key new data keys are made under.
    /// Safe to repeat: each call acts on the key's state in KMS, so a key enabled again by hand
    /// is disabled again (its window starting over) and a cancelled deletion is scheduled again.
    pub async fn retire_master_key(
        &self,
        old: &str,
        backup_retention_days: u32,
        deletion_pending_days: u32,
    ) -> Result<RetireReport, VaultError> {
        if !DELETION_PENDING_DAYS.contains(&deletion_pending_days) {
            return Err(VaultError::Precondition(format!(
                "the deletion pending window must be {} to {} days",
                DELETION_PENDING_DAYS.start(),
                DELETION_PENDING_DAYS.end()
            )));
        }
        let info = self.kms.describe(old).await.map_err(managing)?;
        if let Some(info) = &info
            && self.current_master_key().await? == info.arn
        {
            return Err(VaultError::Precondition(format!(
                "{} is the current master key: new data keys are made under it; rewrap to another key first",
                info.arn
            )));
        }
        let recorded = self.store.retirement(info.as_ref().map_or(old, |i| i.arn.as_str())).await?;

        // Every name the key may be stored under: its ARN (what KMS returns), its bare id,
        // what the operator typed.
        let mut names = vec![old.to_owned()];
        names.extend(info.iter().flat_map(|i| [i.arn.clone(), i.key_id.clone()]));
        names.extend(recorded.iter().flat_map(|r| [r.master_key_id.clone(), r.kms_key_id.clone()]));
        names.sort();
        names.dedup();
        let still_wrapped = self.store.count_wrapped_by(&names).await?;
        if still_wrapped > 0 {
            return Err(VaultError::Precondition(format!(
                "{still_wrapped} stored data keys are still wrapped under {}; rewrap them to the current master key first",
                info.as_ref().map_or(old, |i| i.arn.as_str())
            )));
        }

        let now = self.store.now();
        let retention = DAY * backup_retention_days;
        let Some(info) = info else {
            // Gone from KMS: done if keyvault retired it, else an unknown key (a typo?).
            return match recorded {
                Some(retirement) => {
                    Ok(RetireReport { step: RetireStep::Done, kms_state: None, retirement, next_step_at: None })
                }
                None => Err(VaultError::UnknownMasterKey(old.to_owned())),
            };
        };
        let report = match info.state {
            MasterKeyState::Enabled => {
                self.kms.disable(&info.key_id).await.map_err(managing)?;
                if recorded.is_some() {
                    tracing::warn!(master_key_id = %info.arn, "a retired master key was enabled again; disabled it again, its backup retention window starts over");
                }
                let retirement =
                    self.store.record_disabled(&info.arn, &info.key_id, now, backup_retention_days).await?;
                tracing::info!(master_key_id = %info.arn, "old master key disabled");
                RetireReport {
                    step: RetireStep::Disabled,
                    kms_state: Some(MasterKeyState::Disabled.as_str().to_owned()),
                    retirement,
                    next_step_at: Some(now + retention),
                }
            }
            MasterKeyState::Disabled => {
                // Disabled by hand (the window starts when keyvault first sees it), or by us.
                let retirement = match recorded {
                    Some(r) => r,
                    None => self.store.record_disabled(&info.arn, &info.key_id, now, backup_retention_days).await?,
                };
                let due = retirement.disabled_at + retention;
                if now < due {
                    RetireReport {
                        step: RetireStep::Waiting,
                        kms_state: Some(MasterKeyState::Disabled.as_str().to_owned()),
                        retirement,
                        next_step_at: Some(due),
                    }
                } else {
                    let date =
                        self.kms.schedule_deletion(&info.key_id, deletion_pending_days).await.map_err(managing)?;
                    let date = date.unwrap_or(now + DAY * deletion_pending_days);
                    let retirement =
                        self.store.record_deletion_scheduled(&retirement, now, date, backup_retention_days).await?;
                    tracing::info!(master_key_id = %info.arn, "old master key scheduled for deletion");
                    RetireReport {
                        step: RetireStep::DeletionScheduled,
                        kms_state: Some(MasterKeyState::PendingDeletion.as_str().to_owned()),
                        retirement,
                        next_step_at: None,
                    }
                }
            }
            MasterKeyState::PendingDeletion => {
                // Scheduled by us, or by hand (recorded now, so that the status shows it).
                let retirement = match recorded {
                    Some(r) if r.deletion_scheduled_at.is_some() => r,
                    found => {
                        let disabled = match found {
                            Some(r) => r,
                            None => {
                                self.store.record_disabled(&info.arn, &info.key_id, now, backup_retention_days).await?
                            }
                        };
                        let date = info.deletion_date.unwrap_or(now);
                        self.store
                            .record_deletion_scheduled(&disabled, now, date, disabled.backup_retention_days)
                            .await?
                    }
                };
                RetireReport {
                    step: RetireStep::Done,
                    kms_state: Some(MasterKeyState::PendingDeletion.as_str().to_owned()),
                    retirement,
                    next_step_at: None,
                }
            }
            MasterKeyState::Other(state) => {
                return Err(VaultError::Precondition(format!(
                    "{} is in the kms state {state}; only an Enabled, Disabled or PendingDeletion key can be retired",
                    info.arn
                )));
            }
        };
        Ok(report)
    }
}
