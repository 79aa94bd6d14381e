//! Items: sealed field by field under the folder's data key, versioned with optimistic
//! concurrency, capped per folder (the count moves in the same transaction as the item, see
//! `store::items`), and kept in memory as ciphertext only, under the folder's generation.

use std::sync::Arc;
use std::time::Duration;

use bson::Document;
use prost::Message;
use ts_contract::ids::{FolderId, ItemId, RequestId, UserId};
use ts_contract::user::UserContext;
use ts_crypto::DataKey;
use ts_proto::public::{AccessLevel, ItemContent};
use zeroize::Zeroizing;

use ts_stores::cache::Generation;

use crate::context::FolderAccess;
use crate::paging::{ItemCursor, Page, PageAsk};
use crate::sealed::{open_field, seal_fields, version_of};
use crate::store::{ItemDoc, ItemWrite, Slots};
use crate::validate::CheckedItem;
use crate::{Folders, FoldersError};

/// Most items in one folder.
pub const MAX_ITEMS_PER_FOLDER: i64 = 10_000;
/// Stored item documents (ciphertext) kept in memory: at most this many bytes, each at most
/// `ITEM_AGE` old (a backstop; a change retires them through the folder's generation).
const ITEM_BYTES: u64 = 16 << 20;
const ITEM_AGE: Duration = Duration::from_secs(60);
/// ListItems: 100 items by default, at most 500.
const PAGE: (u32, u32) = (100, 500);

/// An item as a member sees it: the stored document and its opened fields.
#[derive(Debug, Clone)]
pub struct ItemView {
    /// As stored.
    pub doc: ItemDoc,
    /// The opened name.
    pub name: String,
    /// The opened description and content, when asked for.
    pub body: Option<ItemBody>,
}

/// An item's opened description and content.
#[derive(Debug, Clone)]
pub struct ItemBody {
    /// Description.
    pub description: String,
    /// Content.
    pub content: ItemContent,
}

/// An item document's stored size, by which kept items and pages are bounded.
fn stored_size(d: &ItemDoc) -> u32 {
    bson::to_vec(d).map_or(u32::MAX, |b| u32::try_from(b.len()).unwrap_or(u32::MAX))
}

/// A stored item kept in memory, with its size for the bound.
#[derive(Debug, Clone)]
pub(crate) struct KeptItem {
    doc: Arc<ItemDoc>,
    size: u32,
}

/// Items kept in memory under their folder's generation.
pub(crate) fn kept_items() -> ts_stores::cache::Tagged<(FolderId, ItemId), KeptItem> {
    ts_stores::cache::Tagged::weighed(ITEM_BYTES, ITEM_AGE, |k| k.size)
}

/// A page of a folder's stored items kept in memory, by the position it starts after and
/// its size.
#[derive(Debug, Clone)]
pub(crate) struct KeptPage {
    docs: Arc<Vec<Arc<ItemDoc>>>,
    more: bool,
    size: u32,
}

impl KeptPage {
    fn of(docs: &[ItemDoc], more: bool) -> Self {
        let size = docs.iter().map(stored_size).fold(0u32, u32::saturating_add);
        KeptPage { docs: Arc::new(docs.iter().cloned().map(Arc::new).collect()), more, size }
    }
}

/// Where a kept page starts: the folder, the position after (creation millis, item id), the
/// page size.
pub(crate) type PageKey = (FolderId, Option<(i64, String)>, usize);

/// Pages of items kept in memory under their folder's generation.
pub(crate) fn kept_pages() -> ts_stores::cache::Tagged<PageKey, KeptPage> {
    ts_stores::cache::Tagged::weighed(ITEM_BYTES, ITEM_AGE, |p| p.size)
}

fn missing(part: &'static str) -> FoldersError {
    FoldersError::Incomplete { what: "item", part }
}

/// An `expected_version` as stored versions are numbered.
fn expected(version: u64) -> Result<i64, FoldersError> {
    i64::try_from(version).map_err(|_| FoldersError::ExpectedVersionRange)
}

fn stale(current: &ItemDoc, expected: u64) -> FoldersError {
    FoldersError::Stale { expected, current: current.version }
}

fn enc_of(d: &ItemDoc) -> Result<&Document, FoldersError> {
    d.enc.as_ref().ok_or_else(|| missing("sealed fields"))
}

