//! The `items` collection. Item writes that change how many items a folder holds (create,
//! delete, move) run in one MongoDB transaction with the folders' `items` counters. A
//! request cancelled half-way (a client deadline, a dropped connection, a crashed replica)
//! therefore leaves both the item and the counts as they were, or both changed: no slot
//! leaks, and the per-folder cap cannot be passed by cancelling at the right moment.

use bson::{DateTime, Document, doc};
use futures::{FutureExt, TryStreamExt};
use mongodb::{ClientSession, Collection};
use serde::{Deserialize, Serialize};
use ts_contract::ids::{FolderId, ItemId};

use super::{FolderDoc, SealedDoc, Store, StoreResult, find_page, strings};
use crate::paging::ItemCursor;

/// An item as stored; its user-typed fields are sealed in `enc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ItemDoc {
    /// Item id.
    #[serde(rename = "_id")]
    pub id: ItemId,
    /// The folder holding it.
    pub folder_id: FolderId,
    /// `ItemKind` as its number.
    pub kind: i32,
    /// Incremented by every change.
    pub version: i64,
    /// The data-key version of `enc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<i64>,
    /// Field name (`name`, `description`, `content`) → envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<Document>,
    /// Who shared it.
    #[serde(default)]
    pub shared_by_email: String,
    /// Who changed it last.
    #[serde(default)]
    pub updated_by_email: String,
    /// Creation time.
    pub created_at: DateTime,
    /// Last change.
    pub updated_at: DateTime,
}

/// The item write that goes with a change of counts.
#[derive(Debug, Clone)]
pub enum ItemWrite<'a> {
    /// A new item.
    Insert(&'a ItemDoc),
    /// The item at `expected_version` moves to another folder, sealed anew.
    Move {
        /// The item.
        id: &'a ItemId,
        /// Where it is.
        from: &'a FolderId,
        /// Where it goes.
        to: &'a FolderId,
        /// The version the caller read.
        expected_version: i64,
        /// Its fields sealed for `to`.
        enc: Document,
        /// The key version of `enc`.
        key_version: u32,
        /// Who moves it.
        updated_by: &'a str,
        /// When.
        at: DateTime,
    },
    /// The item at `expected_version`, removed.
    Delete {
        /// The item.
        id: &'a ItemId,
        /// Its folder.
        folder_id: &'a FolderId,
        /// The version the caller read.
        expected_version: i64,
    },
}

/// What the transaction found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slots {
    /// Written, counts moved.
    Written,
    /// The folder taking the item is full (or gone): nothing written.
    Full,
    /// The write's filter matched no item (it changed or went): nothing written.
    NoMatch,
}

/// The write as MongoDB operations.
enum Op<'a> {
    Insert(&'a ItemDoc),
    Update(Document, Document),
    Delete(Document),
}

fn at_version(id: &ItemId, folder_id: &FolderId, version: i64) -> Document {
    doc! { "_id": id.as_str(), "folder_id": folder_id.as_str(), "version": version }
}

/// One more item in `folder_id`, unless it is at `cap`.
async fn take(folders: &Collection<FolderDoc>, folder_id: &str, cap: i64, s: &mut ClientSession) -> StoreResult<bool> {
    let r = folders
        .update_one(doc! { "_id": folder_id, "items": { "$lt": cap } }, doc! { "$inc": { "items": 1_i64 } })
        .session(&mut *s)
        .await?;
    Ok(r.modified_count == 1)
}

/// One item fewer in `folder_id` (never below zero).
async fn give_back(folders: &Collection<FolderDoc>, folder_id: &str, s: &mut ClientSession) -> StoreResult<()> {
    folders
        .update_one(doc! { "_id": folder_id, "items": { "$gt": 0_i64 } }, doc! { "$inc": { "items": -1_i64 } })
        .session(&mut *s)
        .await?;
    Ok(())
}

impl Store {
    /// An item of a folder, if it is there.
    pub async fn item(&self, folder_id: &FolderId, id: &ItemId) -> StoreResult<Option<ItemDoc>> {
        self.items().find_one(doc! { "_id": id.as_str(), "folder_id": folder_id.as_str() }).await
    }

    /// Whether an item with this id is in any folder.
    pub async fn item_anywhere(&self, id: &ItemId) -> StoreResult<bool> {
        Ok(self.items().count_documents(doc! { "_id": id.as_str() }).limit(1).await? > 0)
    }

    /// A page of a folder's items, oldest first, after `after`.
    pub async fn item_page(
        &self,
        folder_id: &FolderId,
        after: Option<&ItemCursor>,
        size: usize,
    ) -> StoreResult<(Vec<ItemDoc>, bool)> {
        let mut filter = doc! { "folder_id": folder_id.as_str() };
        if let Some(c) = after {
            let at = c.created_at;
            filter.insert(
                "$or",
                vec![doc! { "created_at": { "$gt": at } }, doc! { "created_at": at, "_id": { "$gt": &c.id } }],
            );
        }
        find_page(&self.items(), filter, doc! { "created_at": 1, "_id": 1 }, size).await
    }

    /// A page of a folder's items that `email` shared or changed last, oldest first, after
    /// `after` (for an export).
    pub async fn item_page_by(
        &self,
        folder_id: &FolderId,
        email: &str,
        after: Option<&ItemCursor>,
        size: usize,
    ) -> StoreResult<(Vec<ItemDoc>, bool)> {
        let theirs = doc! { "$or": [{ "shared_by_email": email }, { "updated_by_email": email }] };
        let mut page = doc! { "folder_id": folder_id.as_str() };
        if let Some(c) = after {
            let at = c.created_at;
            page.insert(
                "$or",
                vec![doc! { "created_at": { "$gt": at } }, doc! { "created_at": at, "_id": { "$gt": &c.id } }],
            );
        }
        find_page(&self.items(), doc! { "$and": [page, theirs] }, doc! { "created_at": 1, "_id": 1 }, size).await
    }

