//! The folders service's collections as typed documents: `folders`, `members` (with
//! `spent_invitations`), `items`, `audit_events` and `erased_users`, one file each. Every
//! filter and update is written here; the domain reads and writes whole typed documents, and
//! field names stay exactly as stored (operator tools, other crates' tests and existing data
//! depend on them).

mod audit;
mod erased;
mod folders;
mod items;
mod members;

use std::time::Duration;

use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::{ClientSession, Collection, Database, IndexModel};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use self::audit::{AuditEventDoc, EventScope};
pub use self::erased::ErasedUserDoc;
pub use self::folders::FolderDoc;
pub use self::items::{ItemDoc, ItemWrite, Slots};
pub use self::members::{AccessChange, Added, MemberDoc, Removal, SpentInvitationDoc};

/// A store failure; the domain turns it into `FoldersError::Store`.
pub type StoreResult<T> = mongodb::error::Result<T>;

/// Folders' schema: raise the version whenever [`Store::ensure_indexes`] changes, so that
/// `teamshare migrate` runs it again (and production replicas refuse to start until it has).
/// Version 2: the indexes an erasure reads by (items and folders by email, spent invitations
/// by user).
pub const SCHEMA: ts_stores::Schema = ts_stores::Schema::new("folders", 2);

/// The sealed part of a folder or item, all that re-encryption reads. Kept loose (a string
/// id, an optional version) so that a pass never stops on a document it need not understand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedDoc {
    /// The folder or item id.
    #[serde(rename = "_id")]
    pub id: String,
    /// The data-key version of `enc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_version: Option<i64>,
    /// An item's version, if it has one: a rewrite must find it unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Bson>,
    /// Field name → envelope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<Document>,
}

/// The folders service's MongoDB database.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// The collections in `db`.
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    /// The database's name, for diagnostics.
    pub fn name(&self) -> &str {
        self.db.name()
    }

    fn folders(&self) -> Collection<FolderDoc> {
        self.db.collection("folders")
    }

    fn members(&self) -> Collection<MemberDoc> {
        self.db.collection("members")
    }

    fn spent(&self) -> Collection<SpentInvitationDoc> {
        self.db.collection("spent_invitations")
    }

    fn items(&self) -> Collection<ItemDoc> {
        self.db.collection("items")
    }

    fn events(&self) -> Collection<AuditEventDoc> {
        self.db.collection(ts_contract::audit::COLLECTION)
    }

    fn erased(&self) -> Collection<ErasedUserDoc> {
        self.db.collection("erased_users")
    }

    async fn session(&self) -> StoreResult<ClientSession> {
        self.db.client().start_session().await
    }

    /// Creates the indexes every query here relies on, and the audit retention TTL: the
    /// migration step of [`SCHEMA`], run by `teamshare migrate`, not on every start.
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        let unique = IndexOptions::builder().unique(true).name("folder_user_unique".to_owned()).build();
        let members = self.members();
        members
            .create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "user_id": 1 }).options(unique).build())
            .await?;
        members.create_index(IndexModel::builder().keys(doc! { "user_id": 1, "folder_id": 1 }).build()).await?;
        let items = self.items();
        items
            .create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "created_at": 1, "_id": 1 }).build())
            .await?;
        // An erasure finds the email it replaces without reading every item or folder.
        items.create_index(IndexModel::builder().keys(doc! { "shared_by_email": 1 }).build()).await?;
        items.create_index(IndexModel::builder().keys(doc! { "updated_by_email": 1 }).build()).await?;
        self.folders().create_index(IndexModel::builder().keys(doc! { "created_by_email": 1 }).build()).await?;
        let spent = self.spent();
        spent.create_index(IndexModel::builder().keys(doc! { "folder_id": 1 }).build()).await?;
        spent.create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build()).await?;
        let events = self.events();
        events.create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "actor_user_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "license_id": 1, "time": -1 }).build()).await?;
        events.create_index(IndexModel::builder().keys(doc! { "actor_email": 1, "time": -1 }).build()).await?;
        let ttl = IndexOptions::builder().expire_after(Duration::ZERO).name("retention_ttl".to_owned()).build();
        events.create_index(IndexModel::builder().keys(doc! { "expires_at": 1 }).options(ttl).build()).await?;
        Ok(())
    }
}

/// The string values of a `distinct` answer (ids are stored as strings; anything else is
/// skipped).
fn strings(values: Vec<Bson>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|v| match v {
            Bson::String(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// One page of `coll` matching `filter` in `sort` order, and whether more follow (one
/// document more is read to know).
async fn find_page<T>(
    coll: &Collection<T>,
    filter: Document,
    sort: Document,
    size: usize,
) -> StoreResult<(Vec<T>, bool)>
where
    T: DeserializeOwned + Send + Sync,
{
    let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
    let mut docs: Vec<T> = coll.find(filter).sort(sort).limit(limit).await?.try_collect().await?;
    let more = docs.len() > size;
    docs.truncate(size);
    Ok((docs, more))
}
