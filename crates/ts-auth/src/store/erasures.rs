//! The `erasures` collection: one document per erased person, keyed by their pseudonym. While
//! an erasure runs it holds the email and user id it needs to find everything (so that a
//! crash part-way is completed by the next run); once done it keeps only the pseudonym, when,
//! by whom and what was removed: the record an operator shows a data-protection authority.
//! Also the privacy queries on the other collections (export, erasure, retention).

use bson::{DateTime, Document, doc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use ts_contract::ids::UserId;

use super::{LicenseDoc, SessionDoc, Store, StoreResult, UserDoc};

/// An erasure, running or done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasureDoc {
    /// The pseudonym that replaces the email.
    #[serde(rename = "_id")]
    pub pseudonym: String,
    /// The email, only while the erasure runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The account, only while the erasure runs (none for an email without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// `running` or `done`.
    pub state: String,
    /// `user` (DeleteMyAccount) or `operator` (EraseSubject).
    #[serde(default)]
    pub requested_by: String,
    /// The email had an account.
    #[serde(default)]
    pub had_account: bool,
    /// First started.
    pub started_at: DateTime,
    /// Last (re)started, so that only one runner takes a stalled erasure at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_at: Option<DateTime>,
    /// The run that owns it now: only that run marks it done (a run that was taken over
    /// finishes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<String>,
    /// Finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime>,
    /// What was removed (counts and folder ids, no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Document>,
}

/// The state of a running erasure.
pub const RUNNING: &str = "running";
/// The state of a finished one.
pub const DONE: &str = "done";

impl Store {
    /// Starts (or restarts) the erasure of `pseudonym`: a running one keeps its start time,
    /// a finished one runs again with what this run knows.
    pub async fn begin_erasure(
        &self,
        pseudonym: &str,
        email: &str,
        user_id: Option<&UserId>,
        requested_by: &str,
        now: DateTime,
    ) -> StoreResult<ErasureDoc> {
        let mut set = doc! {
            "email": email, "state": RUNNING, "requested_by": requested_by, "attempt_at": now,
            "attempt": uuid::Uuid::new_v4().to_string(),
        };
        if let Some(u) = user_id {
            set.insert("user_id", u.as_str());
            set.insert("had_account", true);
        }
        self.erasures
            .find_one_and_update(doc! { "_id": pseudonym }, doc! { "$set": set, "$setOnInsert": { "started_at": now } })
            .upsert(true)
            .return_document(mongodb::options::ReturnDocument::After)
            .await?
            .ok_or_else(|| mongodb::error::Error::custom("erasure upsert returned nothing"))
    }

