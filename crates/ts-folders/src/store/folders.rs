//! The `folders` collection: one document per folder, holding its sealed name and the
//! counters that the membership and item transactions keep (`managers`, `items`), plus the
//! `membership_version` that membership transactions bump so that they conflict.

use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use ts_contract::ids::FolderId;

use super::{SealedDoc, Store, StoreResult, strings};

/// A folder as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FolderDoc {
    /// Folder id.
    #[serde(rename = "_id")]
    pub id: FolderId,
    /// The sealed name (`name` → envelope), bound to the pseudo item `FOLDER_ITEM_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<Document>,
    /// The data-key version of `enc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<i64>,
    /// MANAGE members, as counted by the last membership transaction.
    #[serde(default)]
    pub managers: i64,
    /// Items held, kept by the item-slot transactions.
    #[serde(default)]
    pub items: i64,
    /// Who created it.
    #[serde(default)]
    pub created_by_email: String,
    /// Creation time.
    pub created_at: DateTime,
    /// Last rename.
    pub updated_at: DateTime,
}

impl Store {
    /// Inserts a new folder.
    pub async fn insert_folder(&self, folder: &FolderDoc) -> StoreResult<()> {
        self.folders().insert_one(folder).await.map(drop)
    }

    /// A folder, if it exists.
    pub async fn folder(&self, id: &FolderId) -> StoreResult<Option<FolderDoc>> {
        self.folders().find_one(doc! { "_id": id.as_str() }).await
    }

    /// The folders with these ids that exist, in one query (any order).
    pub async fn folders_with_ids(&self, ids: &[&FolderId]) -> StoreResult<Vec<FolderDoc>> {
        use futures::TryStreamExt;
        let ids: Vec<&str> = ids.iter().map(|id| id.as_str()).collect();
        self.folders().find(doc! { "_id": { "$in": ids } }).await?.try_collect().await
    }

    /// Removes a folder's document.
    pub async fn delete_folder(&self, id: &FolderId) -> StoreResult<()> {
        self.folders().delete_one(doc! { "_id": id.as_str() }).await.map(drop)
    }

    /// Replaces a folder's sealed name.
    pub async fn rename_folder(&self, id: &FolderId, enc: Document, key_version: u32, at: DateTime) -> StoreResult<()> {
        let set = doc! { "enc": enc, "key_version": i64::from(key_version), "updated_at": at };
        self.folders().update_one(doc! { "_id": id.as_str() }, doc! { "$set": set }).await.map(drop)
    }

    /// A folder's sealed part, for re-encryption.
    pub async fn sealed_folder(&self, id: &str) -> StoreResult<Option<SealedDoc>> {
        self.folders().clone_with_type::<SealedDoc>().find_one(doc! { "_id": id }).await
    }

    /// Re-seals a folder's name from `old_version` to `new_version`, if it is still on the old.
    pub async fn reseal_folder(&self, id: &str, old_version: u32, enc: Document, new_version: u32) -> StoreResult<()> {
        self.folders()
            .update_one(
                doc! { "_id": id, "key_version": i64::from(old_version) },
                doc! { "$set": { "enc": enc, "key_version": i64::from(new_version) } },
            )
            .await
            .map(drop)
    }

    /// The ids of the folders `email` created.
    pub async fn folders_created_by(&self, email: &str) -> StoreResult<Vec<String>> {
        Ok(strings(self.folders().distinct("_id", doc! { "created_by_email": email }).await?))
    }

    /// Names `pseudonym` instead of `email` as the creator of every folder; how many changed.
    pub async fn pseudonymise_folders(&self, email: &str, pseudonym: &str) -> StoreResult<u64> {
        let set = doc! { "$set": { "created_by_email": pseudonym } };
        Ok(self.folders().update_many(doc! { "created_by_email": email }, set).await?.modified_count)
    }
}
