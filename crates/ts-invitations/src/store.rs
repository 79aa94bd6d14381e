//! The `invitations` and `invitation_counters` collections: typed documents, every query and
//! update, and the race-free caps on pending invitations.
//!
//! Counting and then inserting lets two concurrent invites both pass the cap (snapshot
//! isolation allows write skew). So each invite runs in a transaction that first touches a
//! counter document per folder and per invitee: concurrent invites on the same folder or
//! invitee then conflict, one is retried, and its count sees the other's insert.
//!
//! An erasure (BeginErasure) marks the same counter documents: `invitee:<email>` gets
//! `erasing: true` until FinishErasure deletes it, `inviter:<digest of the user id>` gets `erased: true` for
//! good. An invite's transaction reads them back from its own touches, so an invite and an
//! erasure conflict like two invites do, and no invite slips in after the erasure's scan.
//!
//! Field names and state strings are read by other services and tests directly; they must
//! not change.

use std::time::SystemTime;

use bson::{Bson, DateTime, Document, doc};
use futures::{FutureExt, TryStreamExt};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use ts_contract::clock::bson_date;
use ts_contract::ids::{FolderId, InvitationId, UserId};
use ts_contract::paging::{open_plain, plain_token};
use ts_proto::public::AccessLevel;

use crate::error::InvitationsError;

/// An invitation's state as stored. Expiry is not a state: a pending invitation past its
/// `expires_at` is shown as expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvitationState {
    /// Sent, not answered.
    Pending,
    /// Accepted by the invitee.
    Accepted,
    /// Declined by the invitee.
    Declined,
    /// Revoked by a manager, or because it can never make a membership.
    Revoked,
}

impl InvitationState {
    /// The stored string.
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationState::Pending => "pending",
            InvitationState::Accepted => "accepted",
            InvitationState::Declined => "declined",
            InvitationState::Revoked => "revoked",
        }
    }
}

impl From<InvitationState> for Bson {
    fn from(state: InvitationState) -> Bson {
        Bson::String(state.as_str().to_owned())
    }
}

/// One document of the `invitations` collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationDoc {
    /// The invitation's id.
    #[serde(rename = "_id")]
    pub id: InvitationId,
    /// The folder it invites to.
    pub folder_id: FolderId,
    /// Who is invited (normalised).
    pub invitee_email: String,
    /// Who invited, as shown to the invitee.
    pub inviter_email: String,
    /// Who invited: their MANAGE right is what the invitation stands on. Absent once the
    /// inviter's account was erased (their email is then a pseudonym): such an invitation can
    /// never make a membership again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inviter_user_id: Option<UserId>,
    /// The access the invitee gets.
    #[serde(with = "stored_access")]
    pub access: AccessLevel,
    /// The inviter's MANAGE epoch when they invited (from folders); empty on invitations
    /// made before epochs were stamped, which folders accepts as they were.
    #[serde(default)]
    pub inviter_manage_epoch: String,
    /// Where it stands.
    pub state: InvitationState,
    /// When it was made.
    pub created_at: DateTime,
    /// When it stops being acceptable.
    pub expires_at: DateTime,
    /// When the TTL index deletes it.
    pub purge_at: DateTime,
    /// When it was answered or revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<DateTime>,
    /// The ids derived from the inviters' `request_id`s (AIP-155) of every create that made or
    /// refreshed it, so that a retry of any of them returns it without mailing again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_keys: Vec<String>,
}

/// Access levels are stored as their protobuf numbers.
mod stored_access {
    use serde::{Deserialize, Deserializer, Serializer};
    use ts_proto::public::AccessLevel;

    pub fn serialize<S: Serializer>(access: &AccessLevel, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*access as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AccessLevel, D::Error> {
        let raw = i32::deserialize(d)?;
        AccessLevel::try_from(raw).map_err(|_| serde::de::Error::custom(format!("unknown access level {raw}")))
    }
}

/// One document of the `invitation_counters` collection: touched inside every invite's
/// transaction so that concurrent invites of one folder, one invitee or one inviter conflict,
/// with each other and with an erasure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CounterDoc {
    /// `folder:<id>`, `invitee:<email>` or `inviter:<digest of the user id>`.
    #[serde(rename = "_id")]
    pub key: String,
    /// How many invites touched it (absent on one an erasure made).
    #[serde(default)]
    pub touch: i64,
    /// On `invitee:<email>` from BeginErasure until FinishErasure: nobody may invite the address.
    #[serde(default)]
    pub erasing: bool,
    /// On `inviter:<digest of the user id>` from BeginErasure on, for good: the account was erased.
    #[serde(default)]
    pub erased: bool,
    /// On an erased `inviter:<digest of the user id>`: what replaced their email, so that an invite that
    /// raced the erasure can be erased the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudonym: Option<String>,
}