impl Folders {
    async fn key_of(&self, d: &ItemDoc) -> Result<DataKey, FoldersError> {
        let version = version_of(d.key_version).ok_or_else(|| missing("a key version"))?;
        self.keys.version(&d.folder_id, version).await
    }

    /// Opens a stored item: its name, and its description and content `with_body`.
    pub(crate) async fn open_item(&self, d: ItemDoc, with_body: bool) -> Result<ItemView, FoldersError> {
        if cfg!(feature = "insecure-bench") {
            let body = with_body.then(|| ItemBody { description: String::new(), content: ItemContent::default() });
            return Ok(ItemView { doc: d, name: String::new(), body });
        }
        let key = self.key_of(&d).await?;
        let enc = enc_of(&d)?;
        let open = |field| open_field(&key, &d.folder_id, &d.id, enc, field);
        let name = String::from_utf8_lossy(&open("name")?).into_owned();
        let body = if with_body {
            let description = String::from_utf8_lossy(&open("description")?).into_owned();
            let content = ItemContent::decode(open("content")?.as_slice())
                .map_err(|_| FoldersError::Undecodable(d.id.to_string()))?;
            Some(ItemBody { description, content })
        } else {
            None
        };
        Ok(ItemView { doc: d, name, body })
    }

    /// An item of a folder: kept in memory under the folder's `generation`, else from
    /// MongoDB (always, for an unknown generation: writes read what is stored).
    async fn load_item(
        &self,
        folder_id: &FolderId,
        id: &ItemId,
        generation: &Generation,
    ) -> Result<ItemDoc, FoldersError> {
        let key = (folder_id.clone(), id.clone());
        if let Some(kept) = self.items.get(&key, generation) {
            return Ok(kept.doc.as_ref().clone());
        }
        let d = self.store.item(folder_id, id).await?.ok_or(FoldersError::ItemNotFound)?;
        if generation.is_known() {
            self.items.insert(key, generation, KeptItem { doc: Arc::new(d.clone()), size: stored_size(&d) });
        }
        Ok(d)
    }

    fn seal_item(
        &self,
        key: &DataKey,
        folder_id: &str,
        id: &str,
        item: &CheckedItem,
    ) -> Result<Document, FoldersError> {
        seal_fields(
            key,
            folder_id,
            id,
            &[("name", item.name.as_bytes()), ("description", item.description.as_bytes()), ("content", &item.content)],
        )
    }

    /// A new item in a folder (the caller was checked for EDIT), unless the folder is full.
    /// It names the caller's email, so an erasure that raced it is run again
    /// (`unless_erased`).
    pub(crate) async fn create_item(
        &self,
        user: &UserContext,
        folder_id: &FolderId,
        item: &CheckedItem,
        request: Option<&RequestId>,
    ) -> Result<ItemView, FoldersError> {
        let made = self.make_item(user, folder_id, item, request).await;
        self.unless_erased(&user.user_id, &user.email, made).await
    }

    async fn make_item(
        &self,
        user: &UserContext,
        folder_id: &FolderId,
        item: &CheckedItem,
        request: Option<&RequestId>,
    ) -> Result<ItemView, FoldersError> {
        let id = ItemId::for_create(user.user_id.as_str(), request);
        if request.is_some()
            && let Some(made) = self.item_made_before(folder_id, &id, item).await?
        {
            // The first attempt may have died between its commit and its invalidation (a
            // replica killed): pages kept without the item must not outlive this answer.
            self.changed(folder_id).await;
            return Ok(made);
        }
        let key = self.keys.newest(folder_id).await?;
        let now = self.bson_now();
        let d = ItemDoc {
            id: id.clone(),
            folder_id: folder_id.clone(),
            kind: item.kind as i32,
            version: 1,
            key_version: Some(i64::from(key.version())),
            enc: Some(self.seal_item(&key, folder_id, &id, item)?),
            shared_by_email: user.email.clone(),
            updated_by_email: user.email.clone(),
            created_at: now,
            updated_at: now,
        };
        let written =
            self.store.write_with_slots(Some(folder_id), None, MAX_ITEMS_PER_FOLDER, ItemWrite::Insert(&d)).await;
        // Whatever the outcome (a store error may come after the commit): pages kept before
        // the new item must not be served after it.
        self.changed(folder_id).await;
        let written = match written {
            // A concurrent retry of the same request made it first.
            Err(e) if request.is_some() && ts_stores::is_duplicate_key(&e) => {
                // Not readable yet: the first attempt (its own task, still running after its
                // caller gave up) has not committed. The client asks again.
                return self.item_made_before(folder_id, &id, item).await?.ok_or(FoldersError::RequestInProgress);
            }
            other => other,
        };
        match written? {
            Slots::Written => {}
            Slots::Full | Slots::NoMatch => return Err(FoldersError::FolderFull),
        }
        self.open_item(d, true).await
    }

