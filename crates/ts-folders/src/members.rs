//! Members: listing, changing access, removing and leaving (each change one transaction
//! that keeps a MANAGE member, see `store::members`), and what invitations asks of folders:
//! a user's membership, and adding the member an accepted invitation makes.

use std::collections::HashMap;

use ts_contract::email::Email;
use ts_contract::ids::{FolderId, InvitationId, UserId};
use ts_proto::public::AccessLevel;
use ts_stores::cache::Generation;

use crate::context::folder_generation_key;
use crate::paging::{MemberCursor, Page, PageAsk};
use crate::store::{AccessChange, Added, MemberDoc, Removal, SpentInvitationDoc};
use crate::{Folders, FoldersError};

/// ListMembers: 100 members by default, at most 500.
const PAGE: (u32, u32) = (100, 500);

/// A user's standing in a folder, for invitations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Their access, or `Unspecified`.
    pub access: AccessLevel,
    /// The folder's name, when they are a member.
    pub folder_name: String,
    /// Whether the folder exists.
    pub folder_exists: bool,
    /// A manager's current MANAGE epoch (read fresh), else empty.
    pub manage_epoch: String,
}

/// An accepted invitation, checked, as AddMember brings it.
#[derive(Debug, Clone)]
pub struct Invited {
    /// The folder.
    pub folder_id: FolderId,
    /// The invitee.
    pub user_id: UserId,
    /// Their verified email.
    pub email: Email,
    /// The access the invitation grants.
    pub access: AccessLevel,
    /// The invitation.
    pub invitation_id: InvitationId,
    /// Who invited, if known: they must still hold MANAGE.
    pub inviter: Option<UserId>,
    /// The inviter's MANAGE epoch when they invited, or empty.
    pub inviter_epoch: String,
}

impl Folders {
    /// A page of a folder's members by email (the caller was checked for VIEW).
    pub(crate) async fn list_members(
        &self,
        folder_id: &FolderId,
        ask: &PageAsk,
    ) -> Result<Page<MemberDoc>, FoldersError> {
        let size = ask.size(PAGE.0, PAGE.1);
        let after = ask.token().map(MemberCursor::decode).transpose()?;
        let (members, more) = self.store.member_page(folder_id, after.as_ref(), size).await?;
        let next_token = match (more, members.last()) {
            (true, Some(last)) => {
                MemberCursor { email: last.email.clone(), user_id: last.user_id.to_string() }.encode()
            }
            _ => String::new(),
        };
        Ok(Page { items: members, next_token })
    }

    /// Sets a member's access; FAILED_PRECONDITION when it would leave no manager.
    pub(crate) async fn update_access(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
        new: AccessLevel,
    ) -> Result<MemberDoc, FoldersError> {
        let result = self.store.set_access(folder_id, user_id, new).await;
        // Forgotten whatever the outcome: a refused change leaves nothing stale either.
        let landed = self.changed(folder_id).await;
        match result? {
            AccessChange::Done(_) if !landed => Err(FoldersError::NotYetEverywhere),
            AccessChange::Done(m) => Ok(m),
            AccessChange::NoFolder => Err(FoldersError::FolderNotFound),
            AccessChange::NoMember => Err(FoldersError::MemberNotFound),
            AccessChange::LastManager => Err(FoldersError::LastManager),
        }
    }

    /// Removes a membership (remove or leave); FAILED_PRECONDITION for the last manager.
    pub(crate) async fn remove_member(&self, folder_id: &FolderId, user_id: &UserId) -> Result<(), FoldersError> {
        let removed = self.store.remove_member(folder_id, user_id).await;
        if removed.is_err() {
            // A store error may come after the commit.
            self.changed(folder_id).await;
        }
        match removed? {
            Removal::Done => self.taken_away(folder_id).await,
            Removal::NoMember => {
                // A retry of a removal whose first attempt was cut after its commit (or whose
                // invalidation did not land): what was kept must be retired now, or the
                // removed member keeps their access on other replicas.
                self.taken_away(folder_id).await?;
                Err(FoldersError::MemberNotFound)
            }
            Removal::NoFolder => Err(FoldersError::FolderNotFound),
            Removal::LastManager => Err(FoldersError::LastManager),
        }
    }