/// The counter document of a folder.
fn folder_key(id: &FolderId) -> String {
    format!("folder:{id}")
}

/// The counter document of an invitee; its `_id` holds the address.
fn invitee_key(email: &str) -> String {
    format!("invitee:{email}")
}

/// The counter document of an inviter.
/// An inviter's counter key: a digest of the user id, so that no invitation document holds
/// an erased account's id (the counter outlives the account for good).
fn inviter_key(id: &UserId) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_str().as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("inviter:{hex}")
}

/// What an erasure left on the counter documents of one invite.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErasureMarks {
    /// The invitee's address is being erased.
    pub invitee_erasing: bool,
    /// The inviter's account was erased: the pseudonym that replaced their email.
    pub inviter_erased: Option<String>,
}

/// Whose invitations an export or an erasure is about, in any state.
#[derive(Debug, Clone, Copy)]
pub enum Involving<'a> {
    /// Sent to this email.
    Invitee(&'a str),
    /// Sent by this user.
    Inviter(&'a UserId),
}

impl Involving<'_> {
    fn filter(self) -> Document {
        match self {
            Involving::Invitee(email) => doc! { "invitee_email": email },
            Involving::Inviter(user_id) => doc! { "inviter_user_id": user_id.as_str() },
        }
    }
}

/// What an invite that was kept by the store's caps and checks found instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cap {
    /// A live invitation of the same folder to the same email already exists (its id).
    Existing(InvitationId),
    /// Pending invitations of the folder.
    Folder,
    /// Pending invitations of the invitee.
    Invitee,
    /// The invitee's address is being erased.
    InviteeErasing,
    /// The inviter's account was erased.
    InviterErased,
}

/// Whose invitations a list or an expiry look-up is about.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A folder's.
    Folder(&'a FolderId),
    /// An invitee's, by email.
    Invitee(&'a str),
}

impl Scope<'_> {
    /// The live (pending, unexpired at `now`) invitations of this scope.
    fn live(self, now: SystemTime) -> Document {
        let mut filter = live(now);
        match self {
            Scope::Folder(id) => filter.insert("folder_id", id.as_str()),
            Scope::Invitee(email) => filter.insert("invitee_email", email),
        };
        filter
    }
}

/// The filter for invitations that still count: pending and not expired at `now`.
fn live(now: SystemTime) -> Document {
    doc! { "state": InvitationState::Pending, "expires_at": { "$gt": bson_date(now) } }
}

/// Where a page of a list starts: after this invitation in (`created_at`, `_id`) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// The last listed invitation's creation time.
    pub created_at: DateTime,
    /// The last listed invitation's id.
    pub id: InvitationId,
}

impl PageCursor {
    /// The cursor after `last`.
    pub fn after(last: &InvitationDoc) -> Self {
        PageCursor { created_at: last.created_at, id: last.id.clone() }
    }

    /// The page token: creation time in milliseconds and id, as a plain token.
    pub fn encode(&self) -> String {
        plain_token(&[self.created_at.timestamp_millis().to_string(), self.id.to_string()])
    }

    /// Reads a token made by `encode`.
    pub fn decode(token: &str) -> Result<Self, InvitationsError> {
        let parts = open_plain(token, 2).map_err(InvitationsError::invalid)?;
        let bad = || InvitationsError::InvalidArgument("page.page_token is not valid here".to_owned());
        let millis: i64 = parts[0].parse().map_err(|_| bad())?;
        let id = InvitationId::parse("page.page_token", &parts[1]).map_err(|_| bad())?;
        Ok(PageCursor { created_at: DateTime::from_millis(millis), id })
    }

    fn filter(&self) -> Document {
        doc! { "$or": [
            { "created_at": { "$gt": self.created_at } },
            { "created_at": self.created_at, "_id": { "$gt": self.id.as_str() } },
        ] }
    }
}

