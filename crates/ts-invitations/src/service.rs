//! The invitations domain, independent of gRPC: invite, list, accept (idempotent), decline,
//! revoke and re-send. Callers come in as `UserContext`, ids as typed ids; every outcome is a
//! `Result<_, InvitationsError>`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ts_config::InvitationLimits;
use ts_contract::clock::{SharedClock, bson_date};
use ts_contract::email::Email;
use ts_contract::ids::{FolderId, InvitationId, RequestId, UserId};
use ts_contract::user::UserContext;
use ts_mail::{Mailer, Message};
use ts_proto::public::AccessLevel;

use crate::clients::{AddOutcome, Folders, Identity, Membership};
use crate::error::InvitationsError;
use crate::store::{Cap, InvitationDoc, InvitationState, PageCursor, Refresh, Scope, Store};

/// Proof that a caller holds MANAGE on a folder, with what folders told about it.
#[derive(Debug, Clone)]
pub struct Manager {
    folder_id: FolderId,
    folder_name: String,
    manage_epoch: String,
}

impl Manager {
    /// The managed folder.
    pub fn folder_id(&self) -> &FolderId {
        &self.folder_id
    }
}

/// An invitation sent to the caller (checked by `Invitations::addressed_to`).
#[derive(Debug, Clone)]
pub struct Addressed(InvitationDoc);

impl Addressed {
    /// The invitation's folder.
    pub fn folder_id(&self) -> &FolderId {
        &self.0.folder_id
    }
}

/// An invitation as its readers see it.
#[derive(Debug, Clone)]
pub struct InvitationView {
    /// As stored (a pending one whose inviter lost MANAGE already shown revoked).
    pub invitation: InvitationDoc,
    /// The folder's name, as the inviter sees it; empty when folders cannot say.
    pub folder_name: String,
    /// Pending, but past its expiry.
    pub expired: bool,
}

/// An accepted invitation's membership.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The folder joined.
    pub folder_id: FolderId,
    /// The member's access now.
    pub access: AccessLevel,
}

/// Which page of a list to read.
#[derive(Debug, Clone)]
pub struct Page {
    /// Most invitations to return.
    pub size: usize,
    /// Where the previous page ended.
    pub after: Option<PageCursor>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The invitations.
    pub invitations: Vec<InvitationView>,
    /// Where the next page starts, when there is one.
    pub next: Option<PageCursor>,
}

/// The invitations service's operations, over its store, folders, auth and a mailer (built
/// by `serve_with_clock`).
#[derive(Clone)]
pub struct Invitations {
    pub(crate) store: Store,
    pub(crate) folders: Folders,
    pub(crate) identity: Identity,
    pub(crate) mailer: Arc<dyn Mailer>,
    /// Every reading of time goes through it.
    pub(crate) clock: SharedClock,
    pub(crate) limits: InvitationLimits,
}

