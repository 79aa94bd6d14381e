//! The `members` collection, and `spent_invitations` (the invitations whose accept made a
//! membership). Every membership change runs in one MongoDB transaction that first touches
//! the folder's document. Two changes to the same folder's members therefore conflict and
//! one is retried (the driver retries `TransientTransactionError`), so the number of MANAGE
//! members is read and written as one step: "a folder with members keeps at least one MANAGE
//! member" holds for any interleaving of promotions, demotions, removals, leaves and
//! accepts. The folder's `managers` field is set from the count inside the same
//! transaction, never moved blindly.
//!
//! Accepting an invitation spends it in the same transaction as the membership it makes, so
//! a replayed accept can repair nothing but a membership that was never made, and never
//! re-adds or raises one that changed since.

use bson::{DateTime, Document, doc};
use futures::FutureExt;
use mongodb::{ClientSession, Collection};
use serde::{Deserialize, Serialize};
use ts_contract::ids::{FolderId, InvitationId, UserId};
use ts_proto::internal::AddMemberRefusal;
use ts_proto::public::AccessLevel;

use super::{FolderDoc, Store, StoreResult, find_page};
use crate::paging::MemberCursor;

/// A membership as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    /// `<folder_id>:<user_id>`.
    #[serde(rename = "_id")]
    pub id: String,
    /// The folder.
    pub folder_id: FolderId,
    /// The member.
    pub user_id: UserId,
    /// The member's email when they joined.
    #[serde(default)]
    pub email: String,
    /// `AccessLevel` as its number.
    pub access: i32,
    /// When they joined.
    pub joined_at: DateTime,
    /// The invitation that made this membership, until the membership changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<InvitationId>,
    /// Changes every time the member becomes MANAGE (see `add_invited`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage_epoch: Option<String>,
}

impl MemberDoc {
    /// The id of `user_id`'s membership of `folder_id`.
    pub fn id_of(folder_id: &FolderId, user_id: &UserId) -> String {
        format!("{folder_id}:{user_id}")
    }

    /// The access level; an unknown number reads as none.
    pub fn level(&self) -> AccessLevel {
        AccessLevel::try_from(self.access).unwrap_or(AccessLevel::Unspecified)
    }
}

/// An invitation spent by the accept that made a membership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpentInvitationDoc {
    /// The invitation id.
    #[serde(rename = "_id")]
    pub id: InvitationId,
    /// Its folder.
    pub folder_id: FolderId,
    /// The invitee.
    pub user_id: UserId,
    /// When it was spent.
    pub spent_at: DateTime,
}

/// What a change of access found.
#[derive(Debug, Clone)]
pub enum AccessChange {
    /// Changed (or already at that level): the membership as it now is.
    Done(MemberDoc),
    /// No such folder.
    NoFolder,
    /// No such member.
    NoMember,
    /// It would leave the folder without a MANAGE member.
    LastManager,
}

/// What a removal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Removed.
    Done,
    /// No such folder.
    NoFolder,
    /// No such member.
    NoMember,
    /// It would leave the folder without a MANAGE member.
    LastManager,
}

/// What AddMember did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// A new membership at this level.
    Created(AccessLevel),
    /// Already a member (kept at this level).
    Existing(AccessLevel),
    /// Nothing was added.
    Refused(AddMemberRefusal),
}

fn member_filter(folder_id: &FolderId, user_id: &UserId) -> Document {
    doc! { "folder_id": folder_id.as_str(), "user_id": user_id.as_str() }
}

/// Marks the folder's membership as changing; false when the folder does not exist.
async fn touch(folders: &Collection<FolderDoc>, folder_id: &FolderId, s: &mut ClientSession) -> StoreResult<bool> {
    let r = folders
        .update_one(doc! { "_id": folder_id.as_str() }, doc! { "$inc": { "membership_version": 1_i64 } })
        .session(&mut *s)
        .await?;
    Ok(r.matched_count == 1)
}

