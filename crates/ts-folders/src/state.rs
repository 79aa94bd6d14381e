//! `Folders`, the domain state every operation runs on: the store, data keys, auth's
//! identity service, the Redis generations and what is kept in memory under them, and the clock. The gRPC edge holds one and calls its
//! operations (in `folders`, `members`, `items`, `audit`, `context`, `rotation` and
//! `privacy`).

use std::sync::Arc;
use std::time::SystemTime;

use ts_contract::clock::SharedClock;
use ts_contract::ids::{FolderId, ItemId};
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_runtime::client::InternalChannel;
use ts_stores::cache::{Cache, Tagged};

use crate::context::Answers;
use crate::items::{KeptItem, KeptPage, PageKey};
use crate::keys::FolderKeys;
use crate::privacy::ErasedIds;
use crate::store::{FolderDoc, Store};

/// The folders domain: what every operation needs.
pub struct Folders {
    pub(crate) store: Store,
    pub(crate) keys: Arc<FolderKeys>,
    pub(crate) identity: IdentityServiceClient<InternalChannel>,
    pub(crate) cache: Cache,
    /// "May share" and membership answers, under their generations.
    pub(crate) answers: Answers,
    /// Stored folders, under their generations.
    pub(crate) folder_docs: Tagged<FolderId, Arc<FolderDoc>>,
    /// Stored items, under their folders' generations.
    pub(crate) items: Tagged<(FolderId, ItemId), KeptItem>,
    /// Pages of stored items, under their folders' generations.
    pub(crate) pages: Tagged<PageKey, KeptPage>,
    /// Pages of users' memberships, under the user's generation and each folder's.
    pub(crate) listings: Tagged<crate::folders::ListingKey, crate::folders::KeptListing>,
    pub(crate) clock: SharedClock,
    pub(crate) audit_retention_days: u32,
    /// Erased user ids seen (tombstones, never removed), so that a write by one of them
    /// does not read MongoDB twice.
    pub(crate) erased: ErasedIds,
}

impl std::fmt::Debug for Folders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Folders").field("db", &self.store.name()).finish_non_exhaustive()
    }
}

impl Folders {
    /// Now, by the injected clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    /// Now as a BSON date, for stored times.
    pub(crate) fn bson_now(&self) -> bson::DateTime {
        ts_contract::clock::bson_date(self.now())
    }
}