impl std::fmt::Debug for Invitations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invitations").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Invitations {
    /// The most invitations one page holds, whatever is asked for.
    pub fn max_per_fetch(&self) -> u32 {
        self.limits.max_per_fetch
    }

    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.limits.ttl_days) * 86_400)
    }

    /// Requires MANAGE on the folder: a non-member gets `FolderNotFound`, a member without
    /// MANAGE `NotManager`.
    pub async fn manager(&self, folder_id: FolderId, user: &UserContext) -> Result<Manager, InvitationsError> {
        let m = self.folders.membership(&folder_id, &user.user_id).await?;
        match m.access {
            AccessLevel::Unspecified => Err(InvitationsError::FolderNotFound),
            AccessLevel::Manage => Ok(Manager { folder_id, folder_name: m.folder_name, manage_epoch: m.manage_epoch }),
            _ => Err(InvitationsError::NotManager),
        }
    }

    /// Invites `invitee` to the manager's folder at `access` and mails them. A live invitation
    /// of the same email to the folder is refreshed and re-sent instead; the caps on pending
    /// invitations per folder and per invitee hold even against concurrent invites.
    pub async fn invite(
        &self,
        user: &UserContext,
        manager: &Manager,
        invitee: Email,
        access: AccessLevel,
        request: Option<&RequestId>,
    ) -> Result<InvitationView, InvitationsError> {
        let request_key = request.map(|r| r.derive("InvitationRequest", user.user_id.as_str()));
        if let Some(key) = &request_key
            && let Some(made) = self.store.by_request_key(key).await?
        {
            // A retry: the answer the first call gave, and no second email.
            if made.folder_id != manager.folder_id || made.invitee_email != invitee.as_str() || made.access != access {
                return Err(InvitationsError::RequestIdReused);
            }
            return Ok(self.view(made).await);
        }
        if !self.identity.sharing_allowed(&invitee).await? {
            return Err(InvitationsError::SharingNotAllowed);
        }
        if let Some(user_id) = self.identity.user_id_by_email(&invitee).await?
            && self.folders.membership(&manager.folder_id, &user_id).await?.access != AccessLevel::Unspecified
        {
            return Err(InvitationsError::AlreadyMember(invitee));
        }
        let now = self.now();
        let expires = now + self.ttl();
        let invitation = InvitationDoc {
            id: InvitationId::new(),
            folder_id: manager.folder_id.clone(),
            invitee_email: invitee.as_str().to_owned(),
            inviter_email: user.email.clone(),
            inviter_user_id: Some(user.user_id.clone()),
            access,
            inviter_manage_epoch: manager.manage_epoch.clone(),
            state: InvitationState::Pending,
            created_at: bson_date(now),
            expires_at: bson_date(expires),
            purge_at: bson_date(expires + self.ttl()),
            answered_at: None,
            request_keys: request_key.iter().cloned().collect(),
        };
        let (folder_cap, invitee_cap) = (self.limits.max_pending_per_folder, self.limits.max_pending_per_invitee);
        match self.store.insert_capped(&invitation, now, folder_cap, invitee_cap).await? {
            // A pending invitation to the same email (found inside the same transaction, so
            // two concurrent invites cannot both insert) is refreshed and re-sent instead.
            Some(Cap::Existing(id)) => {
                // A concurrent retry of this same request made it: its answer, no second email.
                let existing = self.load(&id).await?;
                if request_key.as_ref().is_some_and(|k| existing.request_keys.contains(k)) {
                    return Ok(self.view(existing).await);
                }
                let refresh = Refresh {
                    expires_at: invitation.expires_at,
                    purge_at: invitation.purge_at,
                    access,
                    // It now stands on this manager's right.
                    inviter_email: &user.email,
                    inviter_user_id: &user.user_id,
                    inviter_manage_epoch: &manager.manage_epoch,
                    request_key: request_key.as_deref(),
                };
                self.store.refresh(&id, refresh).await?;
                // The refresh ran outside the transaction that checked the erasure marks.
                self.unless_erased(&invitee, &user.user_id).await?;
                self.send(invitee.as_str(), &user.email, &manager.folder_name, expires).await?;
                Ok(self.view(self.load(&id).await?).await)
            }
            Some(Cap::InviteeErasing) => Err(InvitationsError::InviteeErasing),
            Some(Cap::InviterErased) => Err(InvitationsError::InviterErased),
            Some(Cap::Folder) => Err(InvitationsError::FolderCapReached {
                cap: folder_cap,
                retry_after: self.next_expiry(Scope::Folder(&manager.folder_id)).await,
            }),
            Some(Cap::Invitee) => Err(InvitationsError::InviteeCapReached {
                retry_after: self.next_expiry(Scope::Invitee(invitee.as_str())).await,
                invitee,
                cap: invitee_cap,
            }),
            None => {
                // No mail for an invitation an erasure that began since the insert deletes.
                let sent = match self.unless_erased(&invitee, &user.user_id).await {
                    Ok(()) => self.send(invitee.as_str(), &user.email, &manager.folder_name, expires).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    // Nothing half-made: an invitation nobody was told about is removed.
                    let _ = self.store.delete(&invitation.id).await;
                    return Err(e);
                }
                Ok(self.view(invitation).await)
            }
        }
    }

    /// The caller's live invitations, oldest first.
    pub async fn list_mine(&self, user: &UserContext, page: Page) -> Result<Listed, InvitationsError> {
        self.list(Scope::Invitee(&user.email), page).await
    }

    /// A managed folder's live invitations, oldest first.
    pub async fn list_folder(&self, manager: &Manager, page: Page) -> Result<Listed, InvitationsError> {
        self.list(Scope::Folder(&manager.folder_id), page).await
    }

    /// The invitation if it was sent to the caller; `InvitationNotFound` otherwise (no leak).
    pub async fn addressed_to(&self, user: &UserContext, id: &InvitationId) -> Result<Addressed, InvitationsError> {
        let invitation = self.load(id).await?;
        if invitation.invitee_email != user.email {
            return Err(InvitationsError::InvitationNotFound);
        }
        Ok(Addressed(invitation))
    }

    /// Accepts an invitation, detached from the caller: a client that hangs up (or a
    /// deadline) after the accept is recorded must not stop the membership from being made.
    pub async fn accept(&self, user: &UserContext, id: InvitationId) -> Result<Accepted, InvitationsError> {
        let (this, user) = (self.clone(), user.clone());
        tokio::spawn(async move { this.accept_now(&user, &id).await })
            .await
            .unwrap_or(Err(InvitationsError::AcceptInterrupted))
    }

    /// The accept is recorded first, then folders adds the member and spends the invitation
    /// in one transaction: a crash in between is repaired by a retry, concurrent accepts make
    /// one membership, and a replay after the membership changed (removed, lowered) changes
    /// nothing and is refused.
    async fn accept_now(&self, user: &UserContext, id: &InvitationId) -> Result<Accepted, InvitationsError> {
        let Addressed(mut invitation) = self.addressed_to(user, id).await?;
        // Expiry bounds an accepted one too: an accept cut short before its member was made
        // can be repaired only while the invitation itself would still be valid.
        if invitation.expires_at.to_system_time() <= self.now() {
            return Err(InvitationsError::Expired);
        }
        if invitation.state == InvitationState::Pending
            && !self.store.finish(&invitation.id, InvitationState::Accepted, self.now()).await?
        {
            // Answered concurrently: go by what it is now.
            invitation = self.load(&invitation.id).await?;
        }
        match invitation.state {
            InvitationState::Pending | InvitationState::Accepted => {}
            InvitationState::Declined => return Err(InvitationsError::Declined),
            InvitationState::Revoked => return Err(InvitationsError::Revoked),
        }
        let Some(inviter) = invitation.inviter_user_id.clone() else {
            // The inviter's account was erased: nobody's MANAGE stands behind the invitation
            // any more (and folders adds a member without an inviter unchecked).
            return Err(InvitationsError::InviterNotManager);
        };
        match self.folders.add_member(&invitation, &inviter, user).await {
            Ok(AddOutcome::Member(access)) => Ok(Accepted { folder_id: invitation.folder_id, access }),
            Ok(AddOutcome::AlreadySpent) => Err(InvitationsError::AlreadySpent),
            Ok(AddOutcome::InviterNotManager) => {
                self.revoke_spent(&invitation.id).await;
                Err(InvitationsError::InviterNotManager)
            }
            Err(InvitationsError::FolderGone) => {
                self.revoke_spent(&invitation.id).await;
                Err(InvitationsError::FolderGone)
            }
            Err(e) => Err(e),
        }
    }

    /// Declines an invitation sent to the caller.
    pub async fn decline(&self, invitation: &Addressed) -> Result<(), InvitationsError> {
        self.finish(&invitation.0.id, InvitationState::Declined).await
    }

    /// Revokes an invitation of a folder the caller manages; its folder.
    pub async fn revoke(&self, user: &UserContext, id: InvitationId) -> Result<FolderId, InvitationsError> {
        let invitation = self.as_manager(user, &id).await?;
        self.finish(&invitation.id, InvitationState::Revoked).await?;
        Ok(invitation.folder_id)
    }

    /// Gives a live invitation of a folder the caller manages a new term and mails it again.
    pub async fn resend(&self, user: &UserContext, id: InvitationId) -> Result<InvitationView, InvitationsError> {
        let invitation = self.as_manager(user, &id).await?;
        let expires = self.now() + self.ttl();
        let extended =
            self.store.extend(&invitation.id, self.now(), bson_date(expires), bson_date(expires + self.ttl())).await?;
        if !extended {
            // Deleted meanwhile (an erasure of the address deletes it): never there.
            self.load(&invitation.id).await?;
            return Err(InvitationsError::NotResendable);
        }
        if self.store.erasure_marks(&invitation.invitee_email, &user.user_id).await?.invitee_erasing {
            // The erasure of the address deletes it (or did): no mail to it.
            return Err(InvitationsError::InvitationNotFound);
        }
        let m = self.folders.membership(&invitation.folder_id, &user.user_id).await?;
        self.send(&invitation.invitee_email, &user.email, &m.folder_name, expires).await?;
        Ok(self.view(self.load(&invitation.id).await?).await)
    }

    async fn load(&self, id: &InvitationId) -> Result<InvitationDoc, InvitationsError> {
        self.store.get(id).await?.ok_or(InvitationsError::InvitationNotFound)
    }

    /// Moves a pending invitation to `state`; `NotPending` when it was answered already,
    /// `InvitationNotFound` when it was deleted meanwhile (an erasure deletes invitations).
    async fn finish(&self, id: &InvitationId, state: InvitationState) -> Result<(), InvitationsError> {
        if !self.store.finish(id, state, self.now()).await? {
            self.load(id).await?;
            return Err(InvitationsError::NotPending);
        }
        Ok(())
    }

    /// An invitation of a folder the caller manages; a folder they cannot see hides the
    /// invitation too.
    async fn as_manager(&self, user: &UserContext, id: &InvitationId) -> Result<InvitationDoc, InvitationsError> {
        let invitation = self.load(id).await?;
        match self.manager(invitation.folder_id.clone(), user).await {
            Ok(_) => Ok(invitation),
            Err(InvitationsError::FolderNotFound) => Err(InvitationsError::InvitationNotFound),
            Err(e) => Err(e),
        }
    }

    /// Marks an invitation that can never make a membership as revoked.
    async fn revoke_spent(&self, id: &InvitationId) {
        if let Err(e) = self.store.revoke_spent(id, self.now()).await {
            tracing::warn!(error = %e, "cannot record a revoked invitation");
        }
    }

    async fn send(
        &self,
        to: &str,
        inviter: &str,
        folder_name: &str,
        expires: SystemTime,
    ) -> Result<(), InvitationsError> {
        let days = expires.duration_since(self.now()).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        let message = Message {
            to: to.to_owned(),
            subject: format!("{inviter} shared a teamshare folder with you"),
            body: format!(
                "{inviter} invited you to the folder \"{folder_name}\".\n\nOpen teamshare and sign in as {to} to accept. The invitation expires in {days} days.\n"
            ),
        };
        self.mailer.send(message).await.map_err(InvitationsError::Mail)
    }

    /// Checks, after an invite wrote its invitation, that no erasure began meanwhile: one that
    /// marked the counters before this write refuses the invite; one that marks them after it
    /// finds the invitation in its scan. An erased inviter's invitations are erased again here,
    /// since the erasure's scan may have run before the write.
    async fn unless_erased(&self, invitee: &Email, inviter: &UserId) -> Result<(), InvitationsError> {
        let marks = self.store.erasure_marks(invitee.as_str(), inviter).await?;
        if let Some(pseudonym) = &marks.inviter_erased {
            if !pseudonym.is_empty() {
                self.store.erase_inviter(inviter, pseudonym).await?;
            }
            return Err(InvitationsError::InviterErased);
        }
        if marks.invitee_erasing {
            // The erasure's scan deletes the invitation, or deleted it before this write (which
            // then changed nothing).
            return Err(InvitationsError::InviteeErasing);
        }
        Ok(())
    }

    /// When the oldest live invitation of `scope` expires: capacity frees up then.
    async fn next_expiry(&self, scope: Scope<'_>) -> Duration {
        let now = self.now();
        let first = self.store.first_expiry(scope, now).await.ok().flatten();
        first.and_then(|t| t.to_system_time().duration_since(now).ok()).unwrap_or(Duration::from_secs(60))
    }

    async fn list(&self, scope: Scope<'_>, page: Page) -> Result<Listed, InvitationsError> {
        let (docs, more) = self.store.page(scope, self.now(), page.after.as_ref(), page.size).await?;
        let next = if more { docs.last().map(PageCursor::after) } else { None };
        Ok(Listed { invitations: self.views(docs).await, next })
    }

    /// Invitations as shown, with every inviter's standing asked for in one folders call (a
    /// failure shows rows without folder names, as one failed look-up does in `view`). An
    /// invitation whose inviter was erased names nobody to ask about: no folder name.
    pub(crate) async fn views(&self, docs: Vec<InvitationDoc>) -> Vec<InvitationView> {
        let pairs: Vec<(&FolderId, &UserId)> =
            docs.iter().filter_map(|d| d.inviter_user_id.as_ref().map(|u| (&d.folder_id, u))).collect();
        let found: Vec<Option<Membership>> = if pairs.is_empty() {
            Vec::new()
        } else {
            match self.folders.memberships(&pairs).await {
                Ok(found) if found.len() == pairs.len() => found.into_iter().map(Some).collect(),
                _ => vec![None; pairs.len()],
            }
        };
        let mut found = found.into_iter();
        let mut views = Vec::with_capacity(docs.len());
        for d in docs {
            let inviter = if d.inviter_user_id.is_some() { found.next().flatten() } else { None };
            views.push(self.shown(d, inviter).await);
        }
        views
    }

    /// The invitation as shown. The folder's name is sealed in folders, so it is asked for
    /// through the inviter, while still a member. A pending invitation whose folder was
    /// deleted is revoked (deleting a folder revokes its pending invitations); so is one
    /// whose inviter no longer manages the folder.
    async fn view(&self, invitation: InvitationDoc) -> InvitationView {
        let inviter: Option<Membership> = match &invitation.inviter_user_id {
            Some(u) => self.folders.membership(&invitation.folder_id, u).await.ok(),
            None => None,
        };
        self.shown(invitation, inviter).await
    }

    /// The invitation as shown, given its inviter's standing in the folder (`None` when
    /// folders could not say).
    async fn shown(&self, mut invitation: InvitationDoc, inviter: Option<Membership>) -> InvitationView {
        if invitation.state == InvitationState::Pending
            && let Some(m) = &inviter
            && (!m.folder_exists || m.access != AccessLevel::Manage)
        {
            if let Err(e) = self.store.finish(&invitation.id, InvitationState::Revoked, self.now()).await {
                tracing::warn!(error = %e, "cannot record a revoked invitation");
            }
            invitation.state = InvitationState::Revoked;
        }
        let expired =
            invitation.state == InvitationState::Pending && invitation.expires_at.to_system_time() <= self.now();
        InvitationView { invitation, folder_name: inviter.map(|m| m.folder_name).unwrap_or_default(), expired }
    }
}
