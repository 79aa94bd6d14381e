//! Item writes that change how many items a folder holds (create, delete, move) run in one
//! MongoDB transaction with the folders' `items` counters. A request cancelled half-way (a
//! client deadline, a dropped connection, a crashed replica) therefore leaves both the item
//! and the counts as they were, or both changed: no slot leaks, and the per-folder cap
//! cannot be passed by cancelling at the right moment.

use bson::{Document, doc};
use futures::FutureExt;
use mongodb::{ClientSession, Collection};
use tonic::Status;

use crate::items_rpc::MAX_ITEMS_PER_FOLDER;
use crate::{FoldersApi, store_error};

/// The item write that goes with a change of counts.
pub(crate) enum ItemWrite {
    /// A new item.
    Insert(Document),
    /// `update` on the item matching `filter` (a move).
    Update { filter: Document, update: Document },
    /// The item matching the filter, removed.
    Delete(Document),
}

/// What the transaction found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slots {
    /// Written, counts moved.
    Written,
    /// The folder taking the item is full (or gone): nothing written.
    Full,
    /// The write's filter matched no item (it changed or went): nothing written.
    NoMatch,
}

/// One more item in `folder_id`, unless it is at the cap.
async fn take(folders: &Collection<Document>, folder_id: &str, s: &mut ClientSession) -> mongodb::error::Result<bool> {
    let r = folders
        .update_one(
            doc! { "_id": folder_id, "items": { "$lt": MAX_ITEMS_PER_FOLDER } },
            doc! { "$inc": { "items": 1_i64 } },
        )
        .session(&mut *s)
        .await?;
    Ok(r.modified_count == 1)
}

/// One item fewer in `folder_id` (never below zero).
async fn give_back(
    folders: &Collection<Document>,
    folder_id: &str,
    s: &mut ClientSession,
) -> mongodb::error::Result<()> {
    folders
        .update_one(doc! { "_id": folder_id, "items": { "$gt": 0_i64 } }, doc! { "$inc": { "items": -1_i64 } })
        .session(&mut *s)
        .await?;
    Ok(())
}

impl FoldersApi {
    /// Runs `write` with a slot taken in `into` and one given back in `out_of`, all in one
    /// transaction (retried by the driver on write conflicts).
    pub(crate) async fn write_with_slots(
        &self,
        into: Option<&str>,
        out_of: Option<&str>,
        write: ItemWrite,
    ) -> Result<Slots, Status> {
        let (folders, items) = (self.folders(), self.items());
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run((&folders, &items, into, out_of, &write), |s, (folders, items, into, out_of, write)| {
                async move {
                    if let Some(into) = *into
                        && !take(folders, into, s).await?
                    {
                        return Ok(Slots::Full);
                    }
                    let wrote = match *write {
                        ItemWrite::Insert(d) => {
                            items.insert_one(d).session(&mut *s).await?;
                            true
                        }
                        ItemWrite::Update { filter, update } => {
                            items.update_one(filter.clone(), update.clone()).session(&mut *s).await?.modified_count == 1
                        }
                        ItemWrite::Delete(filter) => {
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
            .map_err(store_error)
    }
}

/// The caller-facing refusal for a full folder.
pub(crate) fn full() -> Status {
    Status::resource_exhausted(format!("a folder holds at most {MAX_ITEMS_PER_FOLDER} items"))
}
