//! Membership changes, each in one MongoDB transaction that first touches the folder's
//! document. Two changes to the same folder's members therefore conflict and one is retried
//! (the driver retries `TransientTransactionError`), so the number of MANAGE members is read
//! and written as one step: "a folder with members keeps at least one MANAGE member" holds
//! for any interleaving of promotions, demotions, removals, leaves and accepts. The folder's
//! `managers` field is set from the count inside the same transaction, never moved blindly.
//!
//! Accepting an invitation spends it in the same transaction as the membership it makes
//! (the `spent_invitations` collection), so a replayed accept can repair nothing but a
//! membership that was never made, and never re-adds or raises one that changed since.

use bson::{Document, doc};
use futures::FutureExt;
use mongodb::{ClientSession, Collection};
use tonic::Status;
use ts_proto::internal::AddMemberRefusal;
use ts_proto::public::AccessLevel;

use crate::{FoldersApi, store_error};

/// The access level stored in a member document.
pub(crate) fn level_of(m: &Document) -> AccessLevel {
    m.get_i32("access").ok().and_then(|n| AccessLevel::try_from(n).ok()).unwrap_or(AccessLevel::Unspecified)
}

/// What a transaction decided; store failures travel as errors and are retried or mapped.
enum Outcome {
    Done(Option<Document>),
    NoFolder,
    NoMember,
    LastManager,
}

/// What AddMember did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new membership at this level.
    Created(AccessLevel),
    /// Already a member (kept at this level).
    Existing(AccessLevel),
    /// Nothing was added.
    Refused(AddMemberRefusal),
}

fn last_manager() -> Status {
    Status::failed_precondition("a folder must keep at least one MANAGE member; give someone else MANAGE first")
}

/// Marks the folder's membership as changing; false when the folder does not exist.
async fn touch(folders: &Collection<Document>, folder_id: &str, s: &mut ClientSession) -> mongodb::error::Result<bool> {
    let r = folders
        .update_one(doc! { "_id": folder_id }, doc! { "$inc": { "membership_version": 1_i64 } })
        .session(&mut *s)
        .await?;
    Ok(r.matched_count == 1)
}

