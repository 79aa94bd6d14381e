//! The `sessions` collection: one document per refresh-token family. The refresh token is
//! stored only as a SHA-256 hash (`refresh_hash`); hashes already used are kept
//! (`used_hashes`) so that a replay is recognised. A revoked session is also the entry of
//! the revocation outbox (`revocation_pending`) until Redis has its revocation.

use bson::{Binary, DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use ts_contract::ids::{SessionId, UserId};

use super::{Store, StoreResult, ids};

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionDoc {
    /// Session id.
    #[serde(rename = "_id")]
    pub id: SessionId,
    /// Its user.
    pub user_id: UserId,
    /// SHA-256 of the current refresh token's secret (generic binary).
    pub refresh_hash: Binary,
    /// SHA-256 of every refresh secret already rotated away.
    #[serde(default)]
    pub used_hashes: Vec<Binary>,
    /// Revoked (sign-out, reuse, license change). A document without it counts as revoked.
    #[serde(default = "revoked_when_unknown")]
    pub revoked: bool,
    /// When it was opened.
    pub created_at: DateTime,
    /// When the refresh token stops working (and the TTL index deletes it).
    pub expires_at: DateTime,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime>,
    /// Revoked, but not yet published to Redis (the outbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_pending: Option<bool>,
    /// The last rotation, for a client that retries it (its answer was lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<RotationDoc>,
}

/// The last rotation of a session's refresh token, kept for its retry window: the hash of the
/// token it replaced, and the new token sealed under a key that only that old token gives, so
/// the store never holds a usable token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotationDoc {
    /// SHA-256 of the replaced refresh secret.
    pub replaced_hash: Binary,
    /// Until when presenting the replaced token again returns the same new one.
    pub retry_until: DateTime,
    /// The new refresh token, sealed (a ts-crypto envelope bound to the session) under a key
    /// derived from the replaced secret.
    pub sealed_token: Binary,
}

fn revoked_when_unknown() -> bool {
    true
}

/// Which sessions a revocation is about.
#[derive(Debug, Clone, Copy)]
pub enum Sessions<'a> {
    /// One session.
    Id(&'a SessionId),
    /// One session, if it is this user's.
    OfUser {
        /// The session.
        id: &'a SessionId,
        /// Its user.
        user_id: &'a UserId,
    },
    /// Every session of these users.
    OfUsers(&'a [UserId]),
}

impl Sessions<'_> {
    fn filter(self) -> Document {
        match self {
            Sessions::Id(id) => doc! { "_id": id.as_str() },
            Sessions::OfUser { id, user_id } => doc! { "_id": id.as_str(), "user_id": user_id.as_str() },
            Sessions::OfUsers(users) => {
                doc! { "user_id": { "$in": users.iter().map(UserId::as_str).collect::<Vec<_>>() } }
            }
        }
    }
}

fn in_ids(ids: &[SessionId]) -> Document {
    doc! { "_id": { "$in": ids.iter().map(SessionId::as_str).collect::<Vec<_>>() } }
}

impl Store {
    /// Stores a new session.
    pub async fn insert_session(&self, session: &SessionDoc) -> StoreResult<()> {
        self.sessions.insert_one(session).await.map(drop)
    }

    /// A session, if there is one.
    pub async fn session(&self, id: &SessionId) -> StoreResult<Option<SessionDoc>> {
        self.sessions.find_one(doc! { "_id": id.as_str() }).await
    }

    /// A session, if there is one that is not revoked.
    pub async fn unrevoked_session(&self, id: &SessionId) -> StoreResult<Option<SessionDoc>> {
        self.sessions.find_one(doc! { "_id": id.as_str(), "revoked": false }).await
    }

    /// Replaces the refresh hash `current` of an unrevoked session by `new`, keeping
    /// `current` among the used ones, in one atomic update; false when the session no longer
    /// has `current` (another request rotated it first) or was revoked.
    pub async fn rotate_refresh(
        &self,
        id: &SessionId,
        current: &Binary,
        new: &Binary,
        rotation: &RotationDoc,
    ) -> StoreResult<bool> {
        let rotation = bson::to_bson(rotation).map_err(|e| mongodb::error::Error::custom(e.to_string()))?;
        let rotated = self
            .sessions
            .update_one(
                doc! { "_id": id.as_str(), "refresh_hash": current.clone(), "revoked": false },
                doc! {
                    "$set": { "refresh_hash": new.clone(), "last_rotation": rotation },
                    "$push": { "used_hashes": current.clone() },
                },
            )
            .await?;
        Ok(rotated.modified_count == 1)
    }