    /// Takes a running erasure whose last attempt began before `stale` for this runner;
    /// none when no erasure is waiting (or another runner took it first).
    pub async fn claim_stalled_erasure(&self, stale: DateTime, now: DateTime) -> StoreResult<Option<ErasureDoc>> {
        self.erasures
            .find_one_and_update(
                doc! { "state": RUNNING, "attempt_at": { "$lt": stale } },
                doc! { "$set": { "attempt_at": now, "attempt": uuid::Uuid::new_v4().to_string() } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await
    }

    /// Marks the erasure done and forgets the email and user id it held, if run `attempt`
    /// still owns it; false when another run took it over (that run finishes it).
    pub async fn finish_erasure(
        &self,
        pseudonym: &str,
        attempt: &str,
        outcome: Document,
        now: DateTime,
    ) -> StoreResult<bool> {
        let done = self
            .erasures
            .update_one(
                doc! { "_id": pseudonym, "state": RUNNING, "attempt": attempt },
                doc! {
                    "$set": { "state": DONE, "finished_at": now, "outcome": outcome },
                    "$unset": { "email": "", "user_id": "", "attempt_at": "", "attempt": "" },
                },
            )
            .await?;
        Ok(done.modified_count == 1)
    }

    /// Records the account an erasure found after it began (made while it ran).
    pub async fn erasure_found_account(&self, pseudonym: &str, user_id: &UserId) -> StoreResult<()> {
        self.erasures
            .update_one(
                doc! { "_id": pseudonym, "state": RUNNING },
                doc! { "$set": { "user_id": user_id.as_str(), "had_account": true } },
            )
            .await
            .map(drop)
    }

    /// Whether an erasure of `pseudonym` is running.
    pub async fn erasure_is_running(&self, pseudonym: &str) -> StoreResult<bool> {
        Ok(self.erasures.count_documents(doc! { "_id": pseudonym, "state": RUNNING }).limit(1).await? > 0)
    }

    /// An erasure, if there is one.
    pub async fn erasure(&self, pseudonym: &str) -> StoreResult<Option<ErasureDoc>> {
        self.erasures.find_one(doc! { "_id": pseudonym }).await
    }

    /// A user by email, if there is one.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserDoc>> {
        self.users.find_one(doc! { "email": email }).await
    }

    /// Deletes a user.
    pub async fn delete_user(&self, id: &UserId) -> StoreResult<()> {
        self.users.delete_one(doc! { "_id": id.as_str() }).await.map(drop)
    }

    /// Every session of a user, newest first (at most `limit`).
    pub async fn sessions_of(&self, user_id: &UserId, limit: i64) -> StoreResult<Vec<SessionDoc>> {
        self.sessions
            .find(doc! { "user_id": user_id.as_str() })
            .sort(doc! { "created_at": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// Whether a revocation of this user's sessions still waits for Redis.
    pub async fn revocation_pending_of(&self, user_id: &UserId) -> StoreResult<bool> {
        let n = self
            .sessions
            .count_documents(doc! { "user_id": user_id.as_str(), "revocation_pending": true })
            .limit(1)
            .await?;
        Ok(n > 0)
    }

    /// Strips every session of a user down to what revocation still needs (its id, when it
    /// was revoked, until when a token of it could live): the user id and the refresh
    /// hashes go. The retention job deletes what is left once no token can need it; until
    /// then a Redis that lost its data is given these revocations again.
    pub async fn strip_sessions_of(&self, user_id: &UserId, keep_until: DateTime) -> StoreResult<u64> {
        let stripped = self
            .sessions
            .update_many(
                doc! { "user_id": user_id.as_str() },
                doc! {
                    "$unset": { "user_id": "", "refresh_hash": "", "used_hashes": "", "last_rotation": "" },
                    "$max": { "expires_at": keep_until },
                },
            )
            .await?;
        Ok(stripped.modified_count)
    }

    /// Whether run `attempt` still owns the running erasure of `pseudonym`.
    pub async fn owns_erasure(&self, pseudonym: &str, attempt: &str) -> StoreResult<bool> {
        let found = self
            .erasures
            .count_documents(doc! { "_id": pseudonym, "state": RUNNING, "attempt": attempt })
            .limit(1)
            .await?;
        Ok(found > 0)
    }

    /// The licenses whose address or admin lists name `email`.
    pub async fn licenses_listing(&self, email: &str) -> StoreResult<Vec<LicenseDoc>> {
        self.licenses
            .find(doc! { "$or": [ { "emails": email }, { "admin_emails": email } ] })
            .await?
            .try_collect()
            .await
    }

    /// Takes `email` out of every license's address and admin lists; how many changed.
    pub async fn pull_license_email(&self, email: &str) -> StoreResult<u64> {
        let changed = self
            .licenses
            .update_many(
                doc! { "$or": [ { "emails": email }, { "admin_emails": email } ] },
                doc! { "$pull": { "emails": email, "admin_emails": email } },
            )
            .await?;
        Ok(changed.modified_count)
    }

    /// Retention: codes that expired before `before`.
    pub async fn purge_codes(&self, before: DateTime) -> StoreResult<u64> {
        Ok(self.codes.delete_many(doc! { "expires_at": { "$lt": before } }).await?.deleted_count)
    }

    /// Retention: sessions that expired, or ended, before `before` and whose revocation is
    /// no longer waiting for Redis (the caller keeps `before` older than an access token's
    /// life, so that a Redis that lost its data can be given every revocation that matters).
    pub async fn purge_sessions(&self, before: DateTime) -> StoreResult<u64> {
        let ended = doc! {
            "$or": [ { "expires_at": { "$lt": before } }, { "revoked": true, "revoked_at": { "$lt": before } } ],
            "revocation_pending": { "$ne": true },
        };
        Ok(self.sessions.delete_many(ended).await?.deleted_count)
    }
}
