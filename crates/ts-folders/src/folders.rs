//! Folders: create (with its data key and first MANAGE member), list, read, rename, delete
//! (crypto-erasure first) and leave.

use std::collections::HashMap;
use std::sync::Arc;

use ts_contract::ids::{FolderId, UserId};
use ts_contract::user::UserContext;
use ts_proto::public::AccessLevel;
use ts_stores::cache::Generation;

use crate::context::FolderAccess;
use crate::paging::{FolderCursor, Page, PageAsk};
use crate::sealed::{open_field, seal_fields, version_of};
use crate::store::{FolderDoc, MemberDoc};
use crate::{FOLDER_ITEM_ID, Folders, FoldersError};

/// ListFolders: 50 folders by default, at most 200.
const PAGE: (u32, u32) = (50, 200);

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
    pub(crate) async fn create_folder(&self, user: &UserContext, name: String) -> Result<FolderView, FoldersError> {
        let id = FolderId::new();
        self.keys.create(&id).await?;
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
        self.store.insert_folder(&folder).await?;
        let member = MemberDoc {
            id: MemberDoc::id_of(&id, &user.user_id),
            folder_id: id.clone(),
            user_id: user.user_id.clone(),
            email: user.email.clone(),
            access: AccessLevel::Manage as i32,
            joined_at: now,
            invitation_id: None,
            manage_epoch: Some(uuid::Uuid::new_v4().simple().to_string()),
        };
        if let Err(e) = self.store.insert_member(&member).await {
            // Nothing half-made: without its first member the folder goes too.
            let _ = self.store.delete_folder(&id).await;
            let _ = self.keys.destroy(&id).await;
            return Err(e.into());
        }
        self.changed(&id).await;
        self.open_folder(folder, AccessLevel::Manage).await
    }

    /// A page of the folders `user_id` is a member of, by folder id.
    pub(crate) async fn list_folders(&self, user_id: &UserId, ask: &PageAsk) -> Result<Page<FolderView>, FoldersError> {
        let size = ask.size(PAGE.0, PAGE.1);
        let after = ask.token().map(FolderCursor::decode).transpose()?;
        let (memberships, more) =
            self.store.memberships_page(user_id, after.as_ref().map(|c| c.folder_id.as_str()), size).await?;
        let ids: Vec<&FolderId> = memberships.iter().map(|m| &m.folder_id).collect();
        let mut found: HashMap<FolderId, FolderDoc> =
            self.store.folders_with_ids(&ids).await?.into_iter().map(|f| (f.id.clone(), f)).collect();
        let mut folders = Vec::new();
        for m in &memberships {
            // A membership whose level does not read still lists its folder.
            let access = AccessLevel::try_from(m.access).unwrap_or(AccessLevel::View);
            if let Some(f) = found.remove(&m.folder_id) {
                folders.push(self.open_folder(f, access).await?);
            }
        }
        let next_token = match (more, memberships.last()) {
            (true, Some(last)) => FolderCursor { folder_id: last.folder_id.to_string() }.encode(),
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
