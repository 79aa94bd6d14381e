//! The `rate_counters` collection: fixed-window counters (verification emails per email
//! and per client address, failed sign-ins per client address). Their ids are keyed
//! hashes, so no address or email is stored; the TTL index deletes them when their window
//! ends.

use bson::{DateTime, doc};
use serde::{Deserialize, Serialize};

use super::{Store, StoreResult};

/// A counter as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CounterDoc {
    /// `<kind>:<keyed hash>:<window start>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// Units taken in the window.
    #[serde(default)]
    pub n: i64,
    /// When the window ends (and the TTL index deletes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime>,
}

impl Store {
    /// Takes one unit from counter `id` unless it is at `cap`, with one conditional upsert:
    /// at the cap the upsert's insert collides with the existing counter, and this fails
    /// with a duplicate-key error, so concurrent takes at the cap cannot both pass.
    pub async fn take_unit(&self, id: &str, cap: u32, expires_at: DateTime) -> StoreResult<()> {
        self.counters
            .find_one_and_update(
                doc! { "_id": id, "n": { "$lt": i64::from(cap) } },
                doc! { "$inc": { "n": 1_i64 }, "$setOnInsert": { "expires_at": expires_at } },
            )
            .upsert(true)
            .await
            .map(drop)
    }

    /// The count of counter `id` (0 when there is none).
    pub async fn counted(&self, id: &str) -> StoreResult<i64> {
        Ok(self.counters.find_one(doc! { "_id": id }).await?.map_or(0, |c| c.n))
    }

    /// Adds one unit to counter `id`, with no cap.
    pub async fn count_unit(&self, id: &str, expires_at: DateTime) -> StoreResult<()> {
        self.counters
            .update_one(
                doc! { "_id": id },
                doc! { "$inc": { "n": 1_i64 }, "$setOnInsert": { "expires_at": expires_at } },
            )
            .upsert(true)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{keys, load, round_trip};
    use super::*;

    #[test]
    fn counters_keep_their_stored_field_names() {
        let c =
            CounterDoc { id: "per-email:00ff:3600".into(), n: 3, expires_at: Some(DateTime::from_millis(7_200_000)) };
        assert_eq!(keys(&c), ["_id", "n", "expires_at"]);
        assert_eq!(bson::to_document(&c).unwrap().get_i64("n").unwrap(), 3);
        let (a, b) = round_trip(&c);
        assert_eq!((a, b), (c.clone(), c));
        let bare: CounterDoc = load(doc! { "_id": "x" });
        assert_eq!((bare.n, bare.expires_at), (0, None));
    }
}