async fn managers(
    members: &Collection<Document>,
    folder_id: &str,
    s: &mut ClientSession,
) -> mongodb::error::Result<i64> {
    let n = members
        .count_documents(doc! { "folder_id": folder_id, "access": AccessLevel::Manage as i32 })
        .session(&mut *s)
        .await?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

async fn set_managers(
    folders: &Collection<Document>,
    folder_id: &str,
    n: i64,
    s: &mut ClientSession,
) -> mongodb::error::Result<()> {
    folders.update_one(doc! { "_id": folder_id }, doc! { "$set": { "managers": n } }).session(&mut *s).await?;
    Ok(())
}

impl FoldersApi {
    fn spent(&self) -> Collection<Document> {
        self.db.collection("spent_invitations")
    }

    pub(crate) async fn session(&self) -> Result<ClientSession, Status> {
        self.db.client().start_session().await.map_err(store_error)
    }

    /// Sets a member's access level; FAILED_PRECONDITION when it would leave no manager.
    pub(crate) async fn set_access(
        &self,
        folder_id: &str,
        user_id: &str,
        new: AccessLevel,
    ) -> Result<Document, Status> {
        let (folders, members) = (self.folders(), self.members());
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run((&folders, &members, folder_id, user_id), |s, (folders, members, folder_id, user_id)| {
                async move {
                    if !touch(folders, folder_id, s).await? {
                        return Ok(Outcome::NoFolder);
                    }
                    let Some(mut m) = members
                        .find_one(doc! { "folder_id": *folder_id, "user_id": *user_id })
                        .session(&mut *s)
                        .await?
                    else {
                        return Ok(Outcome::NoMember);
                    };
                    let old = level_of(&m);
                    if old == new {
                        return Ok(Outcome::Done(Some(m)));
                    }
                    let count = managers(members, folder_id, s).await?;
                    let after = count - i64::from(old == AccessLevel::Manage) + i64::from(new == AccessLevel::Manage);
                    if after < 1 {
                        return Ok(Outcome::LastManager);
                    }
                    // A changed membership is no longer the one its invitation made.
                    let mut set = doc! { "access": new as i32 };
                    if new == AccessLevel::Manage {
                        // A new MANAGE epoch: invitations this member sent before a break in
                        // their MANAGE right cannot be accepted (see `add_invited`).
                        set.insert("manage_epoch", uuid::Uuid::new_v4().simple().to_string());
                    }
                    members
                        .update_one(
                            doc! { "_id": m.get_str("_id").unwrap_or_default() },
                            doc! { "$set": set, "$unset": { "invitation_id": "" } },
                        )
                        .session(&mut *s)
                        .await?;
                    set_managers(folders, folder_id, after, s).await?;
                    m.insert("access", new as i32);
                    m.remove("invitation_id");
                    Ok(Outcome::Done(Some(m)))
                }
                .boxed()
            })
            .await
            .map_err(store_error)?;
        match outcome {
            Outcome::Done(Some(m)) => Ok(m),
            Outcome::NoFolder => Err(Status::not_found("folder not found")),
            Outcome::Done(None) | Outcome::NoMember => Err(Status::not_found("member not found")),
            Outcome::LastManager => Err(last_manager()),
        }
    }

    /// Removes a membership (remove or leave); FAILED_PRECONDITION for the last manager.
    pub(crate) async fn remove_member_txn(&self, folder_id: &str, user_id: &str) -> Result<(), Status> {
        let (folders, members) = (self.folders(), self.members());
        let mut session = self.session().await?;
        let outcome = session
            .start_transaction()
            .and_run((&folders, &members, folder_id, user_id), |s, (folders, members, folder_id, user_id)| {
                async move {
                    if !touch(folders, folder_id, s).await? {
                        return Ok(Outcome::NoFolder);
                    }
                    let filter = doc! { "folder_id": *folder_id, "user_id": *user_id };
                    let Some(m) = members.find_one(filter.clone()).session(&mut *s).await? else {
                        return Ok(Outcome::NoMember);
                    };
                    if level_of(&m) == AccessLevel::Manage {
                        let count = managers(members, folder_id, s).await?;
                        if count <= 1 {
                            return Ok(Outcome::LastManager);
                        }
                        set_managers(folders, folder_id, count - 1, s).await?;
                    }
                    members.delete_one(filter).session(&mut *s).await?;
                    Ok(Outcome::Done(None))
                }
                .boxed()
            })
            .await
            .map_err(store_error)?;
        match outcome {
            Outcome::Done(_) => {
                self.forget_members(folder_id, &[user_id.to_owned()]).await;
                Ok(())
            }
            Outcome::NoMember => {
                // A retry of a removal whose first attempt was cut after its commit: the
                // cache must be cleared now, or the removed member keeps their cached access.
                self.forget_members(folder_id, &[user_id.to_owned()]).await;
                Err(Status::not_found("member not found"))
            }
            Outcome::NoFolder => Err(Status::not_found("folder not found")),
            Outcome::LastManager => Err(last_manager()),
        }
    }

    /// Adds the member an invitation makes, spending the invitation in the same transaction.
    pub(crate) async fn add_invited(
        &self,
        folder_id: &str,
        member: Document,
        invitation_id: &str,
        inviter_user_id: &str,
        inviter_epoch: &str,
    ) -> Result<Added, Status> {
        let (folders, members, spent) = (self.folders(), self.members(), self.spent());
        let mut session = self.session().await?;
        let ctx = (&folders, &members, &spent, folder_id, &member, invitation_id, inviter_user_id, inviter_epoch);
        let outcome = session
            .start_transaction()
            .and_run(ctx, |s, (folders, members, spent, folder_id, member, invitation_id, inviter, epoch)| {
                async move {
                    if !touch(folders, folder_id, s).await? {
                        return Ok(None);
                    }
                    let user_id = member.get_str("user_id").unwrap_or_default();
                    let existing =
                        members.find_one(doc! { "folder_id": *folder_id, "user_id": user_id }).session(&mut *s).await?;
                    if spent.find_one(doc! { "_id": *invitation_id }).session(&mut *s).await?.is_some() {
                        // A retry of an accept that went through: fine while the membership it
                        // made is untouched; otherwise the invitation is spent.
                        return Ok(Some(match existing {
                            Some(m) if m.get_str("invitation_id").ok() == Some(*invitation_id) => {
                                Added::Existing(level_of(&m))
                            }
                            _ => Added::Refused(AddMemberRefusal::AlreadySpent),
                        }));
                    }
                    if !inviter.is_empty() {
                        let by = members
                            .find_one(doc! { "folder_id": *folder_id, "user_id": *inviter })
                            .session(&mut *s)
                            .await?;
                        // MANAGE now, and in the same MANAGE epoch as when they invited: a
                        // demoted (or removed) and later restored manager's old invitations
                        // stay dead.
                        let same_epoch = by.as_ref().is_some_and(|m| {
                            level_of(m) == AccessLevel::Manage
                                && (epoch.is_empty() || m.get_str("manage_epoch").ok() == Some(*epoch))
                        });
                        if !same_epoch {
                            return Ok(Some(Added::Refused(AddMemberRefusal::InviterNotManager)));
                        }
                    }
                    spent
                        .insert_one(doc! {
                            "_id": *invitation_id, "folder_id": *folder_id, "user_id": user_id,
                            "spent_at": bson::DateTime::now(),
                        })
                        .session(&mut *s)
                        .await?;
                    if let Some(m) = existing {
                        return Ok(Some(Added::Existing(level_of(&m))));
                    }
                    let level = level_of(member);
                    members.insert_one((*member).clone()).session(&mut *s).await?;
                    if level == AccessLevel::Manage {
                        let count = managers(members, folder_id, s).await?;
                        set_managers(folders, folder_id, count, s).await?;
                    }
                    Ok(Some(Added::Created(level)))
                }
                .boxed()
            })
            .await
            .map_err(store_error)?;
        outcome.ok_or_else(|| Status::not_found("folder not found"))
    }
}
