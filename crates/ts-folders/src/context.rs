//! Who the caller is to a folder: whether auth lets them share right now, and their access
//! to the folder (cached in Redis, invalidated on every change). The gRPC edge runs these
//! checks around every RPC body (`grpc::FoldersApi::in_folder`).

use std::time::Duration;

use ts_contract::ids::{FolderId, UserId};
use ts_proto::internal::{CheckSharingAllowedRequest, SharingDenial};
use ts_proto::public::AccessLevel;

use crate::{Folders, FoldersError};

/// Membership answers stay in Redis this long at most.
const MEMBER_TTL: Duration = Duration::from_secs(30);

/// The cache key of a folder's generation: replaced by every change to its members or items,
/// so that no answer read before a change is cached after it (see `ts_stores::cache`). The
/// `{f:<id>}` hash tag keeps a folder's keys in one Redis Cluster slot.
pub fn folder_generation_key(folder_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:gen")
}

/// The cache key of a membership.
pub fn member_key(folder_id: &str, user_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:member:{user_id}")
}

/// The cache key of an item's stored (encrypted) document.
pub fn item_key(folder_id: &str, item_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:item:{item_id}")
}

/// A folder the caller was checked into, and their access there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderAccess {
    /// The folder.
    pub folder_id: FolderId,
    /// The caller's access (at least what the RPC needs).
    pub access: AccessLevel,
}

impl Folders {
    /// Asks auth whether `user_id` may share right now.
    pub(crate) async fn check_sharing(&self, user_id: &UserId) -> Result<(), FoldersError> {
        let reply = self
            .identity
            .clone()
            .check_sharing_allowed(CheckSharingAllowedRequest { user_id: user_id.to_string(), email: String::new() })
            .await
            .map_err(|s| {
                tracing::warn!(code = ?s.code(), "cannot check sharing permission with auth");
                FoldersError::SharingUnknown
            })?
            .into_inner();
        if reply.allowed {
            return Ok(());
        }
        Err(FoldersError::SharingRefused(SharingDenial::try_from(reply.denial).unwrap_or(SharingDenial::Unspecified)))
    }

    /// A user's access to a folder, from the cache or MongoDB.
    pub(crate) async fn access(&self, folder_id: &FolderId, user_id: &UserId) -> Result<AccessLevel, FoldersError> {
        let key = member_key(folder_id, user_id);
        if let Some(v) = self.cache.get(&key).await
            && let Some(level) = std::str::from_utf8(&v)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .and_then(|n| AccessLevel::try_from(n).ok())
        {
            return Ok(level);
        }
        let generation = self.cache.generation(&folder_generation_key(folder_id)).await;
        let found = self.store.member(folder_id, user_id).await?;
        let level = found.map_or(AccessLevel::Unspecified, |m| m.level());
        self.cache.set_if_generation(&generation, &key, (level as i32).to_string().into_bytes(), MEMBER_TTL).await;
        Ok(level)
    }

    /// Requires at least `min` access. Non-members get NOT_FOUND: a folder they cannot see
    /// does not exist for them.
    pub(crate) async fn require(
        &self,
        user_id: &UserId,
        folder_id: FolderId,
        min: AccessLevel,
    ) -> Result<FolderAccess, FoldersError> {
        let level = self.access(&folder_id, user_id).await?;
        if level == AccessLevel::Unspecified {
            return Err(FoldersError::FolderNotFound);
        }
        if level < min {
            return Err(FoldersError::Access { need: min, have: level });
        }
        Ok(FolderAccess { folder_id, access: level })
    }

    /// Forgets cached memberships after a change (and starts a new folder generation).
    pub(crate) async fn forget_members(&self, folder_id: &FolderId, user_ids: &[&UserId]) {
        let keys: Vec<String> = user_ids.iter().map(|u| member_key(folder_id, u)).collect();
        self.cache.invalidate(&folder_generation_key(folder_id), &keys).await;
    }

    /// Forgets cached items after a change (and starts a new folder generation).
    pub(crate) async fn forget_items(&self, folder_id: &str, item_ids: &[&str]) {
        let keys: Vec<String> = item_ids.iter().map(|i| item_key(folder_id, i)).collect();
        self.cache.invalidate(&folder_generation_key(folder_id), &keys).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash tag between the braces, which picks the Redis Cluster slot.
    fn tag(key: &str) -> &str {
        let open = key.find('{').map_or(0, |i| i + 1);
        let close = key[open..].find('}').map_or(key.len(), |i| open + i);
        &key[open..close]
    }

    #[test]
    fn a_folders_cache_keys_share_one_slot_and_no_two_folders_share_a_generation() {
        let (generation, member, item) = (folder_generation_key("f1"), member_key("f1", "u1"), item_key("f1", "i1"));
        assert_eq!(generation, "ts:{f:f1}:gen");
        assert_eq!((tag(&generation), tag(&member), tag(&item)), ("f:f1", "f:f1", "f:f1"), "one Lua call, one slot");
        assert_ne!(folder_generation_key("f1"), folder_generation_key("f2"));
        assert_ne!(member_key("f1", "u1"), member_key("f1", "u2"));
        assert_ne!(item_key("f1", "i1"), item_key("f2", "i1"));
    }
}