    /// The ids of the unrevoked sessions of `which`.
    pub async fn unrevoked_session_ids(&self, which: Sessions<'_>) -> StoreResult<Vec<SessionId>> {
        let mut live = which.filter();
        live.insert("revoked", false);
        ids(&self.sessions, live, None).await
    }

    /// Marks these sessions revoked at `now`; with `pending`, also as outbox entries.
    pub async fn mark_revoked(&self, ids: &[SessionId], now: DateTime, pending: bool) -> StoreResult<()> {
        let mut set = doc! { "revoked": true, "revoked_at": now };
        if pending {
            set.insert("revocation_pending", true);
        }
        self.sessions.update_many(in_ids(ids), doc! { "$set": set }).await.map(drop)
    }

    /// Takes these sessions out of the outbox: Redis has their revocation.
    pub async fn clear_revocation_pending(&self, ids: &[SessionId]) -> StoreResult<()> {
        self.sessions.update_many(in_ids(ids), doc! { "$unset": { "revocation_pending": "" } }).await.map(drop)
    }

    /// Up to `limit` sessions in the outbox.
    pub async fn pending_revocations(&self, limit: i64) -> StoreResult<Vec<SessionId>> {
        ids(&self.sessions, doc! { "revocation_pending": true }, Some(limit)).await
    }

    /// The sessions revoked after `since`.
    pub async fn revoked_since(&self, since: DateTime) -> StoreResult<Vec<SessionId>> {
        ids(&self.sessions, doc! { "revoked": true, "revoked_at": { "$gt": since } }, None).await
    }
}

#[cfg(test)]
mod tests {
    use bson::spec::BinarySubtype;

    use super::super::tests::{keys, load, round_trip};
    use super::*;

    fn bin(b: u8) -> Binary {
        Binary { subtype: BinarySubtype::Generic, bytes: vec![b; 32] }
    }

    fn fresh() -> SessionDoc {
        let at = DateTime::from_millis(1_700_000_000_123);
        SessionDoc {
            id: SessionId::new(),
            user_id: UserId::new(),
            refresh_hash: bin(1),
            used_hashes: vec![],
            revoked: false,
            created_at: at,
            expires_at: at,
            revoked_at: None,
            revocation_pending: None,
            last_rotation: None,
        }
    }

    #[test]
    fn a_new_session_is_stored_as_before() {
        let s = fresh();
        assert_eq!(keys(&s), ["_id", "user_id", "refresh_hash", "used_hashes", "revoked", "created_at", "expires_at"]);
        let stored = bson::to_document(&s).unwrap();
        assert_eq!(stored.get_str("_id").unwrap(), s.id.as_str());
        assert_eq!(stored.get_str("user_id").unwrap(), s.user_id.as_str());
        assert_eq!(stored.get_binary_generic("refresh_hash").unwrap(), &vec![1u8; 32]);
        assert!(stored.get_array("used_hashes").unwrap().is_empty());
        assert!(!stored.get_bool("revoked").unwrap());
        assert!(stored.get_datetime("expires_at").is_ok());
    }

    #[test]
    fn revoked_sessions_keep_their_stored_field_names() {
        let mut s = fresh();
        s.used_hashes = vec![bin(2), bin(3)];
        s.revoked = true;
        s.revoked_at = Some(s.created_at);
        s.revocation_pending = Some(true);
        assert_eq!(
            keys(&s),
            [
                "_id",
                "user_id",
                "refresh_hash",
                "used_hashes",
                "revoked",
                "created_at",
                "expires_at",
                "revoked_at",
                "revocation_pending"
            ]
        );
        let (a, b) = round_trip(&s);
        assert_eq!((a, b), (s.clone(), s));
    }

    #[test]
    fn sessions_without_optional_fields_load() {
        let s = fresh();
        let mut stored = bson::to_document(&s).unwrap();
        stored.remove("used_hashes");
        stored.remove("revoked");
        let loaded: SessionDoc = load(stored);
        assert!(loaded.used_hashes.is_empty());
        assert!(loaded.revoked, "a session without `revoked` was treated as revoked");
        assert_eq!((loaded.revoked_at, loaded.revocation_pending), (None, None));
    }

    #[test]
    fn revocation_filters_are_the_old_ones() {
        let (sid, uid) = (SessionId::new(), UserId::new());
        assert_eq!(Sessions::Id(&sid).filter(), doc! { "_id": sid.as_str() });
        assert_eq!(
            Sessions::OfUser { id: &sid, user_id: &uid }.filter(),
            doc! { "_id": sid.as_str(), "user_id": uid.as_str() }
        );
        let users = [uid.clone()];
        assert_eq!(Sessions::OfUsers(&users).filter(), doc! { "user_id": { "$in": [uid.as_str()] } });
    }
}
