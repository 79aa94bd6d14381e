//! The `audit_events` collection: this service's own events and those that the gateway,
//! invitations, auth and keyvault record through `AuditIngestService`. Ids in an event are
//! kept as the recording service reported them (bounded, possibly empty), not parsed: the
//! trail records what was claimed, and an event is never refused for its folder id's shape.

use bson::{DateTime, Document, doc};
use serde::{Deserialize, Serialize};
use ts_contract::ids::{FolderId, UserId};

use super::{Store, StoreResult, find_page};
use crate::paging::EventCursor;

/// An audit event as stored. `expires_at` drives the retention TTL index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEventDoc {
    /// Event id.
    #[serde(rename = "_id")]
    pub id: String,
    /// When it happened.
    pub time: DateTime,
    /// Who acted: their email, or `operator`.
    #[serde(default)]
    pub actor_email: String,
    /// Their user id, empty when they have no account.
    #[serde(default)]
    pub actor_user_id: String,
    /// The folder concerned, or empty.
    #[serde(default)]
    pub folder_id: String,
    /// The license concerned, or empty.
    #[serde(default)]
    pub license_id: String,
    /// Action name, such as `item.create`.
    #[serde(default)]
    pub action: String,
    /// gRPC code name of the outcome, such as `OK`.
    #[serde(default)]
    pub status_code: String,
    /// The request id.
    #[serde(default)]
    pub request_id: String,
    /// When the retention TTL removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime>,
}

/// Which events a listing reads.
#[derive(Debug, Clone, Copy)]
pub enum EventScope<'a> {
    /// A folder's trail.
    Folder(&'a FolderId),
    /// A user's failed actions: by their user id, or by their email before they had one.
    Errors {
        /// The user.
        user_id: &'a UserId,
        /// Their email.
        email: &'a str,
    },
    /// A license's events.
    License(&'a str),
    /// The events where a person is the actor: by their user id, or by their email where no
    /// user id is named (before they had an account, or without one).
    Actor {
        /// The user, if they have an account.
        user_id: Option<&'a UserId>,
        /// Their email.
        email: &'a str,
    },
}

/// The events whose actor is `user_id` or `email` (an erasure replaces both).
fn acted_by(user_id: Option<&UserId>, email: &str) -> Document {
    match user_id {
        Some(u) => doc! { "$or": [{ "actor_user_id": u.as_str() }, { "actor_email": email }] },
        None => doc! { "actor_email": email },
    }
}

impl Store {
    /// Appends an event.
    pub async fn insert_event(&self, event: &AuditEventDoc) -> StoreResult<()> {
        self.events().insert_one(event).await.map(drop)
    }

    /// A page of events in `scope`, newest first, after `after`.
    pub async fn event_page(
        &self,
        scope: EventScope<'_>,
        after: Option<&EventCursor>,
        size: usize,
    ) -> StoreResult<(Vec<AuditEventDoc>, bool)> {
        let mut filter = match scope {
            EventScope::Folder(folder_id) => doc! { "folder_id": folder_id.as_str() },
            EventScope::Errors { user_id, email } => {
                // Failed sign-ins before the account existed name only the address tried.
                let mine = doc! { "$or": [
                    { "actor_user_id": user_id.as_str() },
                    { "actor_user_id": "", "actor_email": email },
                ] };
                doc! { "$and": [mine, { "status_code": { "$ne": "OK" } }] }
            }
            EventScope::License(license_id) => doc! { "license_id": license_id },
            EventScope::Actor { user_id, email } => {
                let theirs = match user_id {
                    Some(u) => doc! { "$or": [
                        { "actor_user_id": u.as_str() },
                        { "actor_user_id": "", "actor_email": email },
                    ] },
                    None => doc! { "actor_user_id": "", "actor_email": email },
                };
                // Under `$and`, so that a cursor's `$or` below does not replace it.
                doc! { "$and": [theirs] }
            }
        };
        if let Some(c) = after {
            let at = c.time;
            filter.insert("$or", vec![doc! { "time": { "$lt": at } }, doc! { "time": at, "_id": { "$lt": &c.id } }]);
        }
        find_page(&self.events(), filter, doc! { "time": -1, "_id": -1 }, size).await
    }

    /// Names `pseudonym` as the actor of every event by `user_id` or `email`, and drops the
    /// user id; how many changed.
    pub async fn pseudonymise_events(
        &self,
        user_id: Option<&UserId>,
        email: &str,
        pseudonym: &str,
    ) -> StoreResult<u64> {
        let set = doc! { "$set": { "actor_email": pseudonym, "actor_user_id": "" } };
        Ok(self.events().update_many(acted_by(user_id, email), set).await?.modified_count)
    }

    /// Names `pseudonym` as the actor of the event `id`, and drops its user id.
    pub async fn pseudonymise_event(&self, id: &str, pseudonym: &str) -> StoreResult<()> {
        let set = doc! { "$set": { "actor_email": pseudonym, "actor_user_id": "" } };
        self.events().update_one(doc! { "_id": id }, set).await.map(drop)
    }

    /// Deletes the events whose retention ended before `before`; how many.
    pub async fn purge_events(&self, before: DateTime) -> StoreResult<u64> {
        Ok(self.events().delete_many(doc! { "expires_at": { "$lt": before } }).await?.deleted_count)
    }
}