    /// The ids of the folders holding an item that `email` shared or changed last.
    pub async fn folders_with_items_by(&self, email: &str) -> StoreResult<Vec<String>> {
        let theirs = doc! { "$or": [{ "shared_by_email": email }, { "updated_by_email": email }] };
        Ok(strings(self.items().distinct("folder_id", theirs).await?))
    }

    /// Names `pseudonym` instead of `email` as the sharer and the last editor of every item,
    /// leaving versions and times as they were; how many documents changed.
    pub async fn pseudonymise_items(&self, email: &str, pseudonym: &str) -> StoreResult<u64> {
        let items = self.items();
        let shared = items
            .update_many(doc! { "shared_by_email": email }, doc! { "$set": { "shared_by_email": pseudonym } })
            .await?;
        let updated = items
            .update_many(doc! { "updated_by_email": email }, doc! { "$set": { "updated_by_email": pseudonym } })
            .await?;
        Ok(shared.modified_count + updated.modified_count)
    }

    /// Rewrites an item's sealed fields if it is still at `expected_version`; false if not.
    pub async fn update_item(
        &self,
        item: (&FolderId, &ItemId),
        expected_version: i64,
        enc: Document,
        key_version: u32,
        updated_by: &str,
        at: DateTime,
    ) -> StoreResult<bool> {
        let (folder_id, id) = item;
        let update = doc! { "$set": {
            "enc": enc, "key_version": i64::from(key_version), "updated_by_email": updated_by, "updated_at": at,
        }, "$inc": { "version": 1_i64 } };
        let r = self.items().update_one(at_version(id, folder_id, expected_version), update).await?;
        Ok(r.modified_count != 0)
    }

    /// Removes every item of a folder.
    pub async fn delete_items_of(&self, folder_id: &FolderId) -> StoreResult<()> {
        self.items().delete_many(doc! { "folder_id": folder_id.as_str() }).await.map(drop)
    }

    /// Items of a folder still sealed under a version older than `newest`.
    pub async fn stale_items(&self, folder_id: &str, newest: u32) -> StoreResult<Vec<SealedDoc>> {
        let filter = doc! { "folder_id": folder_id, "key_version": { "$lt": i64::from(newest) } };
        self.items().clone_with_type::<SealedDoc>().find(filter).await?.try_collect().await
    }

    /// Re-seals an item from `old_version` to `new_version` if it is unchanged since it was
    /// read (same item version and key version); false if it changed.
    pub async fn reseal_item(
        &self,
        item: &SealedDoc,
        old_version: u32,
        enc: Document,
        new_version: u32,
    ) -> StoreResult<bool> {
        let mut unchanged = doc! { "_id": &item.id, "key_version": i64::from(old_version) };
        if let Some(v) = &item.version {
            unchanged.insert("version", v.clone());
        }
        let update = doc! { "$set": { "enc": enc, "key_version": i64::from(new_version) } };
        Ok(self.items().update_one(unchanged, update).await?.modified_count == 1)
    }

    /// Runs `write` with a slot taken in `into` (at most `cap` items) and one given back in
    /// `out_of`, all in one transaction (retried by the driver on write conflicts).
    pub async fn write_with_slots(
        &self,
        into: Option<&FolderId>,
        out_of: Option<&FolderId>,
        cap: i64,
        write: ItemWrite<'_>,
    ) -> StoreResult<Slots> {
        let op = match write {
            ItemWrite::Insert(item) => Op::Insert(item),
            ItemWrite::Move { id, from, to, expected_version, enc, key_version, updated_by, at } => {
                let update = doc! { "$set": {
                    "folder_id": to.as_str(), "enc": enc, "key_version": i64::from(key_version),
                    "updated_by_email": updated_by, "updated_at": at,
                }, "$inc": { "version": 1_i64 } };
                Op::Update(at_version(id, from, expected_version), update)
            }
            ItemWrite::Delete { id, folder_id, expected_version } => {
                Op::Delete(at_version(id, folder_id, expected_version))
            }
        };
        let (folders, items) = (self.folders(), self.items());
        let (into, out_of) = (into.map(FolderId::as_str), out_of.map(FolderId::as_str));
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run((&folders, &items, into, out_of, &op), |s, (folders, items, into, out_of, op)| {
                async move {
                    if let Some(into) = *into
                        && !take(folders, into, cap, s).await?
                    {
                        return Ok(Slots::Full);
                    }
                    let wrote = match *op {
                        Op::Insert(d) => {
                            items.insert_one(*d).session(&mut *s).await?;
                            true
                        }
                        Op::Update(filter, update) => {
                            items.update_one(filter.clone(), update.clone()).session(&mut *s).await?.modified_count == 1
                        }
                        Op::Delete(filter) => {
                            items.delete_one(filter.clone()).session(&mut *s).await?.deleted_count == 1
                        }
                    };
                    if !wrote {
                        // Nothing changed: put the slot back inside the same transaction.
                        if let Some(into) = *into {
                            give_back(folders, into, s).await?;
                        }
                        return Ok(Slots::NoMatch);
                    }
                    if let Some(out_of) = *out_of {
                        give_back(folders, out_of, s).await?;
                    }
                    Ok(Slots::Written)
                }
                .boxed()
            })
            .await
    }
}
