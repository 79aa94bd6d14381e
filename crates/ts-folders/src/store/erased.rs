//! The `erased_users` collection: one tombstone per erased account, written first by every
//! erasure and kept for good. A write that stamps a user's email or makes a membership reads
//! it after the write (`Folders::unless_erased`): the eraser writes the tombstone before it
//! scans, so a writer that landed after the scan sees it and erases again.

use bson::{DateTime, doc};
use serde::{Deserialize, Serialize};
use ts_contract::ids::UserId;

use super::{Store, StoreResult};

/// An erased account, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasedUserDoc {
    /// The account's user id.
    #[serde(rename = "_id")]
    pub user_id: String,
    /// What replaced their email.
    pub pseudonym: String,
    /// When the first erasure began.
    pub erased_at: DateTime,
}

impl Store {
    /// Records that `user_id` is erased, replacing its email with `pseudonym`; the first
    /// record is kept (a repeated or concurrent erasure changes nothing).
    pub async fn mark_erased(&self, user_id: &UserId, pseudonym: &str, at: DateTime) -> StoreResult<()> {
        let written = self
            .erased()
            .update_one(
                doc! { "_id": user_id.as_str() },
                doc! { "$setOnInsert": { "pseudonym": pseudonym, "erased_at": at } },
            )
            .upsert(true)
            .await;
        match written {
            Ok(_) => Ok(()),
            // Two concurrent upserts of one id: the other one inserted it.
            Err(e) if ts_stores::is_duplicate_key(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The tombstone of `user_id` (as any service reported it), if the account was erased.
    pub async fn erased_user(&self, user_id: &str) -> StoreResult<Option<ErasedUserDoc>> {
        self.erased().find_one(doc! { "_id": user_id }).await
    }
}
