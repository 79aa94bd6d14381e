//! The `data_keys` collection: one document per (folder, version), holding only the wrapped
//! key and the master key that wrapped it; the `keyvault_settings` collection, holding the
//! active master key after a rewrap; and `master_key_retirements`, one document per old master
//! key being retired (keyed by its ARN; no index beyond `_id`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use bson::spec::BinarySubtype;
use bson::{Binary, Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::{FindOneOptions, IndexOptions};
use mongodb::{Collection, Database, IndexModel};

use ts_contract::clock::{SharedClock, bson_date};

use crate::kms::WrappedKey;

/// A stored data-key version.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Folder id.
    pub folder_id: String,
    /// Version.
    pub version: u32,
    /// The wrapped key.
    pub wrapped: WrappedKey,
}

/// An old master key's retirement: when keyvault disabled it in KMS and when it scheduled its
/// deletion there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// The key's canonical id (its ARN), as stored with the data keys it wrapped.
    pub master_key_id: String,
    /// The provider's bare key id, as DisableKey and ScheduleKeyDeletion are given it.
    pub kms_key_id: String,
    /// When keyvault disabled it (or first found it disabled): the backup retention window
    /// runs from here.
    pub disabled_at: SystemTime,
    /// The backup retention window, in days, of the call that recorded the latest step.
    pub backup_retention_days: u32,
    /// When keyvault scheduled its deletion (or first found it pending deletion).
    pub deletion_scheduled_at: Option<SystemTime>,
    /// When KMS deletes it, as KMS said.
    pub kms_deletion_date: Option<SystemTime>,
}

fn retirement_from_doc(d: &Document) -> Option<Retirement> {
    let time = |field: &str| d.get_datetime(field).ok().map(|t| t.to_system_time());
    Some(Retirement {
        master_key_id: d.get_str("_id").ok()?.to_owned(),
        kms_key_id: d.get_str("kms_key_id").ok()?.to_owned(),
        disabled_at: time("disabled_at")?,
        backup_retention_days: d.get_i64("backup_retention_days").ok().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
        deletion_scheduled_at: time("deletion_scheduled_at"),
        kms_deletion_date: time("kms_deletion_date"),
    })
}

/// Data-key persistence.
#[derive(Debug, Clone)]
pub struct KeyStore {
    keys: Collection<Document>,
    settings: Collection<Document>,
    destroyed: Collection<Document>,
    retirements: Collection<Document>,
    clock: SharedClock,
}

fn to_doc(k: &StoredKey, now: bson::DateTime) -> Document {
    doc! {
        "folder_id": &k.folder_id,
        "version": i64::from(k.version),
        "wrapped": Binary { subtype: BinarySubtype::Generic, bytes: k.wrapped.blob.clone() },
        "master_key_id": &k.wrapped.master_key_id,
        "created_at": now,
    }
}

fn from_doc(d: &Document) -> Option<StoredKey> {
    let version = u32::try_from(d.get_i64("version").ok()?).ok()?;
    let blob = match d.get("wrapped")? {
        Bson::Binary(b) => b.bytes.clone(),
        _ => return None,
    };
    Some(StoredKey {
        folder_id: d.get_str("folder_id").ok()?.to_owned(),
        version,
        wrapped: WrappedKey { blob, master_key_id: d.get_str("master_key_id").ok()?.to_owned() },
    })
}

pub use ts_stores::is_duplicate_key as is_duplicate;

/// Keyvault's schema: raise the version whenever [`KeyStore::ensure_indexes`] changes, so that
/// `teamshare migrate` runs it again (and production replicas refuse to start until it has).
pub const SCHEMA: ts_stores::Schema = ts_stores::Schema::new("keyvault", 1);

impl KeyStore {
    /// The collections in `db`; `clock` dates what is written.
    pub fn new(db: &Database, clock: SharedClock) -> Self {
        KeyStore {
            keys: db.collection("data_keys"),
            settings: db.collection("keyvault_settings"),
            destroyed: db.collection("destroyed_folder_keys"),
            retirements: db.collection("master_key_retirements"),
            clock,
        }
    }

