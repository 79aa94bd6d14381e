//! The `data_keys` collection: one document per (folder, version), holding only the wrapped
//! key; and the `keyvault_settings` collection, holding the active master key after a rewrap.

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

/// Data-key persistence.
#[derive(Debug, Clone)]
pub struct KeyStore {
    keys: Collection<Document>,
    settings: Collection<Document>,
    destroyed: Collection<Document>,
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
            clock,
        }
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
}