    /// The item a retried create made, when the item with its request's id is in this folder
    /// under the same name and kind; REQUEST_ID_REUSED when that id is another item's.
    async fn item_made_before(
        &self,
        folder_id: &FolderId,
        id: &ItemId,
        item: &CheckedItem,
    ) -> Result<Option<ItemView>, FoldersError> {
        // Anywhere first, then here: read the other way round, a first attempt (its own task)
        // committing between the two reads looked like an item in another folder.
        if !self.store.item_anywhere(id).await? {
            return Ok(None);
        }
        match self.store.item(folder_id, id).await? {
            Some(d) => {
                let view = self.open_item(d, true).await?;
                if view.name != item.name || view.doc.kind != item.kind as i32 {
                    return Err(FoldersError::RequestIdReused);
                }
                Ok(Some(view))
            }
            // Made in another folder (or moved there): the id is taken.
            None => Err(FoldersError::RequestIdReused),
        }
    }

    /// One item with its content (the caller was checked for VIEW).
    pub(crate) async fn get_item(&self, at: &FolderAccess, id: &ItemId) -> Result<ItemView, FoldersError> {
        let d = self.load_item(&at.folder_id, id, &at.generation).await?;
        self.open_item(d, true).await
    }

    /// A page of a folder's items, oldest first, names only (the caller was checked for VIEW).
    pub(crate) async fn list_items(&self, at: &FolderAccess, ask: &PageAsk) -> Result<Page<ItemView>, FoldersError> {
        let folder_id = &at.folder_id;
        let size = ask.size(PAGE.0, PAGE.1);
        let after = match ask.token() {
            Some(t) => Some(ItemCursor::open(&self.keys, folder_id, t).await?),
            None => None,
        };
        let key = (folder_id.clone(), after.as_ref().map(|c| (c.created_at.timestamp_millis(), c.id.clone())), size);
        let (docs, more) = match self.pages.get(&key, &at.generation) {
            Some(kept) => (kept.docs.iter().map(|d| d.as_ref().clone()).collect::<Vec<_>>(), kept.more),
            None => {
                let (docs, more) = self.store.item_page(folder_id, after.as_ref(), size).await?;
                if at.generation.is_known() {
                    let kept = KeptPage::of(&docs, more);
                    self.pages.insert(key, &at.generation, kept);
                }
                (docs, more)
            }
        };
        // The next page's token is sealed under the key that opened the page's last item
        // (just used, so in memory), not the newest (which asks keyvault every time).
        let last = match docs.last() {
            Some(d) if more => {
                Some((ItemCursor { created_at: d.created_at, id: d.id.to_string() }, self.key_of(d).await?))
            }
            _ => None,
        };
        let mut items = Vec::new();
        for d in docs {
            items.push(self.open_item(d, false).await?);
        }
        let next_token = match last {
            Some((cursor, key)) => cursor.seal_under(&key, folder_id)?,
            None => String::new(),
        };
        Ok(Page { items, next_token })
    }

    /// Replaces an item's fields if it is still at `expected_version` (the caller was
    /// checked for EDIT; `item` is checked and of the item's kind). It names the caller's
    /// email, so an erasure that raced it is run again (`unless_erased`).
    pub(crate) async fn update_item(
        &self,
        user: &UserContext,
        folder_id: &FolderId,
        id: &ItemId,
        item: &CheckedItem,
        expected_version: u64,
    ) -> Result<ItemView, FoldersError> {
        let updated = self.rewrite_item(user, folder_id, id, item, expected_version).await;
        self.unless_erased(&user.user_id, &user.email, updated).await
    }

