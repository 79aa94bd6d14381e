//! Who the caller is to a folder: whether auth lets them share right now, and their access
//! to the folder. The gRPC edge runs these checks around every RPC body
//! (`grpc::FoldersApi::in_folder`), after reading, in one Redis round trip, the generations
//! that the answers kept in memory depend on: auth's sharing epoch and the folder's
//! generation (`ts_stores::cache`).

use std::time::Duration;

use ts_contract::ids::{FolderId, UserId};
use ts_contract::revocation::SHARING_EPOCH_KEY;
use ts_proto::internal::{CheckSharingAllowedRequest, SharingDenial};
use ts_proto::public::AccessLevel;
use ts_stores::cache::{Generation, Tagged};

use crate::{Folders, FoldersError};

/// The cache key of a folder's generation: replaced by every change to the folder, its
/// members or its items, so that no answer read before a change is served after it. The
/// `{f:<id>}` hash tag keeps a folder's keys in one Redis Cluster slot.
pub fn folder_generation_key(folder_id: &str) -> String {
    format!("ts:{{f:{folder_id}}}:gen")
}

/// The cache key of the generation of a user's set of folders: replaced when they join one
/// (create it, or accept an invitation). A kept listing also depends on each listed folder's
/// generation, which leaving, removal, re-levelling, renaming and deletion replace.
pub fn user_folders_generation_key(user_id: &str) -> String {
    format!("ts:{{u:{user_id}}}:folders")
}

/// Answers this process keeps, each under the generation it was read in.
pub(crate) struct Answers {
    /// Users auth said may share, under the sharing epoch.
    pub sharing: Tagged<UserId, ()>,
    /// Access levels by folder and user, under the folder's generation.
    pub members: Tagged<(FolderId, UserId), AccessLevel>,
}

impl Answers {
    /// Bounded: memberships and users a few MiB at most. Ages are backstops for a lost
    /// invalidation (Redis failing exactly when a change was made, then coming back with its
    /// data), never the way a change takes effect.
    pub fn new() -> Self {
        Answers {
            sharing: Tagged::new(50_000, Duration::from_secs(60)),
            members: Tagged::new(100_000, Duration::from_secs(30)),
        }
    }
}

/// The generations a call on one folder depends on, read together.
#[derive(Debug, Clone)]
pub(crate) struct Generations {
    /// Auth's sharing epoch.
    pub sharing: Generation,
    /// The folder's generation, for calls on one folder.
    pub folder: Generation,
}

/// A folder the caller was checked into, and their access there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderAccess {
    /// The folder.
    pub folder_id: FolderId,
    /// The caller's access (at least what the RPC needs).
    pub access: AccessLevel,
    /// The folder's generation when the call began: what it reads of the folder is served
    /// from memory only under it.
    pub generation: Generation,
}

impl Folders {
    /// The sharing epoch and, for a call on one folder, its generation: one round trip.
    pub(crate) async fn generations(&self, folder_id: Option<&FolderId>) -> Generations {
        match folder_id {
            Some(f) => {
                let mut read = self.cache.generations(&[SHARING_EPOCH_KEY, &folder_generation_key(f)]).await;
                let folder = read.pop().unwrap_or_else(Generation::unknown);
                let sharing = read.pop().unwrap_or_else(Generation::unknown);
                Generations { sharing, folder }
            }
            None => {
                Generations { sharing: self.cache.generation(SHARING_EPOCH_KEY).await, folder: Generation::unknown() }
            }
        }
    }

    /// Whether `user_id` may share right now: auth's "allowed" kept under the sharing epoch,
    /// else auth asked. Refusals are never kept (auth is asked again each time).
    pub(crate) async fn check_sharing(&self, user_id: &UserId, epoch: &Generation) -> Result<(), FoldersError> {
        if cfg!(feature = "insecure-bench") {
            return Ok(());
        }
        if self.answers.sharing.get(user_id, epoch).is_some() {
            return Ok(());
        }
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
            self.answers.sharing.insert(user_id.clone(), epoch, ());
            return Ok(());
        }
        Err(FoldersError::SharingRefused(SharingDenial::try_from(reply.denial).unwrap_or(SharingDenial::Unspecified)))
    }

    /// A user's access to a folder, kept under the folder's generation, else from MongoDB.
    pub(crate) async fn access(
        &self,
        folder_id: &FolderId,
        user_id: &UserId,
        generation: &Generation,
    ) -> Result<AccessLevel, FoldersError> {
        let key = (folder_id.clone(), user_id.clone());
        if let Some(level) = self.answers.members.get(&key, generation) {
            return Ok(level);
        }
        let found = self.store.member(folder_id, user_id).await?;
        let level = found.map_or(AccessLevel::Unspecified, |m| m.level());
        self.answers.members.insert(key, generation, level);
        Ok(level)
    }

    /// Requires at least `min` access. Non-members get NOT_FOUND: a folder they cannot see
    /// does not exist for them.
    pub(crate) async fn require(
        &self,
        user_id: &UserId,
        folder_id: FolderId,
        min: AccessLevel,
        generation: Generation,
    ) -> Result<FolderAccess, FoldersError> {
        if cfg!(feature = "insecure-bench") {
            return Ok(FolderAccess { folder_id, access: AccessLevel::Manage, generation });
        }
        let level = self.access(&folder_id, user_id, &generation).await?;
        if level == AccessLevel::Unspecified {
            return Err(FoldersError::FolderNotFound);
        }
        if level < min {
            return Err(FoldersError::Access { need: min, have: level });
        }
        Ok(FolderAccess { folder_id, access: level, generation })
    }

    /// After a change to a folder, its members or its items, before it is acknowledged: a
    /// new generation, so that no replica serves what it read before.
    pub(crate) async fn changed(&self, folder_id: &str) -> bool {
        self.cache.invalidate(&folder_generation_key(folder_id)).await
    }

    /// After `user_id` joined `folder_id` (created it, or accepted an invitation): the
    /// folder's generation and the user's set of folders both change.
    pub(crate) async fn joined(&self, folder_id: &str, user_id: &str) {
        self.changed(folder_id).await;
        self.cache.invalidate(&user_folders_generation_key(user_id)).await;
    }

    /// `changed` for a change that takes access away: an error unless every replica will
    /// see it on its next request.
    pub(crate) async fn taken_away(&self, folder_id: &str) -> Result<(), FoldersError> {
        if self.changed(folder_id).await { Ok(()) } else { Err(FoldersError::NotYetEverywhere) }
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
    fn no_two_folders_share_a_generation_and_each_has_its_own_slot() {
        let generation = folder_generation_key("f1");
        assert_eq!(generation, "ts:{f:f1}:gen");
        assert_eq!(tag(&generation), "f:f1");
        assert_ne!(folder_generation_key("f1"), folder_generation_key("f2"));
    }
}
