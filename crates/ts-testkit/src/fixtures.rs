//! Small builders and probes shared by the end-to-end tests.

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