    /// The time on the clock this store dates what it writes with.
    pub fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Creates the unique (folder, version) index: the migration step of [`SCHEMA`], run by
    /// `teamshare migrate`, not on every start.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let unique = IndexModel::builder()
            .keys(doc! { "folder_id": 1, "version": 1 })
            .options(IndexOptions::builder().unique(true).name("folder_version_unique".to_owned()).build())
            .build();
        self.keys.create_index(unique).await?;
        Ok(())
    }

    /// Inserts a new version; fails with a duplicate-key error when it exists.
    pub async fn insert(&self, key: &StoredKey) -> mongodb::error::Result<()> {
        self.keys.insert_one(to_doc(key, bson_date(self.clock.now()))).await.map(|_| ())
    }

    /// A version of a folder's key, or the newest when `version` is `None`.
    pub async fn find(&self, folder_id: &str, version: Option<u32>) -> mongodb::error::Result<Option<StoredKey>> {
        let (filter, sort) = match version {
            Some(v) => (doc! { "folder_id": folder_id, "version": i64::from(v) }, None),
            None => (doc! { "folder_id": folder_id }, Some(doc! { "version": -1 })),
        };
        let found = self.keys.find_one(filter).with_options(FindOneOptions::builder().sort(sort).build()).await?;
        Ok(found.as_ref().and_then(from_doc))
    }

    /// Deletes versions of a folder older than `keep_from`, or all when `None`.
    pub async fn delete(&self, folder_id: &str, keep_from: Option<u32>) -> mongodb::error::Result<u64> {
        let filter = match keep_from {
            Some(v) => doc! { "folder_id": folder_id, "version": { "$lt": i64::from(v) } },
            None => doc! { "folder_id": folder_id },
        };
        Ok(self.keys.delete_many(filter).await?.deleted_count)
    }

    /// Records that a folder's keys are destroyed, before they are: its id never gets a key
    /// again (a retried create with a client's request id derives the same id).
    pub async fn tombstone(&self, folder_id: &str) -> mongodb::error::Result<()> {
        let now = bson_date(self.clock.now());
        self.destroyed
            .update_one(doc! { "_id": folder_id }, doc! { "$setOnInsert": { "destroyed_at": now } })
            .upsert(true)
            .await
            .map(drop)
    }

    /// Whether a folder's keys were destroyed.
    pub async fn is_destroyed(&self, folder_id: &str) -> mongodb::error::Result<bool> {
        Ok(self.destroyed.count_documents(doc! { "_id": folder_id }).limit(1).await? > 0)
    }

    /// Every stored key not yet wrapped by `master_key_id`, and how many already are.
    pub async fn not_wrapped_by(&self, master_key_id: &str) -> mongodb::error::Result<(Vec<StoredKey>, u64)> {
        let done = self.keys.count_documents(doc! { "master_key_id": master_key_id }).await?;
        let todo: Vec<Document> =
            self.keys.find(doc! { "master_key_id": { "$ne": master_key_id } }).await?.try_collect().await?;
        Ok((todo.iter().filter_map(from_doc).collect(), done))
    }

    /// Replaces a key's wrapped form, only if it is still the one that was read.
    pub async fn replace_wrapped(&self, old: &StoredKey, new: &WrappedKey) -> mongodb::error::Result<bool> {
        let filter = doc! {
            "folder_id": &old.folder_id,
            "version": i64::from(old.version),
            "master_key_id": &old.wrapped.master_key_id,
        };
        let update = doc! { "$set": {
            "wrapped": Binary { subtype: BinarySubtype::Generic, bytes: new.blob.clone() },
            "master_key_id": &new.master_key_id,
        }};
        Ok(self.keys.update_one(filter, update).await?.modified_count == 1)
    }

    /// The master key new data keys are made under, when a rewrap has set one.
    pub async fn active_master_key(&self) -> mongodb::error::Result<Option<String>> {
        let found = self.settings.find_one(doc! { "_id": "master_key" }).await?;
        Ok(found.and_then(|d| d.get_str("master_key_id").ok().map(str::to_owned)))
    }

    /// Records the master key new data keys are made under.
    pub async fn set_active_master_key(&self, master_key_id: &str) -> mongodb::error::Result<()> {
        self.settings
            .update_one(
                doc! { "_id": "master_key" },
                doc! { "$set": { "master_key_id": master_key_id, "since": bson_date(self.clock.now()) } },
            )
            .upsert(true)
            .await
            .map(|_| ())
    }

    /// How many stored keys each master key wraps, most first (then by id). Reads every key's
    /// `master_key_id` once: an operator's occasional question, not a request path.
    pub async fn wrapped_counts(&self) -> mongodb::error::Result<Vec<(String, u64)>> {
        let mut cursor = self.keys.find(doc! {}).projection(doc! { "master_key_id": 1 }).await?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        while let Some(d) = cursor.try_next().await? {
            let id = d.get_str("master_key_id").unwrap_or_default().to_owned();
            *counts.entry(id).or_default() += 1;
        }
        let mut counts: Vec<(String, u64)> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Ok(counts)
    }

    /// How many stored keys are wrapped under any of `master_key_ids` (one key's ARN and bare
    /// id, say).
    pub async fn count_wrapped_by(&self, master_key_ids: &[String]) -> mongodb::error::Result<u64> {
        let mut total = 0;
        for id in master_key_ids {
            total += self.keys.count_documents(doc! { "master_key_id": id }).await?;
        }
        Ok(total)
    }

    /// Every recorded retirement, oldest first.
    pub async fn retirements(&self) -> mongodb::error::Result<Vec<Retirement>> {
        let docs: Vec<Document> =
            self.retirements.find(doc! {}).sort(doc! { "disabled_at": 1, "_id": 1 }).await?.try_collect().await?;
        Ok(docs.iter().filter_map(retirement_from_doc).collect())
    }

    /// The retirement of a master key, by its ARN or its bare KMS key id.
    pub async fn retirement(&self, id: &str) -> mongodb::error::Result<Option<Retirement>> {
        if let Some(d) = self.retirements.find_one(doc! { "_id": id }).await? {
            return Ok(retirement_from_doc(&d));
        }
        Ok(self.retirements.find_one(doc! { "kms_key_id": id }).await?.as_ref().and_then(retirement_from_doc))
    }

    /// Records that a master key was disabled at `at`, starting (or starting over) its backup
    /// retention window and forgetting any deletion recorded before.
    pub async fn record_disabled(
        &self,
        master_key_id: &str,
        kms_key_id: &str,
        at: SystemTime,
        backup_retention_days: u32,
    ) -> mongodb::error::Result<Retirement> {
        let update = doc! {
            "$set": {
                "kms_key_id": kms_key_id,
                "disabled_at": bson_date(at),
                "backup_retention_days": i64::from(backup_retention_days),
            },
            "$unset": { "deletion_scheduled_at": "", "kms_deletion_date": "" },
        };
        self.retirements.update_one(doc! { "_id": master_key_id }, update).upsert(true).await?;
        Ok(Retirement {
            master_key_id: master_key_id.to_owned(),
            kms_key_id: kms_key_id.to_owned(),
            disabled_at: at,
            backup_retention_days,
            deletion_scheduled_at: None,
            kms_deletion_date: None,
        })
    }

    /// Records that a disabled master key's deletion was scheduled at `at`, for KMS to carry out
    /// at `kms_deletion_date`.
    pub async fn record_deletion_scheduled(
        &self,
        retirement: &Retirement,
        at: SystemTime,
        kms_deletion_date: SystemTime,
        backup_retention_days: u32,
    ) -> mongodb::error::Result<Retirement> {
        let update = doc! { "$set": {
            "deletion_scheduled_at": bson_date(at),
            "kms_deletion_date": bson_date(kms_deletion_date),
            "backup_retention_days": i64::from(backup_retention_days),
        }};
        self.retirements.update_one(doc! { "_id": &retirement.master_key_id }, update).await?;
        Ok(Retirement {
            deletion_scheduled_at: Some(at),
            kms_deletion_date: Some(kms_deletion_date),
            backup_retention_days,
            ..retirement.clone()
        })
    }
}