    async fn rewrite_item(
        &self,
        user: &UserContext,
        folder_id: &FolderId,
        id: &ItemId,
        item: &CheckedItem,
        expected_version: u64,
    ) -> Result<ItemView, FoldersError> {
        let current = self.load_item(folder_id, id, &Generation::unknown()).await?;
        if current.kind != item.kind as i32 {
            return Err(FoldersError::KindChange);
        }
        let key = self.keys.newest(folder_id).await?;
        let expected_at = expected(expected_version)?;
        let enc = self.seal_item(&key, folder_id, id, item)?;
        let written = self
            .store
            .update_item((folder_id, id), expected_at, enc, key.version(), &user.email, self.bson_now())
            .await;
        self.changed(folder_id).await;
        let written = written?;
        if !written {
            return Err(stale(&current, expected_version));
        }
        let stored = self.load_item(folder_id, id, &Generation::unknown()).await?;
        self.open_item(stored, true).await
    }

    /// Deletes an item if it is still at `expected_version` (the caller was checked for EDIT).
    pub(crate) async fn delete_item(
        &self,
        folder_id: &FolderId,
        id: &ItemId,
        expected_version: u64,
    ) -> Result<(), FoldersError> {
        let current = self.load_item(folder_id, id, &Generation::unknown()).await?;
        let write = ItemWrite::Delete { id, folder_id, expected_version: expected(expected_version)? };
        let outcome = self.store.write_with_slots(None, Some(folder_id), MAX_ITEMS_PER_FOLDER, write).await;
        self.changed(folder_id).await;
        let outcome = outcome?;
        if outcome != Slots::Written {
            return Err(stale(&current, expected_version));
        }
        Ok(())
    }

    /// Checks the folder an item is to move into: another folder, where the caller has EDIT.
    pub(crate) async fn require_target(
        &self,
        user_id: &UserId,
        from: &FolderId,
        target: FolderId,
    ) -> Result<FolderAccess, FoldersError> {
        if &target == from {
            return Err(FoldersError::SameTarget);
        }
        let generation = self.cache.generation(&crate::context::folder_generation_key(&target)).await;
        self.require(user_id, target, AccessLevel::Edit, generation).await.map_err(|e| match e {
            FoldersError::FolderNotFound => FoldersError::TargetFolderNotFound,
            e => e,
        })
    }

    /// Moves an item at `expected_version` into `to` (both folders checked for EDIT),
    /// sealing it anew there, unless `to` is full. It names the caller's email, so an
    /// erasure that raced it is run again (`unless_erased`).
    pub(crate) async fn move_item(
        &self,
        user: &UserContext,
        from: &FolderId,
        to: &FolderId,
        id: &ItemId,
        expected_version: u64,
    ) -> Result<ItemView, FoldersError> {
        let moved = self.relocate_item(user, from, to, id, expected_version).await;
        self.unless_erased(&user.user_id, &user.email, moved).await
    }

    async fn relocate_item(
        &self,
        user: &UserContext,
        from: &FolderId,
        to: &FolderId,
        id: &ItemId,
        expected_version: u64,
    ) -> Result<ItemView, FoldersError> {
        let current = self.load_item(from, id, &Generation::unknown()).await?;
        let old_key = self.key_of(&current).await?;
        let new_key = self.keys.newest(to).await?;
        // Fields are bound to their folder, so moving means opening and sealing again.
        let enc = enc_of(&current)?;
        let plain: Vec<(&str, Zeroizing<Vec<u8>>)> = enc
            .keys()
            .map(|f| Ok((f.as_str(), open_field(&old_key, from, id, enc, f)?)))
            .collect::<Result<_, FoldersError>>()?;
        let fields: Vec<(&str, &[u8])> = plain.iter().map(|(f, v)| (*f, v.as_slice())).collect();
        let moved = seal_fields(&new_key, to, id, &fields)?;
        let write = ItemWrite::Move {
            id,
            from,
            to,
            expected_version: expected(expected_version)?,
            enc: moved,
            key_version: new_key.version(),
            updated_by: &user.email,
            at: self.bson_now(),
        };
        let outcome = self.store.write_with_slots(Some(to), Some(from), MAX_ITEMS_PER_FOLDER, write).await;
        self.changed(from).await;
        self.changed(to).await;
        let outcome = outcome?;
        match outcome {
            Slots::Written => {}
            Slots::Full => return Err(FoldersError::FolderFull),
            Slots::NoMatch => return Err(stale(&current, expected_version)),
        }
        let stored = self.load_item(to, id, &Generation::unknown()).await?;
        self.open_item(stored, true).await
    }
}