/// A refreshed invitation's new term and the manager it now stands on.
#[derive(Debug, Clone)]
pub struct Refresh<'a> {
    /// New expiry.
    pub expires_at: DateTime,
    /// New purge time.
    pub purge_at: DateTime,
    /// New access.
    pub access: AccessLevel,
    /// The inviting manager's email.
    pub inviter_email: &'a str,
    /// The inviting manager.
    pub inviter_user_id: &'a UserId,
    /// Their MANAGE epoch.
    pub inviter_manage_epoch: &'a str,
    /// The request that refreshed it, if it named one.
    pub request_key: Option<&'a str>,
}

/// How many request keys an invitation keeps (the newest).
const MAX_REQUEST_KEYS: usize = 20;

/// Invitations' schema: raise the version whenever [`Store::ensure_indexes`] changes, so that
/// `teamshare migrate` runs it again (and production replicas refuse to start until it has).
///
/// Version 2: invitations by inviter (exports and erasures).
pub const SCHEMA: ts_stores::Schema = ts_stores::Schema::new("invitations", 2);

/// Invitation persistence: the only code that touches the collections.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    invitations: Collection<InvitationDoc>,
    counters: Collection<CounterDoc>,
}

impl Store {
    /// The collections in `db`.
    pub fn new(db: Database) -> Self {
        Store { invitations: db.collection("invitations"), counters: db.collection("invitation_counters"), db }
    }

