//! Folders: create (with its data key and first MANAGE member), list, read, rename, delete
//! (crypto-erasure first) and leave.

use std::collections::HashMap;
use std::sync::Arc;

use ts_contract::ids::{FolderId, RequestId, UserId};
use ts_contract::user::UserContext;
use ts_proto::public::AccessLevel;
use ts_stores::cache::{Generation, Tagged};

use ts_contract::revocation::SHARING_EPOCH_KEY;

use crate::context::{FolderAccess, folder_generation_key, user_folders_generation_key};
use crate::error::KeyvaultRefusal;
use crate::paging::{FolderCursor, Page, PageAsk};
use crate::sealed::{open_field, seal_fields, version_of};
use crate::store::{FolderDoc, MemberDoc};
use crate::{FOLDER_ITEM_ID, Folders, FoldersError};

/// ListFolders: 50 folders by default, at most 200.
const PAGE: (u32, u32) = (50, 200);

/// Where a listing of a user's folders starts: the user, the folder id it starts after, the
/// page size.
pub(crate) type ListingKey = (UserId, Option<String>, usize);

/// A page of a user's memberships kept in memory.
#[derive(Debug, Clone)]
pub(crate) struct KeptListing {
    entries: Arc<Vec<(FolderId, AccessLevel)>>,
    more: bool,
}

/// Listings of users' folders kept in memory.
pub(crate) fn kept_listings() -> Tagged<ListingKey, KeptListing> {
    Tagged::new(20_000, std::time::Duration::from_secs(30))
}

/// A listing about to be served, with what is kept of it (to be checked against the
/// generations of the folders it held).
#[derive(Debug)]
pub(crate) struct Listing {
    key: ListingKey,
    kept: Option<KeptListing>,
}

impl Listing {
    /// The folders the kept copy held.
    fn hinted(&self) -> impl Iterator<Item = &FolderId> {
        self.kept.iter().flat_map(|k| k.entries.iter().map(|(f, _)| f))
    }
}

/// The generations a listing depends on.
#[derive(Debug)]
pub(crate) struct ListingGenerations {
    /// Auth's sharing epoch.
    pub sharing: Generation,
    user: Generation,
    folders: HashMap<FolderId, Generation>,
}

/// The first member of a new folder: its maker, with MANAGE.
fn first_member(folder_id: &FolderId, user: &UserContext, now: bson::DateTime) -> MemberDoc {
    MemberDoc {
        id: MemberDoc::id_of(folder_id, &user.user_id),
        folder_id: folder_id.clone(),
        user_id: user.user_id.clone(),
        email: user.email.clone(),
        access: AccessLevel::Manage as i32,
        joined_at: now,
        invitation_id: None,
        manage_epoch: Some(uuid::Uuid::new_v4().simple().to_string()),
    }
}

/// A folder as its member sees it: the stored document, its opened name and their access.
#[derive(Debug, Clone)]
pub struct FolderView {
    /// As stored.
    pub doc: FolderDoc,
    /// The opened name.
    pub name: String,
    /// The caller's access.
    pub access: AccessLevel,
}

impl Folders {
    /// Opens a stored folder's name.
    pub(crate) async fn open_folder(&self, doc: FolderDoc, access: AccessLevel) -> Result<FolderView, FoldersError> {
        let missing = |part| FoldersError::Incomplete { what: "folder", part };
        let version = version_of(doc.key_version).ok_or_else(|| missing("a key version"))?;
        let key = self.keys.version(&doc.id, version).await?;
        let enc = doc.enc.as_ref().ok_or_else(|| missing("sealed fields"))?;
        let name = String::from_utf8_lossy(&open_field(&key, &doc.id, FOLDER_ITEM_ID, enc, "name")?).into_owned();
        Ok(FolderView { doc, name, access })
    }

    /// A stored folder, kept in memory under its `generation`, else from MongoDB; NOT_FOUND
    /// when it is gone.
    pub(crate) async fn load_folder(
        &self,
        folder_id: &FolderId,
        generation: &Generation,
    ) -> Result<FolderDoc, FoldersError> {
        if let Some(kept) = self.folder_docs.get(folder_id, generation) {
            return Ok(kept.as_ref().clone());
        }
        let doc = self.store.folder(folder_id).await?.ok_or(FoldersError::FolderNotFound)?;
        self.folder_docs.insert(folder_id.clone(), generation, Arc::new(doc.clone()));
        Ok(doc)
    }

    /// A new folder named `name` (checked), with `user` as its first MANAGE member.
    /// With a client `request` id, a retry returns the folder the first call made (one folder,
    /// one data key), and the same id with another name is refused. It makes a membership
    /// and names the caller's email, so an erasure that raced it is run again
    /// (`unless_erased`), which deletes it.
    pub(crate) async fn create_folder(
        &self,
        user: &UserContext,
        name: String,
        request: Option<&RequestId>,
    ) -> Result<FolderView, FoldersError> {
        let made = self.make_folder(user, name, request).await;
        self.unless_erased(&user.user_id, &user.email, made).await
    }

