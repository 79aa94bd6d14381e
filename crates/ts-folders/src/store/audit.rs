//! The `audit_events` collection: this service's own events and those that the gateway,
//! invitations, auth and keyvault record through `AuditIngestService`. Ids in an event are
//! kept as the recording service reported them (bounded, possibly empty), not parsed: the
//! trail records what was claimed, and an event is never refused for its folder id's shape.

use bson::{DateTime, doc};
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
        };
        if let Some(c) = after {
            let at = c.time;
            filter.insert("$or", vec![doc! { "time": { "$lt": at } }, doc! { "time": at, "_id": { "$lt": &c.id } }]);
        }
        find_page(&self.events(), filter, doc! { "time": -1, "_id": -1 }, size).await
    }
}
