//! Folders' part of a person's privacy rights (issue 14), run for auth: a copy of what
//! folders holds about them (memberships, the items they shared or changed last, decrypted,
//! and the audit events where they act), and their erasure. An erasure writes a tombstone
//! first, then removes their memberships (a folder they alone were in is deleted as
//! DeleteFolder deletes it, keys first; where they were the last manager, the
//! longest-standing other member becomes MANAGE), then replaces their email with a pseudonym
//! in items, folders and audit events. Every step is idempotent, so a repeated or concurrent
//! erasure is harmless. A write that stamps a user's email or makes a membership checks the
//! tombstone after it lands (`unless_erased`): the eraser wrote it before it scanned, so a
//! write that the scan missed is erased by its own writer.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use ts_contract::clock::bson_date;
use ts_contract::ids::{FolderId, UserId};
use ts_proto::public::AccessLevel;

use crate::folders::FolderView;
use crate::items::ItemView;
use crate::paging::{EventCursor, ItemCursor};
use crate::store::{AccessChange, AuditEventDoc, EventScope, FolderDoc, MemberDoc, Removal};
use crate::{Folders, FoldersError};

/// Memberships, items or events read from MongoDB at once.
const PAGE: usize = 100;
/// How many times an erasure looks again at a folder whose members change under it.
const MAX_ROUNDS: usize = 5;
/// Erased user ids remembered in memory. A tombstone is never removed, so a remembered id is
/// always right; one forgotten (or never seen) is read from MongoDB.
const KNOWN_ERASED: usize = 10_000;

/// Who is erased: their account (if they have one), their email and what replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureSubject {
    /// The account; `None` for an email that never had one (only the email is replaced).
    pub user_id: Option<UserId>,
    /// Their email, normalised.
    pub email: String,
    /// What replaces the email.
    pub pseudonym: String,
}

/// A folder that stops an erasure: the user is its last MANAGE member and others remain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The folder.
    pub folder_id: FolderId,
    /// Its opened name.
    pub folder_name: String,
    /// How many other members it has.
    pub other_members: u32,
}

/// What an erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Folders deleted because the user was their only member (keys destroyed).
    pub deleted_folders: Vec<FolderId>,
    /// Folders whose management went to the longest-standing other member.
    pub handed_over: Vec<FolderId>,
    /// Memberships removed from folders that remain (a deleted folder's is not counted).
    pub memberships_removed: u32,
}

/// One part of an export, in the order they are sent: memberships, items, audit events.
#[derive(Debug, Clone)]
pub enum ExportPart {
    /// A folder membership.
    Membership {
        /// The folder, opened, with the user's access.
        folder: FolderView,
        /// When the user joined.
        joined_at: bson::DateTime,
        /// The user created the folder.
        created_by_caller: bool,
    },
    /// An item the user shared or changed last, opened whole.
    Item {
        /// The item (boxed: far larger than the other parts).
        item: Box<ItemView>,
        /// The user shared it.
        shared_by_caller: bool,
        /// The user changed it last.
        last_edited_by_caller: bool,
    },
    /// An audit event where the user is the actor.
    Event(AuditEventDoc),
}

/// Erased user ids this process has seen, with their pseudonyms (a bounded positive cache of
/// the `erased_users` tombstones).
pub(crate) struct ErasedIds {
    known: Mutex<HashMap<String, String>>,
}