    async fn make_folder(
        &self,
        user: &UserContext,
        name: String,
        request: Option<&RequestId>,
    ) -> Result<FolderView, FoldersError> {
        let id = FolderId::for_create(user.user_id.as_str(), request);
        if request.is_some()
            && let Some(made) = self.store.folder(&id).await?
        {
            return self.folder_made_before(user, made, &name).await;
        }
        self.keys.create(&id).await.map_err(|e| match e {
            // The folder this request made was deleted since, with its keys: the id is spent.
            FoldersError::Keyvault { refusal: KeyvaultRefusal::FailedPrecondition, .. } if request.is_some() => {
                FoldersError::RequestIdReused
            }
            e => e,
        })?;
        let key = self.keys.newest(&id).await?;
        let enc = seal_fields(&key, &id, FOLDER_ITEM_ID, &[("name", name.as_bytes())])?;
        let now = self.bson_now();
        let folder = FolderDoc {
            id: id.clone(),
            enc: Some(enc),
            key_version: Some(i64::from(key.version())),
            managers: 1,
            items: 0,
            created_by_email: user.email.clone(),
            created_at: now,
            updated_at: now,
        };
        if let Err(e) = self.store.insert_folder(&folder).await {
            // A concurrent retry of the same request made it first: its answer is ours (its
            // key is its own; nothing here is undone).
            if request.is_some()
                && ts_stores::is_duplicate_key(&e)
                && let Some(made) = self.store.folder(&id).await?
            {
                return self.folder_made_before(user, made, &name).await;
            }
            return Err(e.into());
        }
        if let Err(e) = self.add_first_member(&id, user).await {
            // Nothing half-made: without its first member the folder goes too.
            let _ = self.store.delete_folder(&id).await;
            let _ = self.keys.destroy(&id).await;
            return Err(e);
        }
        self.open_folder(folder, AccessLevel::Manage).await
    }

    /// Makes `user` the first (MANAGE) member of a new folder. Already there is success: a
    /// concurrent retry of the same create added it (the member's id is the folder's and the
    /// user's, and a random folder id is never retried).
    async fn add_first_member(&self, id: &FolderId, user: &UserContext) -> Result<(), FoldersError> {
        match self.store.insert_member(&first_member(id, user, self.bson_now())).await {
            Ok(()) => {}
            Err(e) if ts_stores::is_duplicate_key(&e) => {}
            Err(e) => return Err(e.into()),
        }
        self.joined(id, &user.user_id).await;
        Ok(())
    }

    /// The answer to a retried create whose request made `made`: the folder as the caller
    /// sees it when it is the same request, else REQUEST_ID_REUSED.
    async fn folder_made_before(
        &self,
        user: &UserContext,
        made: FolderDoc,
        name: &str,
    ) -> Result<FolderView, FoldersError> {
        let access = match self.store.member(&made.id, &user.user_id).await? {
            Some(m) => AccessLevel::try_from(m.access).unwrap_or(AccessLevel::Unspecified),
            // The first call stopped (a crash) between the folder and its first member:
            // the retry finishes it. (A concurrent first call may be adding it right now;
            // the member's unique id lets only one in.)
            None if made.created_by_email == user.email && !self.store.has_members(&made.id).await? => {
                self.add_first_member(&made.id, user).await?;
                AccessLevel::Manage
            }
            // The caller has left the folder they made since.
            None => return Err(FoldersError::RequestInProgress),
        };
        // The first attempt may have died between its commit and its invalidation: the
        // caller's folder list must not be served without the folder after this answer.
        self.joined(made.id.as_str(), user.user_id.as_str()).await;
        let view = self.open_folder(made, access).await?;
        if view.name != name {
            return Err(FoldersError::RequestIdReused);
        }
        Ok(view)
    }

    /// Where a listing of `user_id`'s folders starts, and the folders a kept copy of it
    /// held (whose generations are read with the others before anything is served).
    pub(crate) fn listing(&self, user_id: &UserId, ask: &PageAsk) -> Result<Listing, FoldersError> {
        let size = ask.size(PAGE.0, PAGE.1);
        let after = ask.token().map(FolderCursor::decode).transpose()?.map(|c| c.folder_id);
        let key = (user_id.clone(), after, size);
        let kept = self.listings.peek(&key);
        Ok(Listing { key, kept })
    }

    /// The generations a listing depends on, with the sharing epoch: one round trip.
    pub(crate) async fn listing_generations(&self, listing: &Listing) -> ListingGenerations {
        let mut keys = vec![SHARING_EPOCH_KEY.to_owned(), user_folders_generation_key(&listing.key.0)];
        keys.extend(listing.hinted().map(|f| folder_generation_key(f)));
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut read = self.cache.generations(&keys).await.into_iter();
        let sharing = read.next().unwrap_or_else(Generation::unknown);
        let user = read.next().unwrap_or_else(Generation::unknown);
        let folders = listing.hinted().cloned().zip(read).collect();
        ListingGenerations { sharing, user, folders }
    }

