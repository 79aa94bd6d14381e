//! The `invitations` collection and the race-free caps on pending invitations.
//!
//! Counting and then inserting lets two concurrent invites both pass the cap (snapshot
//! isolation allows write skew). So each invite runs in a transaction that first touches a
//! counter document per folder and per invitee: concurrent invites on the same folder or
//! invitee then conflict, one is retried, and its count sees the other's insert.

use std::time::SystemTime;

use bson::{Document, doc};
use futures::FutureExt;
use mongodb::{Collection, Database};
use ts_contract::clock::bson_date;

/// Invitation states as stored.
pub const PENDING: &str = "pending";
/// Accepted.
pub const ACCEPTED: &str = "accepted";
/// Declined.
pub const DECLINED: &str = "declined";
/// Revoked.
pub const REVOKED: &str = "revoked";

/// Why an invite was not inserted: a cap it would pass, or a pending twin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    /// A live invitation of the same folder to the same email already exists (its id).
    Existing(String),
    /// Pending invitations of the folder.
    Folder,
    /// Pending invitations of the invitee.
    Invitee,
}

/// Invitation persistence.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
}

impl Store {
    /// The collections in `db`.
    pub fn new(db: Database) -> Self {
        Store { db }
    }

    /// Invitations.
    pub fn invitations(&self) -> Collection<Document> {
        self.db.collection("invitations")
    }

    fn counters(&self) -> Collection<Document> {
        self.db.collection("invitation_counters")
    }

    /// Indexes for listing by invitee and by folder, and TTL purge of old invitations.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        use mongodb::IndexModel;
        use mongodb::options::IndexOptions;
        let inv = self.invitations();
        inv.create_index(IndexModel::builder().keys(doc! { "invitee_email": 1, "state": 1, "expires_at": 1 }).build())
            .await?;
        inv.create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "state": 1, "expires_at": 1 }).build())
            .await?;
        let ttl = IndexOptions::builder().expire_after(std::time::Duration::ZERO).name("purge_ttl".to_owned()).build();
        inv.create_index(IndexModel::builder().keys(doc! { "purge_at": 1 }).options(ttl).build()).await?;
        Ok(())
    }

    /// The filter for invitations that still count: pending and not expired at `now`.
    pub fn live(now: SystemTime) -> Document {
        doc! { "state": PENDING, "expires_at": { "$gt": bson_date(now) } }
    }

    /// Inserts `invitation` unless a cap would be passed; returns the cap that stopped it.
    pub async fn insert_capped(
        &self,
        invitation: Document,
        now: SystemTime,
        folder_cap: u32,
        invitee_cap: u32,
    ) -> mongodb::error::Result<Option<Cap>> {
        let folder_id = invitation.get_str("folder_id").unwrap_or_default().to_owned();
        let invitee = invitation.get_str("invitee_email").unwrap_or_default().to_owned();
        let (counters, invitations) = (self.counters(), self.invitations());
        let mut session = self.db.client().start_session().await?;
        session
            .start_transaction()
            .and_run(
                (&counters, &invitations, &invitation, &folder_id, &invitee),
                |session, (counters, invitations, invitation, folder_id, invitee)| {
                    async move {
                        for key in [format!("folder:{folder_id}"), format!("invitee:{invitee}")] {
                            counters
                                .update_one(doc! { "_id": key }, doc! { "$inc": { "touch": 1_i64 } })
                                .upsert(true)
                                .session(&mut *session)
                                .await?;
                        }
                        // After the counter touches: a concurrent invite of the same email
                        // conflicts here, so it sees this one's insert on its retry.
                        let mut twin = Store::live(now);
                        twin.extend(doc! { "folder_id": folder_id.as_str(), "invitee_email": invitee.as_str() });
                        if let Some(existing) = invitations.find_one(twin).session(&mut *session).await? {
                            return Ok(Some(Cap::Existing(existing.get_str("_id").unwrap_or_default().to_owned())));
                        }
                        let mut by_folder = Store::live(now);
                        by_folder.insert("folder_id", folder_id.as_str());
                        if invitations.count_documents(by_folder).session(&mut *session).await? >= u64::from(folder_cap)
                        {
                            return Ok(Some(Cap::Folder));
                        }
                        let mut by_invitee = Store::live(now);
                        by_invitee.insert("invitee_email", invitee.as_str());
                        if invitations.count_documents(by_invitee).session(&mut *session).await?
                            >= u64::from(invitee_cap)
                        {
                            return Ok(Some(Cap::Invitee));
                        }
                        invitations.insert_one((*invitation).clone()).session(&mut *session).await?;
                        Ok(None)
                    }
                    .boxed()
                },
            )
            .await
    }

    /// Moves a pending invitation to `state`; false when it was not pending any more.
    pub async fn finish(&self, id: &str, state: &str, now: SystemTime) -> mongodb::error::Result<bool> {
        let r = self
            .invitations()
            .update_one(
                doc! { "_id": id, "state": PENDING },
                doc! { "$set": { "state": state, "answered_at": bson_date(now) } },
            )
            .await?;
        Ok(r.modified_count == 1)
    }
}