    /// `user_id`'s standing in `folder_id`, with a manager's MANAGE epoch read fresh (to
    /// stamp an invitation).
    pub(crate) async fn membership(&self, folder_id: &FolderId, user_id: &UserId) -> Result<Membership, FoldersError> {
        let generation = self.cache.generation(&folder_generation_key(folder_id)).await;
        let mut m = self.standing(folder_id, user_id, &generation).await?;
        if m.access == AccessLevel::Manage {
            m.manage_epoch =
                self.store.member(folder_id, user_id).await?.and_then(|m| m.manage_epoch).unwrap_or_default();
        }
        Ok(m)
    }

    /// Many users' standing in folders, for listings, in order: every folder's generation
    /// read in one round trip; no MANAGE epochs.
    pub(crate) async fn memberships(&self, pairs: &[(FolderId, UserId)]) -> Result<Vec<Membership>, FoldersError> {
        let mut folders: Vec<&FolderId> = Vec::new();
        for (f, _) in pairs {
            if !folders.contains(&f) {
                folders.push(f);
            }
        }
        let keys: Vec<String> = folders.iter().map(|f| folder_generation_key(f)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let generations: HashMap<&FolderId, Generation> =
            folders.into_iter().zip(self.cache.generations(&keys).await).collect();
        let mut out = Vec::with_capacity(pairs.len());
        for (f, u) in pairs {
            let generation = generations.get(f).cloned().unwrap_or_else(Generation::unknown);
            out.push(self.standing(f, u, &generation).await?);
        }
        Ok(out)
    }

    /// A user's access in a folder, the folder's name when they are a member, and whether it
    /// exists, from what is kept under the folder's `generation` where possible.
    async fn standing(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
        generation: &Generation,
    ) -> Result<Membership, FoldersError> {
        let access = self.access(folder_id, user_id, generation).await?;
        let folder = match self.load_folder(folder_id, generation).await {
            Ok(doc) => Some(doc),
            Err(FoldersError::FolderNotFound) => None,
            Err(e) => return Err(e),
        };
        let (folder_name, folder_exists) = match (access, folder) {
            (_, None) => (String::new(), false),
            (AccessLevel::Unspecified, Some(_)) => (String::new(), true),
            (access, Some(doc)) => (self.open_folder(doc, access).await?.name, true),
        };
        Ok(Membership { access, folder_name, folder_exists, manage_epoch: String::new() })
    }

    /// Adds the member an accepted invitation makes, spending the invitation; idempotent for
    /// a retried accept. NOT_FOUND when the folder is gone. An erasure of the invitee that
    /// raced it is run again (`unless_erased`), which takes the membership away.
    pub(crate) async fn add_invited(&self, invited: Invited) -> Result<Added, FoldersError> {
        let (user_id, email) = (invited.user_id.clone(), invited.email.clone());
        let added = self.add_invited_member(invited).await;
        self.unless_erased(&user_id, email.as_str(), added).await
    }

    async fn add_invited_member(&self, invited: Invited) -> Result<Added, FoldersError> {
        let now = self.bson_now();
        let member = MemberDoc {
            id: MemberDoc::id_of(&invited.folder_id, &invited.user_id),
            folder_id: invited.folder_id.clone(),
            user_id: invited.user_id.clone(),
            email: invited.email.as_str().to_owned(),
            access: invited.access as i32,
            joined_at: now,
            invitation_id: Some(invited.invitation_id.clone()),
            manage_epoch: (invited.access == AccessLevel::Manage).then(|| uuid::Uuid::new_v4().simple().to_string()),
        };
        let spent = SpentInvitationDoc {
            id: invited.invitation_id.clone(),
            folder_id: invited.folder_id.clone(),
            user_id: invited.user_id.clone(),
            spent_at: now,
        };
        let added = self
            .store
            .add_invited(&member, &spent, invited.inviter.as_ref(), &invited.inviter_epoch)
            .await?
            .ok_or(FoldersError::FolderNotFound)?;
        self.joined(&invited.folder_id, &invited.user_id).await;
        Ok(added)
    }
}