    /// Indexes for listing by invitee and by folder, for finding an inviter's invitations, and
    /// TTL purge of old invitations: the migration step of [`SCHEMA`], run by `teamshare
    /// migrate`, not on every start.
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        use mongodb::IndexModel;
        use mongodb::options::IndexOptions;
        let inv = &self.invitations;
        inv.create_index(IndexModel::builder().keys(doc! { "invitee_email": 1, "state": 1, "expires_at": 1 }).build())
            .await?;
        inv.create_index(IndexModel::builder().keys(doc! { "folder_id": 1, "state": 1, "expires_at": 1 }).build())
            .await?;
        // Exports and erasures find an inviter's invitations (in creation order for exports).
        inv.create_index(IndexModel::builder().keys(doc! { "inviter_user_id": 1, "created_at": 1, "_id": 1 }).build())
            .await?;
        let sparse = IndexOptions::builder().sparse(true).build();
        inv.create_index(IndexModel::builder().keys(doc! { "request_keys": 1 }).options(sparse).build()).await?;
        let ttl = IndexOptions::builder().expire_after(std::time::Duration::ZERO).name("purge_ttl".to_owned()).build();
        inv.create_index(IndexModel::builder().keys(doc! { "purge_at": 1 }).options(ttl).build()).await?;
        Ok(())
    }

    /// Inserts `invitation` unless a cap would be passed or a live twin (same folder and
    /// email) exists; returns what stopped it.
    pub async fn insert_capped(
        &self,
        invitation: &InvitationDoc,
        now: SystemTime,
        folder_cap: u32,
        invitee_cap: u32,
    ) -> mongodb::error::Result<Option<Cap>> {
        let (counters, invitations) = (&self.counters, &self.invitations);
        let mut session = self.db.client().start_session().await?;
        session
            .start_transaction()
            .and_run((counters, invitations, invitation), |session, (counters, invitations, invitation)| {
                async move {
                    let (folder, invitee) =
                        (Scope::Folder(&invitation.folder_id), Scope::Invitee(&invitation.invitee_email));
                    // The inviter first, so that an erased account is told so before anything else.
                    let mut keys = Vec::with_capacity(3);
                    keys.extend(invitation.inviter_user_id.as_ref().map(inviter_key));
                    keys.push(folder_key(&invitation.folder_id));
                    keys.push(invitee_key(&invitation.invitee_email));
                    for key in keys {
                        // Read back from the touch itself: an erasure that marks the document
                        // before this transaction commits conflicts with it (it is retried and
                        // sees the mark), one that marks it after sees this invitation.
                        let counter = counters
                            .find_one_and_update(doc! { "_id": key }, doc! { "$inc": { "touch": 1_i64 } })
                            .upsert(true)
                            .return_document(ReturnDocument::After)
                            .session(&mut *session)
                            .await?;
                        match counter {
                            Some(c) if c.erased => return Ok(Some(Cap::InviterErased)),
                            Some(c) if c.erasing => return Ok(Some(Cap::InviteeErasing)),
                            _ => {}
                        }
                    }
                    // After the counter touches: a concurrent invite of the same email
                    // conflicts here, so it sees this one's insert on its retry.
                    let mut twin = folder.live(now);
                    twin.insert("invitee_email", invitation.invitee_email.as_str());
                    if let Some(existing) = invitations.find_one(twin).session(&mut *session).await? {
                        return Ok(Some(Cap::Existing(existing.id)));
                    }
                    if invitations.count_documents(folder.live(now)).session(&mut *session).await?
                        >= u64::from(folder_cap)
                    {
                        return Ok(Some(Cap::Folder));
                    }
                    if invitations.count_documents(invitee.live(now)).session(&mut *session).await?
                        >= u64::from(invitee_cap)
                    {
                        return Ok(Some(Cap::Invitee));
                    }
                    invitations.insert_one(*invitation).session(&mut *session).await?;
                    Ok(None)
                }
                .boxed()
            })
            .await
    }

    /// The invitation with this id.
    pub async fn get(&self, id: &InvitationId) -> mongodb::error::Result<Option<InvitationDoc>> {
        self.invitations.find_one(doc! { "_id": id.as_str() }).await
    }

    /// Deletes an invitation.
    pub async fn delete(&self, id: &InvitationId) -> mongodb::error::Result<()> {
        self.invitations.delete_one(doc! { "_id": id.as_str() }).await.map(drop)
    }

    /// Moves a pending invitation to `state`; false when it was not pending any more.
    pub async fn finish(
        &self,
        id: &InvitationId,
        state: InvitationState,
        now: SystemTime,
    ) -> mongodb::error::Result<bool> {
        self.answer(id, &[InvitationState::Pending], state, now).await
    }

    /// Revokes an invitation that is pending or accepted (one that can never make a
    /// membership); false when it was neither.
    pub async fn revoke_spent(&self, id: &InvitationId, now: SystemTime) -> mongodb::error::Result<bool> {
        let from = [InvitationState::Pending, InvitationState::Accepted];
        self.answer(id, &from, InvitationState::Revoked, now).await
    }

    async fn answer(
        &self,
        id: &InvitationId,
        from: &[InvitationState],
        to: InvitationState,
        now: SystemTime,
    ) -> mongodb::error::Result<bool> {
        let state = match from {
            [one] => Bson::from(*one),
            many => doc! { "$in": many.iter().copied().map(Bson::from).collect::<Vec<_>>() }.into(),
        };
        let r = self
            .invitations
            .update_one(
                doc! { "_id": id.as_str(), "state": state },
                doc! { "$set": { "state": to, "answered_at": bson_date(now) } },
            )
            .await?;
        Ok(r.modified_count == 1)
    }

    /// Gives a pending invitation a new term and the manager who invited again.
    pub async fn refresh(&self, id: &InvitationId, r: Refresh<'_>) -> mongodb::error::Result<()> {
        let set = doc! {
            "expires_at": r.expires_at, "purge_at": r.purge_at, "access": r.access as i32,
            "inviter_email": r.inviter_email, "inviter_user_id": r.inviter_user_id.as_str(),
            "inviter_manage_epoch": r.inviter_manage_epoch,
        };
        let mut update = doc! { "$set": set };
        if let Some(key) = r.request_key {
            // The newest keys only: a retry comes within seconds, and the list stays small
            // however often the invitation is refreshed.
            let keys = doc! { "$each": [key], "$slice": -(MAX_REQUEST_KEYS as i64) };
            update.insert("$push", doc! { "request_keys": keys });
        }
        self.invitations
            .update_one(doc! { "_id": id.as_str(), "state": InvitationState::Pending }, update)
            .await
            .map(drop)
    }

    /// The invitation a create with this request key made or refreshed, if it is still kept.
    pub async fn by_request_key(&self, key: &str) -> mongodb::error::Result<Option<InvitationDoc>> {
        self.invitations.find_one(doc! { "request_keys": key }).await
    }

    /// Extends a live invitation to `expires_at`; false when it is not live at `now`.
    pub async fn extend(
        &self,
        id: &InvitationId,
        now: SystemTime,
        expires_at: DateTime,
        purge_at: DateTime,
    ) -> mongodb::error::Result<bool> {
        let mut filter = live(now);
        filter.insert("_id", id.as_str());
        let update = doc! { "$set": { "expires_at": expires_at, "purge_at": purge_at } };
        Ok(self.invitations.update_one(filter, update).await?.matched_count == 1)
    }

    /// When the first live invitation of `scope` expires.
    pub async fn first_expiry(&self, scope: Scope<'_>, now: SystemTime) -> mongodb::error::Result<Option<DateTime>> {
        let first = self.invitations.find_one(scope.live(now)).sort(doc! { "expires_at": 1 }).await?;
        Ok(first.map(|d| d.expires_at))
    }

    /// Up to `size` live invitations of `scope` in creation order, after `after`; and whether
    /// more follow (one more is read to know).
    pub async fn page(
        &self,
        scope: Scope<'_>,
        now: SystemTime,
        after: Option<&PageCursor>,
        size: usize,
    ) -> mongodb::error::Result<(Vec<InvitationDoc>, bool)> {
        self.paged(scope.live(now), after, size).await
    }

    /// Up to `size` invitations involving `who`, in any state, in creation order after
    /// `after`; and whether more follow.
    pub async fn involving_page(
        &self,
        who: Involving<'_>,
        after: Option<&PageCursor>,
        size: usize,
    ) -> mongodb::error::Result<(Vec<InvitationDoc>, bool)> {
        self.paged(who.filter(), after, size).await
    }

    async fn paged(
        &self,
        mut filter: Document,
        after: Option<&PageCursor>,
        size: usize,
    ) -> mongodb::error::Result<(Vec<InvitationDoc>, bool)> {
        if let Some(cursor) = after {
            filter.extend(cursor.filter());
        }
        let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
        let mut docs: Vec<InvitationDoc> = self
            .invitations
            .find(filter)
            .sort(doc! { "created_at": 1, "_id": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        let more = docs.len() > size;
        docs.truncate(size);
        Ok((docs, more))
    }

    /// Starts the erasure of `email` (and of the account `user_id`, when it has one):
    /// marks the counter documents first (no invite to the address until
    /// [`Store::finish_erasure`], none by the account ever), then deletes every invitation to
    /// the address and every pending one by the account, and makes the rest by the account
    /// (or naming the address as their inviter) name `pseudonym` instead. Returns how many
    /// invitations were deleted. Idempotent.
    pub async fn begin_erasure(
        &self,
        email: &str,
        user_id: Option<&UserId>,
        pseudonym: &str,
    ) -> mongodb::error::Result<u64> {
        // The marks before the scan: an invite that commits after them is refused, one that
        // committed before is found below.
        self.counters
            .update_one(doc! { "_id": invitee_key(email) }, doc! { "$set": { "erasing": true } })
            .upsert(true)
            .await?;
        if let Some(user_id) = user_id {
            self.counters
                .update_one(
                    doc! { "_id": inviter_key(user_id) },
                    doc! { "$set": { "erased": true, "pseudonym": pseudonym } },
                )
                .upsert(true)
                .await?;
        }
        let mut removed = self.delete_to(email).await?;
        if let Some(user_id) = user_id {
            removed += self.erase_inviter(user_id, pseudonym).await?;
        }
        // An address can name the inviter of invitations without (any longer) being an
        // account's: it goes too.
        self.invitations
            .update_many(doc! { "inviter_email": email }, doc! { "$set": { "inviter_email": pseudonym } })
            .await?;
        Ok(removed)
    }

    /// Deletes every invitation to `email`, in any state; how many.
    pub async fn delete_to(&self, email: &str) -> mongodb::error::Result<u64> {
        Ok(self.invitations.delete_many(Involving::Invitee(email).filter()).await?.deleted_count)
    }

    /// Deletes the pending invitations by `user_id` and makes the rest name `pseudonym` as
    /// their inviter, without the user id (or the request keys derived from it); how many were
    /// deleted.
    pub async fn erase_inviter(&self, user_id: &UserId, pseudonym: &str) -> mongodb::error::Result<u64> {
        let mut pending = Involving::Inviter(user_id).filter();
        pending.insert("state", InvitationState::Pending);
        let removed = self.invitations.delete_many(pending).await?.deleted_count;
        self.invitations
            .update_many(
                Involving::Inviter(user_id).filter(),
                doc! {
                    "$set": { "inviter_email": pseudonym },
                    "$unset": { "inviter_user_id": "", "request_keys": "" },
                },
            )
            .await?;
        Ok(removed)
    }

    /// Ends the erasure of `email`: deletes any invitation to it (and any pending one by
    /// `user_id`) that is still there, then its counter document (whose `_id` holds the
    /// address), so that it may be invited again. Returns how many invitations were deleted.
    /// Idempotent; the account's own mark stays.
    pub async fn finish_erasure(&self, email: &str, user_id: Option<&UserId>) -> mongodb::error::Result<u64> {
        let mut removed = self.delete_to(email).await?;
        if let Some(user_id) = user_id {
            let mut pending = Involving::Inviter(user_id).filter();
            pending.insert("state", InvitationState::Pending);
            removed += self.invitations.delete_many(pending).await?.deleted_count;
        }
        self.counters.delete_one(doc! { "_id": invitee_key(email) }).await?;
        Ok(removed)
    }

    /// The erasure marks on the counter documents of an invite of `email` by `inviter`.
    pub async fn erasure_marks(&self, email: &str, inviter: &UserId) -> mongodb::error::Result<ErasureMarks> {
        let keys = doc! { "_id": { "$in": [invitee_key(email), inviter_key(inviter)] } };
        let found: Vec<CounterDoc> = self.counters.find(keys).await?.try_collect().await?;
        let mut marks = ErasureMarks::default();
        for c in found {
            marks.invitee_erasing |= c.erasing;
            if c.erased {
                marks.inviter_erased = Some(c.pseudonym.unwrap_or_default());
            }
        }
        Ok(marks)
    }

    /// Deletes the invitations that closed before `before`: answered (accepted, declined) or
    /// revoked then, or pending but expired then. Returns how many.
    pub async fn purge_closed(&self, before: SystemTime) -> mongodb::error::Result<u64> {
        let before = bson_date(before);
        let pending = InvitationState::Pending;
        let filter = doc! { "$or": [
            { "state": { "$ne": pending }, "answered_at": { "$lt": before } },
            // Closed without a recorded time (none are written so): by its term.
            { "state": { "$ne": pending }, "answered_at": { "$exists": false }, "expires_at": { "$lt": before } },
            { "state": pending, "expires_at": { "$lt": before } },
        ] };
        let removed = self.invitations.delete_many(filter).await?.deleted_count;
        self.purge_idle_invitee_counters().await?;
        Ok(removed)
    }

    /// Deletes the `invitee:<email>` counters of addresses no invitation names any more (their
    /// ids hold the address); one being erased keeps its mark. A CreateInvitation racing the
    /// deletion conflicts with it in its transaction and makes the counter again.
    async fn purge_idle_invitee_counters(&self) -> mongodb::error::Result<()> {
        let idle = doc! { "_id": { "$regex": "^invitee:" }, "erasing": { "$ne": true } };
        let mut found = self.counters.find(idle).projection(doc! { "_id": 1 }).await?;
        while let Some(counter) = found.try_next().await? {
            let Some(email) = counter.key.strip_prefix("invitee:") else { continue };
            if self.invitations.count_documents(doc! { "invitee_email": email }).limit(1).await? == 0 {
                let still_idle = doc! { "_id": &counter.key, "erasing": { "$ne": true } };
                self.counters.delete_one(still_idle).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InvitationDoc {
        let at = DateTime::from_millis(1_700_000_000_123);
        InvitationDoc {
            id: InvitationId::new(),
            folder_id: FolderId::new(),
            invitee_email: "bob@example.com".into(),
            inviter_email: "alice@example.com".into(),
            inviter_user_id: Some(UserId::new()),
            access: AccessLevel::Edit,
            inviter_manage_epoch: "epoch".into(),
            state: InvitationState::Pending,
            created_at: at,
            expires_at: at,
            purge_at: at,
            answered_at: None,
            request_keys: vec![],
        }
    }

    #[test]
    fn invitations_stored_before_manage_epochs_still_load() {
        let mut stored = bson::to_document(&sample()).unwrap();
        stored.remove("inviter_manage_epoch");
        let loaded: InvitationDoc = bson::from_document(stored).unwrap();
        assert_eq!(loaded.inviter_manage_epoch, "");
    }

    #[test]
    fn documents_keep_the_stored_field_names_and_values() {
        let d = sample();
        let stored = bson::to_document(&d).unwrap();
        let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "_id",
                "folder_id",
                "invitee_email",
                "inviter_email",
                "inviter_user_id",
                "access",
                "inviter_manage_epoch",
                "state",
                "created_at",
                "expires_at",
                "purge_at"
            ]
        );
        assert_eq!(stored.get_str("_id").unwrap(), d.id.as_str());
        assert_eq!(stored.get_i32("access").unwrap(), AccessLevel::Edit as i32);
        assert_eq!(stored.get_str("state").unwrap(), "pending");
        assert_eq!(*stored.get_datetime("expires_at").unwrap(), d.expires_at);
        assert_eq!(bson::from_document::<InvitationDoc>(stored).unwrap(), d);
        for (state, text) in [
            (InvitationState::Pending, "pending"),
            (InvitationState::Accepted, "accepted"),
            (InvitationState::Declined, "declined"),
            (InvitationState::Revoked, "revoked"),
        ] {
            assert_eq!(bson::to_bson(&state).unwrap(), Bson::String(text.into()));
            assert_eq!(Bson::from(state), Bson::String(text.into()));
        }
    }

    #[test]
    fn invitations_of_an_erased_inviter_hold_no_user_id() {
        let mut d = sample();
        d.inviter_user_id = None;
        let stored = bson::to_document(&d).unwrap();
        assert!(!stored.contains_key("inviter_user_id"), "{stored:?}");
        assert_eq!(bson::from_document::<InvitationDoc>(stored).unwrap(), d);
    }

    #[test]
    fn counter_documents_load_with_or_without_marks() {
        let touched: CounterDoc = bson::from_document(doc! { "_id": "folder:x", "touch": 3_i64 }).unwrap();
        assert_eq!((touched.touch, touched.erasing, touched.erased, touched.pseudonym), (3, false, false, None));
        let erasing: CounterDoc =
            bson::from_document(doc! { "_id": "invitee:bob@example.com", "erasing": true }).unwrap();
        assert_eq!((erasing.touch, erasing.erasing, erasing.erased), (0, true, false));
        let erased: CounterDoc = bson::from_document(
            doc! { "_id": "inviter:u", "erased": true, "pseudonym": "erased-0123456789abcdef0123" },
        )
        .unwrap();
        assert!(erased.erased && !erased.erasing);
        assert_eq!(erased.pseudonym.as_deref(), Some("erased-0123456789abcdef0123"));
        let id = UserId::new();
        assert!(inviter_key(&id).starts_with("inviter:") && !inviter_key(&id).contains(id.as_str()));
        assert_eq!(inviter_key(&id).len(), "inviter:".len() + 32);
        assert_eq!(invitee_key("bob@example.com"), "invitee:bob@example.com");
    }

    #[test]
    fn involving_filters_name_the_stored_fields() {
        let id = UserId::new();
        assert_eq!(Involving::Invitee("bob@example.com").filter(), doc! { "invitee_email": "bob@example.com" });
        assert_eq!(Involving::Inviter(&id).filter(), doc! { "inviter_user_id": id.as_str() });
    }

    #[test]
    fn page_cursors_round_trip_and_refuse_forgeries() {
        let d = sample();
        let cursor = PageCursor::after(&d);
        let token = cursor.encode();
        assert_eq!(token, plain_token(&["1700000000123".to_owned(), d.id.to_string()]), "the old wire format");
        assert_eq!(PageCursor::decode(&token).unwrap(), cursor);
        let forged = [
            "%%%".to_owned(),
            plain_token(&["x".into(), d.id.to_string()]),
            plain_token(&["1".into(), "../etc".into()]),
            plain_token(&["1".into()]),
        ];
        for bad in &forged {
            match PageCursor::decode(bad) {
                Err(InvitationsError::InvalidArgument(m)) => {
                    assert!(m.starts_with("page.page_token is not valid here"))
                }
                other => panic!("{bad} gave {other:?}"),
            }
        }
    }
}