impl ErasedIds {
    /// None known yet.
    pub(crate) fn new() -> Self {
        ErasedIds { known: Mutex::new(HashMap::new()) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // No holder leaves the map half-changed, so poison is moot.
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pseudonym of an erased user id, if remembered.
    fn get(&self, user_id: &str) -> Option<String> {
        self.lock().get(user_id).cloned()
    }

    /// Remembers an erased user id; when full, forgets the others first (they are read
    /// again from MongoDB).
    fn remember(&self, user_id: &str, pseudonym: &str) {
        let mut known = self.lock();
        if known.len() >= KNOWN_ERASED && !known.contains_key(user_id) {
            known.clear();
        }
        known.insert(user_id.to_owned(), pseudonym.to_owned());
    }
}

/// A pseudonym from a request, in the one form auth makes (`ts_contract::pseudonym`): never
/// empty (it would match every document without an email), never an address.
pub(crate) fn check_pseudonym(field: &str, raw: &str) -> Result<String, FoldersError> {
    ts_contract::pseudonym::check(raw).map_err(|why| FoldersError::invalid(field, why))?;
    Ok(raw.to_owned())
}

/// Whether a folder stops the erasure of a member with `level`: they manage it, no one else
/// does (`managers`, as the membership transactions count them) and `others` remain.
fn blocks(level: AccessLevel, managers: i64, others: u64) -> bool {
    level == AccessLevel::Manage && managers <= 1 && others > 0
}

/// Where the next page of a user's memberships starts, if there is one.
fn next_after(more: bool, page: &[MemberDoc]) -> Option<String> {
    match (more, page.last()) {
        (true, Some(last)) => Some(last.folder_id.to_string()),
        _ => None,
    }
}

impl Folders {
    /// Sends to `emit`, page by page, what folders holds about the person: their memberships
    /// (with `user_id`), then the items of those folders they shared or changed last, then
    /// the audit events where they act, newest first. Stops early, without error, when `emit`
    /// answers false (the reader went away).
    pub(crate) async fn export_user_data<F, Fut>(
        &self,
        user_id: Option<&UserId>,
        email: &str,
        mut emit: F,
    ) -> Result<(), FoldersError>
    where
        F: FnMut(ExportPart) -> Fut,
        Fut: Future<Output = bool>,
    {
        if email.is_empty() {
            // An empty email would match every document that names no one.
            return Err(FoldersError::invalid("email", "is required"));
        }
        if let Some(user_id) = user_id {
            let mut after: Option<String> = None;
            loop {
                let (page, more) = self.store.memberships_page(user_id, after.as_deref(), PAGE).await?;
                for (m, folder) in self.open_memberships(&page).await? {
                    let created_by_caller = folder.doc.created_by_email == email;
                    if !emit(ExportPart::Membership { folder, joined_at: m.joined_at, created_by_caller }).await {
                        return Ok(());
                    }
                }
                match next_after(more, &page) {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            // The items, folder by folder: the memberships are read again rather than held.
            let mut after: Option<String> = None;
            loop {
                let (page, more) = self.store.memberships_page(user_id, after.as_deref(), PAGE).await?;
                for m in &page {
                    if !self.export_items(&m.folder_id, email, &mut emit).await? {
                        return Ok(());
                    }
                }
                match next_after(more, &page) {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        let mut after: Option<EventCursor> = None;
        loop {
            let scope = EventScope::Actor { user_id, email };
            let (events, more) = self.store.event_page(scope, after.as_ref(), PAGE).await?;
            let next = events.last().map(|e| EventCursor { time: e.time, id: e.id.clone() });
            for event in events {
                if !emit(ExportPart::Event(event)).await {
                    return Ok(());
                }
            }
            match (more, next) {
                (true, Some(next)) => after = Some(next),
                _ => return Ok(()),
            }
        }
    }

    /// The folders of a page of memberships, opened (one query for the page; keys opened
    /// together). A membership whose folder is gone is left out.
    async fn open_memberships<'a>(
        &self,
        page: &'a [MemberDoc],
    ) -> Result<Vec<(&'a MemberDoc, FolderView)>, FoldersError> {
        if page.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&FolderId> = page.iter().map(|m| &m.folder_id).collect();
        let mut docs: HashMap<FolderId, FolderDoc> =
            self.store.folders_with_ids(&ids).await?.into_iter().map(|f| (f.id.clone(), f)).collect();
        let (members, found): (Vec<&'a MemberDoc>, Vec<FolderDoc>) =
            page.iter().filter_map(|m| docs.remove(&m.folder_id).map(|d| (m, d))).unzip();
        let views = futures::future::try_join_all(
            found.into_iter().zip(&members).map(|(doc, m)| self.open_folder(doc, m.level())),
        )
        .await?;
        Ok(members.into_iter().zip(views).collect())
    }

    /// Sends the items of `folder_id` that `email` shared or changed last, opened whole;
    /// false when `emit` stopped the export.
    async fn export_items<F, Fut>(&self, folder_id: &FolderId, email: &str, emit: &mut F) -> Result<bool, FoldersError>
    where
        F: FnMut(ExportPart) -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut after: Option<ItemCursor> = None;
        loop {
            let (docs, more) = self.store.item_page_by(folder_id, email, after.as_ref(), PAGE).await?;
            let next = docs.last().map(|d| ItemCursor { created_at: d.created_at, id: d.id.to_string() });
            for d in docs {
                let shared_by_caller = d.shared_by_email == email;
                let last_edited_by_caller = d.updated_by_email == email;
                let item = self.open_item(d, true).await?;
                if !emit(ExportPart::Item { item: Box::new(item), shared_by_caller, last_edited_by_caller }).await {
                    return Ok(false);
                }
            }
            match (more, next) {
                (true, Some(next)) => after = Some(next),
                _ => return Ok(true),
            }
        }
    }

    /// The folders that stop `user_id`'s erasure: where they are the last MANAGE member and
    /// others remain, by folder id. Read from MongoDB, never from what is kept in memory.
    pub(crate) async fn check_erasure(&self, user_id: &UserId) -> Result<Vec<Blocker>, FoldersError> {
        let mut blocking = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, more) = self.store.memberships_page(user_id, after.as_deref(), PAGE).await?;
            let managed: Vec<&FolderId> =
                page.iter().filter(|m| m.level() == AccessLevel::Manage).map(|m| &m.folder_id).collect();
            if !managed.is_empty() {
                for folder in self.store.folders_with_ids(&managed).await? {
                    if folder.managers > 1 {
                        continue;
                    }
                    let others = self.store.count_other_members(&folder.id, user_id).await?;
                    if !blocks(AccessLevel::Manage, folder.managers, others) {
                        continue;
                    }
                    let folder_id = folder.id.clone();
                    let folder_name = self.open_folder(folder, AccessLevel::Manage).await?.name;
                    let other_members = u32::try_from(others).unwrap_or(u32::MAX);
                    blocking.push(Blocker { folder_id, folder_name, other_members });
                }
            }
            match next_after(more, &page) {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        blocking.sort_by(|a, b| a.folder_id.cmp(&b.folder_id));
        Ok(blocking)
    }

    /// Erases a person from folders (see the module comment). Unless `hand_over`, refused
    /// with LAST_MANAGER, changing nothing, while `check_erasure` finds folders; once the
    /// tombstone is written the erasure always completes, so a folder that a race made
    /// blocking afterwards is handed over.
    pub(crate) async fn erase_user(&self, who: &ErasureSubject, hand_over: bool) -> Result<Erasure, FoldersError> {
        if who.email.is_empty() {
            // An empty email would match every document that names no one.
            return Err(FoldersError::invalid("email", "is required"));
        }
        check_pseudonym("pseudonym", &who.pseudonym)?;
        let mut out = Erasure::default();
        if let Some(user_id) = &who.user_id {
            if !hand_over {
                let blocking = self.check_erasure(user_id).await?;
                if !blocking.is_empty() {
                    return Err(FoldersError::LastManagerOf(blocking));
                }
            }
            // First: a write that lands after the scan below sees it and erases again.
            self.store.mark_erased(user_id, &who.pseudonym, self.bson_now()).await?;
            self.erased.remember(user_id.as_str(), &who.pseudonym);
            let mut after: Option<String> = None;
            loop {
                let (page, more) = self.store.memberships_page(user_id, after.as_deref(), PAGE).await?;
                for m in &page {
                    self.leave_for_erasure(&m.folder_id, user_id, &mut out).await?;
                }
                match next_after(more, &page) {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            self.store.delete_spent_of(user_id).await?;
        }
        self.pseudonymise(who).await?;
        Ok(out)
    }

    /// Takes `user_id` out of `folder_id`: the folder is deleted when they are its only
    /// member; when they are its last manager, the longest-standing other member becomes
    /// MANAGE first (through the same guarded transaction as UpdateMemberAccess).
    async fn leave_for_erasure(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
        out: &mut Erasure,
    ) -> Result<(), FoldersError> {
        for _ in 0..MAX_ROUNDS {
            let Some(heir) = self.store.earliest_other_member(folder_id, user_id).await? else {
                self.delete_for_erasure(folder_id).await?;
                out.deleted_folders.push(folder_id.clone());
                return Ok(());
            };
            let removed = match self.store.remove_member(folder_id, user_id).await {
                Ok(removed) => removed,
                Err(e) => {
                    // A store error may come after the commit.
                    self.changed(folder_id).await;
                    return Err(e.into());
                }
            };
            match removed {
                Removal::Done => {
                    out.memberships_removed += 1;
                    self.changed_for_erasure(folder_id).await;
                    return Ok(());
                }
                // Gone already (a repeated or concurrent erasure): retire what may be kept.
                Removal::NoMember => {
                    self.changed_for_erasure(folder_id).await;
                    return Ok(());
                }
                // A deletion stopped half-way (the folder's document goes before its
                // members): finished, so that no membership names the user.
                Removal::NoFolder => {
                    self.delete_for_erasure(folder_id).await?;
                    return Ok(());
                }
                Removal::LastManager => {
                    let promoted = self.store.set_access(folder_id, &heir.user_id, AccessLevel::Manage).await;
                    self.changed_for_erasure(folder_id).await;
                    if matches!(promoted?, AccessChange::Done(_)) && !out.handed_over.contains(folder_id) {
                        out.handed_over.push(folder_id.clone());
                    }
                    // Then the removal again (or, if the heir went meanwhile, the next one).
                }
            }
        }
        Err(FoldersError::MembersKeptChanging)
    }

    /// Deletes a folder as DeleteFolder does (keys destroyed first). A new generation that
    /// did not reach Redis is not retried by a later erasure (it finds nothing left), so it
    /// is logged rather than failed: the keys are gone, and kept copies age out.
    async fn delete_for_erasure(&self, folder_id: &FolderId) -> Result<(), FoldersError> {
        match self.delete_folder(folder_id).await {
            Ok(()) => Ok(()),
            Err(FoldersError::NotYetEverywhere) => {
                tracing::warn!(%folder_id, "erased folder deleted, but its new generation did not reach redis");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// `changed` for an erasure, which a later run cannot repeat: a generation that did not
    /// reach Redis is logged.
    async fn changed_for_erasure(&self, folder_id: &str) {
        if !self.changed(folder_id).await {
            tracing::warn!(folder_id, "erasure changed a folder, but its new generation did not reach redis");
        }
    }

    /// Replaces the email with the pseudonym in items, folders and audit events; every folder
    /// whose documents change gets a new generation, so that no kept copy serves the email.
    async fn pseudonymise(&self, who: &ErasureSubject) -> Result<(), FoldersError> {
        let (email, pseudonym) = (who.email.as_str(), who.pseudonym.as_str());
        // Found before the change, which makes them unfindable.
        let mut touched: BTreeSet<String> = self.store.folders_with_items_by(email).await?.into_iter().collect();
        touched.extend(self.store.folders_created_by(email).await?);
        let replaced = async {
            self.store.pseudonymise_items(email, pseudonym).await?;
            self.store.pseudonymise_folders(email, pseudonym).await
        }
        .await;
        // Whatever the outcome: part of it may have landed.
        for folder_id in &touched {
            self.changed_for_erasure(folder_id).await;
        }
        replaced?;
        self.store.pseudonymise_events(who.user_id.as_ref(), email, pseudonym).await?;
        Ok(())
    }

    /// The pseudonym of an erased user id (as any service reported it), from memory when
    /// known, else from its tombstone in MongoDB.
    pub(crate) async fn tombstone(&self, user_id: &str) -> Result<Option<String>, FoldersError> {
        if let Some(pseudonym) = self.erased.get(user_id) {
            return Ok(Some(pseudonym));
        }
        let found = self.store.erased_user(user_id).await?;
        if let Some(t) = &found {
            self.erased.remember(user_id, &t.pseudonym);
        }
        Ok(found.map(|t| t.pseudonym))
    }

    /// After a write that stamped `email` or made a membership for `user_id`, whatever its
    /// `outcome`: when the account was erased meanwhile, the erasure runs again (handing
    /// management over: nothing may wedge it) and the write fails with UNKNOWN_USER.
    pub(crate) async fn unless_erased<T>(
        &self,
        user_id: &UserId,
        email: &str,
        outcome: Result<T, FoldersError>,
    ) -> Result<T, FoldersError> {
        let Some(pseudonym) = self.tombstone(user_id.as_str()).await? else {
            return outcome;
        };
        let who = ErasureSubject { user_id: Some(user_id.clone()), email: email.to_owned(), pseudonym };
        if let Err(e) = self.erase_user(&who, true).await {
            tracing::error!(error = %e, "cannot erase what a write that raced an erasure left");
        }
        Err(FoldersError::Erased)
    }

    /// After an audit event is written: an erased actor's event names their pseudonym and
    /// no user id. A failure is logged (the event is written).
    pub(crate) async fn pseudonymise_if_erased(&self, event: &AuditEventDoc) {
        if event.actor_user_id.is_empty() {
            return;
        }
        let rewritten = async {
            if let Some(pseudonym) = self.tombstone(&event.actor_user_id).await? {
                self.store.pseudonymise_event(&event.id, &pseudonym).await?;
            }
            Ok::<(), FoldersError>(())
        }
        .await;
        if let Err(e) = rewritten {
            tracing::error!(error = %e, action = %event.action, "cannot pseudonymise an erased account's audit event");
        }
    }

    /// Deletes the audit events whose retention ended before `before`; how many.
    pub(crate) async fn purge_audit_events(&self, before: SystemTime) -> Result<u64, FoldersError> {
        Ok(self.store.purge_events(bson_date(before)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_manager_of_other_members_blocks() {
        assert!(blocks(AccessLevel::Manage, 1, 1));
        assert!(blocks(AccessLevel::Manage, 1, 7));
        // A stale count never hides a blocker.
        assert!(blocks(AccessLevel::Manage, 0, 1));
        assert!(!blocks(AccessLevel::Manage, 2, 1), "another manager remains");
        assert!(!blocks(AccessLevel::Manage, 1, 0), "their folder alone is deleted instead");
        assert!(!blocks(AccessLevel::Edit, 1, 3));
        assert!(!blocks(AccessLevel::View, 1, 3));
    }

    #[test]
    fn pseudonyms_are_checked_in_the_form_auth_makes() {
        assert_eq!(check_pseudonym("pseudonym", "erased-0123456789abcdef0123").unwrap(), "erased-0123456789abcdef0123");
        for bad in ["", "a@b.example", "erased x", "erased-\u{e9}"] {
            let e = check_pseudonym("pseudonym", bad).unwrap_err();
            assert!(e.to_string().starts_with("pseudonym "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn erased_ids_are_remembered_until_the_set_is_full() {
        let known = ErasedIds::new();
        assert_eq!(known.get("u1"), None);
        known.remember("u1", "erased-1");
        assert_eq!(known.get("u1").as_deref(), Some("erased-1"));
        for i in 0..KNOWN_ERASED {
            known.remember(&format!("x{i}"), "p");
        }
        // Full: forgotten ones are read again from MongoDB; the set never grows past its bound.
        assert!(known.lock().len() <= KNOWN_ERASED);
        known.remember("u1", "erased-1");
        assert_eq!(known.get("u1").as_deref(), Some("erased-1"));
    }

    #[test]
    fn membership_pages_resume_after_the_last_folder_only_when_more_follow() {
        let member = |folder_id: &FolderId| MemberDoc {
            id: MemberDoc::id_of(folder_id, &UserId::new()),
            folder_id: folder_id.clone(),
            user_id: UserId::new(),
            email: "a@b.example".into(),
            access: AccessLevel::View as i32,
            joined_at: bson::DateTime::from_millis(0),
            invitation_id: None,
            manage_epoch: None,
        };
        let (f1, f2) = (FolderId::new(), FolderId::new());
        let page = vec![member(&f1), member(&f2)];
        assert_eq!(next_after(true, &page), Some(f2.to_string()));
        assert_eq!(next_after(false, &page), None);
        assert_eq!(next_after(true, &[]), None);
    }
}
