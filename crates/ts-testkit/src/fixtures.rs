//! Small builders and probes shared by the end-to-end tests.

use std::future::Future;
use std::time::Duration;

use futures::TryStreamExt;
use ts_proto::public::item_content::Content;
use ts_proto::public::{ItemContent, Query};

/// A find query on `sales.orders` with `filter`.
pub fn query_content(filter: &str) -> ItemContent {
    ItemContent {
        content: Some(Content::Query(Query {
            database: "sales".into(),
            collection: "orders".into(),
            filter: filter.into(),
            ..Default::default()
        })),
    }
}

/// Every document of every collection in `db`, as relaxed extended JSON, one per line: what
/// a backup or a database administrator would see.
pub async fn dump_database(db: &mongodb::Database) -> anyhow::Result<String> {
    let mut out = String::new();
    for name in db.list_collection_names().await? {
        let docs: Vec<bson::Document> = db.collection(&name).find(bson::doc! {}).await?.try_collect().await?;
        for d in docs {
            out.push_str(&serde_json::to_string(&bson::Bson::Document(d).into_relaxed_extjson())?);
            out.push('\n');
        }
    }
    Ok(out)
}

/// One stored document, as the exact BSON bytes the server returned.
#[derive(Debug, Clone)]
pub struct RawDocument {
    /// The collection it is in.
    pub collection: String,
    /// Its raw BSON bytes, binary fields included as they are stored.
    pub bytes: Vec<u8>,
}

/// Every document of every collection in `db` as raw BSON bytes: what a backup holds, with
/// binary fields unencoded, so a byte scan sees exactly what a thief of the files would.
pub async fn raw_documents(db: &mongodb::Database) -> anyhow::Result<Vec<RawDocument>> {
    let mut out = Vec::new();
    for name in db.list_collection_names().await? {
        let docs: Vec<bson::RawDocumentBuf> =
            db.collection::<bson::RawDocumentBuf>(&name).find(bson::doc! {}).await?.try_collect().await?;
        out.extend(docs.into_iter().map(|d| RawDocument { collection: name.clone(), bytes: d.into_bytes() }));
    }
    Ok(out)
}

/// Whether `needle` occurs anywhere in `haystack`, byte for byte.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `secret` occurs in `bytes` as a whole token: a 6-digit code must not count as
/// found inside a longer number that happens to contain it (a secret longer than 12 bytes
/// counts wherever it occurs).
pub fn contains_token(bytes: &[u8], secret: &[u8]) -> bool {
    !secret.is_empty()
        && (0..(bytes.len() + 1).saturating_sub(secret.len()))
            .filter(|&i| bytes[i..].starts_with(secret))
            .any(|i| stands_alone(bytes, i, secret.len()))
}

/// Whether the `len` bytes at `at` in `bytes` stand alone: no letter or digit right before or
/// after them, or they are longer than 12 bytes.
pub fn stands_alone(bytes: &[u8], at: usize, len: usize) -> bool {
    let is_word = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let before = at.checked_sub(1).and_then(|j| bytes.get(j));
    len > 12 || !is_word(before) && !is_word(bytes.get(at + len))
}

/// The collections whose raw documents contain `needle`, byte for byte (empty when none do).
pub fn collections_containing(docs: &[RawDocument], needle: &[u8]) -> Vec<String> {
    let mut found: Vec<String> =
        docs.iter().filter(|d| contains_bytes(&d.bytes, needle)).map(|d| d.collection.clone()).collect();
    found.dedup();
    found
}

/// How long `eventually` waits before giving up.
pub const EVENTUALLY_DEADLINE: Duration = Duration::from_secs(5);
/// How often `eventually` asks again.
pub const EVENTUALLY_INTERVAL: Duration = Duration::from_millis(25);

/// Asks `probe` every 25 ms until it returns `Some`, for at most 5 s of wall time, for effects
/// that land in the background (such as audit events). Fails with `what` on the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY_DEADLINE;
    loop {
        if let Some(v) = probe().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("not within {EVENTUALLY_DEADLINE:?}: {what}");
        }
        tokio::time::sleep(EVENTUALLY_INTERVAL).await;
    }
}
