//! Auth's persistence: typed documents of the `users`, `sessions`, `verification_codes`,
//! `licenses`, `settings` and `rate_counters` collections, and every query and update on
//! them. Nothing outside this module touches a collection or builds a filter.
//!
//! Field names and BSON types are read by other services, tests and operators directly;
//! they must not change. Fields that older documents may lack are `Option` or defaulted.

mod codes;
mod counters;
mod erasures;
mod licenses;
mod sessions;
mod settings;
mod users;

use std::time::Duration;

use bson::{Document, doc};
use futures::TryStreamExt;
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use codes::CodeDoc;
pub use counters::CounterDoc;
pub use erasures::{DONE, ErasureDoc, RUNNING};
pub use licenses::LicenseDoc;
pub use sessions::{RotationDoc, SessionDoc, Sessions};
pub use settings::SettingsDoc;
pub use users::UserDoc;

/// Result of store operations.
pub type StoreResult<T> = mongodb::error::Result<T>;

/// Auth's schema: raise the version whenever [`Store::ensure_indexes`] changes, so that
/// `teamshare migrate` runs it again (and production replicas refuse to start until it has).
pub const SCHEMA: ts_stores::Schema = ts_stores::Schema::new("auth", 2);

/// Auth persistence: the only code that touches auth's collections.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    users: Collection<UserDoc>,
    sessions: Collection<SessionDoc>,
    codes: Collection<CodeDoc>,
    licenses: Collection<LicenseDoc>,
    settings: Collection<SettingsDoc>,
    counters: Collection<CounterDoc>,
    erasures: Collection<ErasureDoc>,
}

/// A document read with a projection of `_id` alone.
#[derive(Debug, Deserialize)]
struct IdOnly<T> {
    #[serde(rename = "_id")]
    id: T,
}

/// The ids of the documents of `coll` matching `filter`, read with an `_id` projection,
/// up to `limit` when one is given. An id not in its type's format (a hand-made document) is
/// skipped and logged, so that it cannot stop a revocation of all the others.
async fn ids<D: Send + Sync, T: DeserializeOwned + Send + Sync>(
    coll: &Collection<D>,
    filter: Document,
    limit: Option<i64>,
) -> StoreResult<Vec<T>> {
    let coll = coll.clone_with_type::<IdOnly<bson::Bson>>();
    let found = coll.find(filter).projection(doc! { "_id": 1 });
    let found = match limit {
        Some(n) => found.limit(n),
        None => found,
    };
    let raw: Vec<IdOnly<bson::Bson>> = found.await?.try_collect().await?;
    let total = raw.len();
    let parsed: Vec<T> = raw.into_iter().filter_map(|d| bson::from_bson(d.id).ok()).collect();
    if parsed.len() < total {
        tracing::error!(skipped = total - parsed.len(), collection = coll.name(), "stored ids not in their format");
    }
    Ok(parsed)
}

impl Store {
    /// The collections in `db`.
    pub fn new(db: Database) -> Self {
        Store {
            users: db.collection("users"),
            sessions: db.collection("sessions"),
            codes: db.collection("verification_codes"),
            licenses: db.collection("licenses"),
            settings: db.collection("settings"),
            counters: db.collection("rate_counters"),
            erasures: db.collection("erasures"),
            db,
        }
    }

    /// The database's name.
    pub fn db_name(&self) -> &str {
        self.db.name()
    }

    /// Unique emails; TTL expiry of codes, sessions and rate counters. The migration step of
    /// [`SCHEMA`]: run by `teamshare migrate`, not on every start.
    pub async fn ensure_indexes(&self) -> StoreResult<()> {
        let unique = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().unique(true).name(name.to_owned()).build())
                .build()
        };
        let ttl = |field: &str| {
            IndexModel::builder()
                .keys(doc! { field: 1 })
                .options(IndexOptions::builder().expire_after(Duration::ZERO).name(format!("{field}_ttl")).build())
                .build()
        };
        self.users.create_index(unique(doc! { "email": 1 }, "email_unique")).await?;
        self.sessions.create_index(IndexModel::builder().keys(doc! { "user_id": 1 }).build()).await?;
        self.sessions.create_index(ttl("expires_at")).await?;
        // The revocation outbox: sessions revoked but not yet published to Redis.
        self.sessions.create_index(IndexModel::builder().keys(doc! { "revocation_pending": 1 }).build()).await?;
        self.codes.create_index(ttl("purge_at")).await?;
        self.counters.create_index(ttl("expires_at")).await?;
        // The erasures a crashed run left unfinished, found by the background runner.
        self.erasures.create_index(IndexModel::builder().keys(doc! { "state": 1, "attempt_at": 1 }).build()).await?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bson::Document;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// The stored keys of `value`, in order.
    pub(crate) fn keys<T: Serialize>(value: &T) -> Vec<String> {
        bson::to_document(value).unwrap().keys().cloned().collect()
    }

    /// `value` stored and read back, through both the document and the raw-bytes paths (the
    /// driver reads raw documents).
    pub(crate) fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> (T, T) {
        let stored: Document = bson::to_document(value).unwrap();
        let raw = bson::to_vec(&stored).unwrap();
        (bson::from_document(stored).unwrap(), bson::from_slice(&raw).unwrap())
    }

    /// A stored document with only `doc`'s fields, read as `T` through the raw path.
    pub(crate) fn load<T: DeserializeOwned>(doc: Document) -> T {
        bson::from_slice(&bson::to_vec(&doc).unwrap()).unwrap()
    }
}
