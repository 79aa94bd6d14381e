//! The `verification_codes` collection: one live code per email, stored only as a keyed
//! hash, with the tries it has left. Purged by TTL (`purge_at`) an hour after it expires.

use bson::{Binary, DateTime, doc};
use mongodb::options::ReturnDocument;
use serde::{Deserialize, Serialize};

use super::{Store, StoreResult};

/// A verification code as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeDoc {
    /// The normalised email it was sent to.
    #[serde(rename = "_id")]
    pub email: String,
    /// HMAC of the code under the service secret (generic binary).
    pub code_mac: Binary,
    /// When it stops being accepted.
    pub expires_at: DateTime,
    /// Wrong tries it still allows.
    pub tries_left: i64,
    /// When the TTL index deletes it.
    pub purge_at: DateTime,
}

impl Store {
    /// Stores `code` in place of any earlier code of its email.
    pub async fn replace_code(&self, code: &CodeDoc) -> StoreResult<()> {
        self.codes.replace_one(doc! { "_id": code.email.as_str() }, code).upsert(true).await.map(drop)
    }

    /// Deletes the code of `email`.
    pub async fn delete_code(&self, email: &str) -> StoreResult<()> {
        self.codes.delete_one(doc! { "_id": email }).await.map(drop)
    }

    /// The code of `email`, if there is one.
    pub async fn code(&self, email: &str) -> StoreResult<Option<CodeDoc>> {
        self.codes.find_one(doc! { "_id": email }).await
    }

    /// Spends one try of the code of `email`, atomically, if it has one left; the code
    /// after the change.
    pub async fn spend_code_try(&self, email: &str) -> StoreResult<Option<CodeDoc>> {
        self.codes
            .find_one_and_update(
                doc! { "_id": email, "tries_left": { "$gt": 0_i64 } },
                doc! { "$inc": { "tries_left": -1_i64 } },
            )
            .return_document(ReturnDocument::After)
            .await
    }

    /// Deletes the code of `email` if it is still `code_mac`; false when it is not (a
    /// concurrent use consumed it, or a new code replaced it).
    pub async fn consume_code(&self, email: &str, code_mac: &Binary) -> StoreResult<bool> {
        let consumed = self.codes.delete_one(doc! { "_id": email, "code_mac": code_mac.clone() }).await?;
        Ok(consumed.deleted_count == 1)
    }
}

#[cfg(test)]
mod tests {
    use bson::spec::BinarySubtype;

    use super::super::tests::{keys, round_trip};
    use super::*;

    #[test]
    fn codes_keep_their_stored_field_names() {
        let at = DateTime::from_millis(1_700_000_000_123);
        let c = CodeDoc {
            email: "bob@example.com".into(),
            code_mac: Binary { subtype: BinarySubtype::Generic, bytes: vec![7; 32] },
            expires_at: at,
            tries_left: 5,
            purge_at: at,
        };
        assert_eq!(keys(&c), ["_id", "code_mac", "expires_at", "tries_left", "purge_at"]);
        let stored = bson::to_document(&c).unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), "bob@example.com");
        assert_eq!(stored.get_binary_generic("code_mac").unwrap(), &vec![7u8; 32]);
        assert_eq!(stored.get_i64("tries_left").unwrap(), 5);
        assert_eq!(*stored.get_datetime("purge_at").unwrap(), at);
        let (a, b) = round_trip(&c);
        assert_eq!((a, b), (c.clone(), c));
    }
}