    /// A page of the folders `user_id` is a member of, by folder id: kept in memory under the
    /// user's generation and every listed folder's, else read from MongoDB.
    pub(crate) async fn list_folders(
        &self,
        listing: Listing,
        generations: &ListingGenerations,
    ) -> Result<Page<FolderView>, FoldersError> {
        let Listing { key, kept } = listing;
        let (user_id, after, size) = (&key.0, key.1.clone(), key.2);
        let generation_of = |f: &FolderId| generations.folders.get(f).cloned().unwrap_or_else(Generation::unknown);
        let tag_of = |entries: &[(FolderId, AccessLevel)]| {
            entries.iter().fold(generations.user.clone(), |tag, (f, _)| tag.and(&generation_of(f)))
        };
        let kept = kept.and_then(|kept| self.listings.get(&key, &tag_of(&kept.entries)));
        let page = match kept {
            Some(page) => page,
            None => {
                let (memberships, more) = self.store.memberships_page(user_id, after.as_deref(), size).await?;
                // A membership whose level does not read still lists its folder.
                let entries: Vec<(FolderId, AccessLevel)> = memberships
                    .into_iter()
                    .map(|m| (m.folder_id, AccessLevel::try_from(m.access).unwrap_or(AccessLevel::View)))
                    .collect();
                let page = KeptListing { entries: Arc::new(entries), more };
                // Kept only when every listed folder's generation was read before MongoDB was;
                // otherwise kept as a hint, so that the next listing reads them first.
                if page.entries.iter().all(|(f, _)| generations.folders.contains_key(f)) {
                    self.listings.insert(key.clone(), &tag_of(&page.entries), page.clone());
                } else {
                    self.listings.hint(key.clone(), page.clone());
                }
                page
            }
        };
        // Each folder from memory under its generation; the others in one query.
        let kept_docs: Vec<Option<Arc<FolderDoc>>> =
            page.entries.iter().map(|(f, _)| self.folder_docs.get(f, &generation_of(f))).collect();
        let missing: Vec<&FolderId> =
            page.entries.iter().zip(&kept_docs).filter(|(_, d)| d.is_none()).map(|((f, _), _)| f).collect();
        let mut read: HashMap<FolderId, FolderDoc> = if missing.is_empty() {
            HashMap::new()
        } else {
            self.store.folders_with_ids(&missing).await?.into_iter().map(|f| (f.id.clone(), f)).collect()
        };
        let mut folders = Vec::with_capacity(page.entries.len());
        for ((f, access), kept) in page.entries.iter().zip(kept_docs) {
            let doc = match kept {
                Some(kept) => kept.as_ref().clone(),
                None => match read.remove(f) {
                    Some(doc) => {
                        self.folder_docs.insert(f.clone(), &generation_of(f), Arc::new(doc.clone()));
                        doc
                    }
                    None => continue,
                },
            };
            folders.push((doc, *access));
        }
        // Each folder has its own data key: opened together, a page of cold keys costs one
        // keyvault round trip's time, not one per folder.
        let folders =
            futures::future::try_join_all(folders.into_iter().map(|(doc, access)| self.open_folder(doc, access)))
                .await?;
        let next_token = match (page.more, page.entries.last()) {
            (true, Some((last, _))) => FolderCursor { folder_id: last.to_string() }.encode(),
            _ => String::new(),
        };
        Ok(Page { items: folders, next_token })
    }

    /// The folder the caller was checked into.
    pub(crate) async fn get_folder(&self, at: FolderAccess) -> Result<FolderView, FoldersError> {
        let doc = self.load_folder(&at.folder_id, &at.generation).await?;
        self.open_folder(doc, at.access).await
    }

    /// Renames a folder (the caller was checked for MANAGE) to `name` (checked).
    pub(crate) async fn rename_folder(&self, at: FolderAccess, name: String) -> Result<FolderView, FoldersError> {
        let key = self.keys.newest(&at.folder_id).await?;
        let enc = seal_fields(&key, &at.folder_id, FOLDER_ITEM_ID, &[("name", name.as_bytes())])?;
        self.store.rename_folder(&at.folder_id, enc, key.version(), self.bson_now()).await?;
        self.changed(&at.folder_id).await;
        let doc = self.load_folder(&at.folder_id, &Generation::unknown()).await?;
        self.open_folder(doc, at.access).await
    }

    /// Deletes a folder (the caller was checked for MANAGE): its keys first, so that nothing
    /// left behind can be read, then the folder, its items and its members.
    pub(crate) async fn delete_folder(&self, folder_id: &FolderId) -> Result<(), FoldersError> {
        let destroyed = self.keys.destroy(folder_id).await;
        // Whatever happens next, no replica serves what it kept of the folder.
        self.changed(folder_id).await;
        destroyed?;
        // Then the folder itself, so that a concurrent accept (its transaction touches the
        // folder) either lands before and is swept below, or finds no folder.
        let deleted = async {
            self.store.delete_folder(folder_id).await?;
            self.store.delete_items_of(folder_id).await?;
            self.store.delete_members_of(folder_id).await
        }
        .await;
        let landed = self.changed(folder_id).await;
        deleted?;
        if landed { Ok(()) } else { Err(FoldersError::NotYetEverywhere) }
    }
}