async fn managers(members: &Collection<MemberDoc>, folder_id: &FolderId, s: &mut ClientSession) -> StoreResult<i64> {
    let n = members
        .count_documents(doc! { "folder_id": folder_id.as_str(), "access": AccessLevel::Manage as i32 })
        .session(&mut *s)
        .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

async fn set_managers(
    folders: &Collection<FolderDoc>,
    folder_id: &FolderId,
    n: i64,
    s: &mut ClientSession,
) -> StoreResult<()> {
    folders.update_one(doc! { "_id": folder_id.as_str() }, doc! { "$set": { "managers": n } }).session(&mut *s).await?;
    Ok(())
}

impl Store {
    /// Inserts a membership (a new folder's first manager).
    pub async fn insert_member(&self, member: &MemberDoc) -> StoreResult<()> {
        self.members().insert_one(member).await.map(drop)
    }

    /// `user_id`'s membership of `folder_id`, if any.
    pub async fn member(&self, folder_id: &FolderId, user_id: &UserId) -> StoreResult<Option<MemberDoc>> {
        self.members().find_one(member_filter(folder_id, user_id)).await
    }

    /// Whether a folder has any member.
    pub async fn has_members(&self, folder_id: &FolderId) -> StoreResult<bool> {
        Ok(self.members().count_documents(doc! { "folder_id": folder_id.as_str() }).limit(1).await? > 0)
    }

    /// Removes every membership of a folder, and its spent invitations.
    pub async fn delete_members_of(&self, folder_id: &FolderId) -> StoreResult<()> {
        self.members().delete_many(doc! { "folder_id": folder_id.as_str() }).await?;
        self.spent().delete_many(doc! { "folder_id": folder_id.as_str() }).await?;
        Ok(())
    }

    /// The member of a folder other than `user_id` who joined first (the longest-standing),
    /// if there is one.
    pub async fn earliest_other_member(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
    ) -> StoreResult<Option<MemberDoc>> {
        self.members()
            .find_one(doc! { "folder_id": folder_id.as_str(), "user_id": { "$ne": user_id.as_str() } })
            .sort(doc! { "joined_at": 1, "_id": 1 })
            .await
    }

    /// How many members a folder has besides `user_id`.
    pub async fn count_other_members(&self, folder_id: &FolderId, user_id: &UserId) -> StoreResult<u64> {
        self.members()
            .count_documents(doc! { "folder_id": folder_id.as_str(), "user_id": { "$ne": user_id.as_str() } })
            .await
    }

    /// Removes the spent invitations that made `user_id`'s memberships; how many.
    pub async fn delete_spent_of(&self, user_id: &UserId) -> StoreResult<u64> {
        Ok(self.spent().delete_many(doc! { "user_id": user_id.as_str() }).await?.deleted_count)
    }

    /// A page of a folder's members by email then user id, after `after`.
    pub async fn member_page(
        &self,
        folder_id: &FolderId,
        after: Option<&MemberCursor>,
        size: usize,
    ) -> StoreResult<(Vec<MemberDoc>, bool)> {
        let mut filter = doc! { "folder_id": folder_id.as_str() };
        if let Some(c) = after {
            filter.insert(
                "$or",
                vec![
                    doc! { "email": { "$gt": &c.email } },
                    doc! { "email": &c.email, "user_id": { "$gt": &c.user_id } },
                ],
            );
        }
        find_page(&self.members(), filter, doc! { "email": 1, "user_id": 1 }, size).await
    }

    /// A page of a user's memberships by folder id, after the folder `after`.
    pub async fn memberships_page(
        &self,
        user_id: &UserId,
        after: Option<&str>,
        size: usize,
    ) -> StoreResult<(Vec<MemberDoc>, bool)> {
        let mut filter = doc! { "user_id": user_id.as_str() };
        if let Some(after) = after {
            filter.insert("folder_id", doc! { "$gt": after });
        }
        find_page(&self.members(), filter, doc! { "folder_id": 1 }, size).await
    }

    /// Sets a member's access level, keeping at least one MANAGE member.
    pub async fn set_access(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
        new: AccessLevel,
    ) -> StoreResult<AccessChange> {
        let (folders, members) = (self.folders(), self.members());
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run((&folders, &members, folder_id, user_id), |s, (folders, members, folder_id, user_id)| {
                async move {
                    if !touch(folders, folder_id, s).await? {
                        return Ok(AccessChange::NoFolder);
                    }
                    let Some(mut m) = members.find_one(member_filter(folder_id, user_id)).session(&mut *s).await?
                    else {
                        return Ok(AccessChange::NoMember);
                    };
                    let old = m.level();
                    if old == new {
                        return Ok(AccessChange::Done(m));
                    }
                    let count = managers(members, folder_id, s).await?;
                    let after = count - i64::from(old == AccessLevel::Manage) + i64::from(new == AccessLevel::Manage);
                    if after < 1 {
                        return Ok(AccessChange::LastManager);
                    }
                    // A changed membership is no longer the one its invitation made.
                    let mut set = doc! { "access": new as i32 };
                    if new == AccessLevel::Manage {
                        // A new MANAGE epoch: invitations this member sent before a break in
                        // their MANAGE right cannot be accepted (see `add_invited`).
                        let epoch = uuid::Uuid::new_v4().simple().to_string();
                        set.insert("manage_epoch", &epoch);
                        m.manage_epoch = Some(epoch);
                    }
                    members
                        .update_one(doc! { "_id": &m.id }, doc! { "$set": set, "$unset": { "invitation_id": "" } })
                        .session(&mut *s)
                        .await?;
                    set_managers(folders, folder_id, after, s).await?;
                    m.access = new as i32;
                    m.invitation_id = None;
                    Ok(AccessChange::Done(m))
                }
                .boxed()
            })
            .await
    }

    /// Removes a membership (remove or leave), keeping at least one MANAGE member.
    pub async fn remove_member(&self, folder_id: &FolderId, user_id: &UserId) -> StoreResult<Removal> {
        let (folders, members) = (self.folders(), self.members());
        let mut session = self.session().await?;
        session
            .start_transaction()
            .and_run((&folders, &members, folder_id, user_id), |s, (folders, members, folder_id, user_id)| {
                async move {
                    if !touch(folders, folder_id, s).await? {
                        return Ok(Removal::NoFolder);
                    }
                    let filter = member_filter(folder_id, user_id);
                    let Some(m) = members.find_one(filter.clone()).session(&mut *s).await? else {
                        return Ok(Removal::NoMember);
                    };
                    if m.level() == AccessLevel::Manage {
                        let count = managers(members, folder_id, s).await?;
                        if count <= 1 {
                            return Ok(Removal::LastManager);
                        }
                        set_managers(folders, folder_id, count - 1, s).await?;
                    }
                    members.delete_one(filter).session(&mut *s).await?;
                    Ok(Removal::Done)
                }
                .boxed()
            })
            .await
    }

    /// Adds the member an invitation makes, spending the invitation in the same
    /// transaction. `inviter` (with their MANAGE epoch when they invited, if known) must
    /// still hold MANAGE in that epoch. `None` when the folder does not exist.
    pub async fn add_invited(
        &self,
        member: &MemberDoc,
        spent: &SpentInvitationDoc,
        inviter: Option<&UserId>,
        inviter_epoch: &str,
    ) -> StoreResult<Option<Added>> {
        let (folders, members, spent_coll) = (self.folders(), self.members(), self.spent());
        let mut session = self.session().await?;
        let ctx = (&folders, &members, &spent_coll, member, spent, inviter, inviter_epoch);
        session
            .start_transaction()
            .and_run(ctx, |s, (folders, members, spent_coll, member, spent, inviter, epoch)| {
                async move {
                    let folder_id = &member.folder_id;
                    if !touch(folders, folder_id, s).await? {
                        return Ok(None);
                    }
                    let existing = members.find_one(member_filter(folder_id, &member.user_id)).session(&mut *s).await?;
                    if spent_coll.find_one(doc! { "_id": spent.id.as_str() }).session(&mut *s).await?.is_some() {
                        // A retry of an accept that went through: fine while the membership it
                        // made is untouched; otherwise the invitation is spent.
                        return Ok(Some(match existing {
                            Some(m) if m.invitation_id.as_ref() == Some(&spent.id) => Added::Existing(m.level()),
                            _ => Added::Refused(AddMemberRefusal::AlreadySpent),
                        }));
                    }
                    if let Some(inviter) = *inviter {
                        let by = members.find_one(member_filter(folder_id, inviter)).session(&mut *s).await?;
                        // MANAGE now, and in the same MANAGE epoch as when they invited: a
                        // demoted (or removed) and later restored manager's old invitations
                        // stay dead.
                        let same_epoch = by.as_ref().is_some_and(|m| {
                            m.level() == AccessLevel::Manage
                                && (epoch.is_empty() || m.manage_epoch.as_deref() == Some(*epoch))
                        });
                        if !same_epoch {
                            return Ok(Some(Added::Refused(AddMemberRefusal::InviterNotManager)));
                        }
                    }
                    spent_coll.insert_one(*spent).session(&mut *s).await?;
                    if let Some(m) = existing {
                        return Ok(Some(Added::Existing(m.level())));
                    }
                    let level = member.level();
                    members.insert_one(*member).session(&mut *s).await?;
                    if level == AccessLevel::Manage {
                        let count = managers(members, folder_id, s).await?;
                        set_managers(folders, folder_id, count, s).await?;
                    }
                    Ok(Some(Added::Created(level)))
                }
                .boxed()
            })
            .await
    }
}
