//! Data-key rotation for a folder's items: re-encrypt every item still on an older key
//! version to the newest, then retire the older versions at keyvault.

use crate::sealed::{reseal, version_of};
use crate::{FOLDER_ITEM_ID, Folders, FoldersError};

/// A pass that keeps finding items on old versions (a writer racing it) gives up after this
/// many rounds rather than loop forever; the old versions then stay until the next pass.
const MAX_ROUNDS: usize = 5;

/// What a re-encryption pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReencryptReport {
    /// The newest version, which every item now uses.
    pub key_version: u32,
    /// Items rewritten.
    pub reencrypted: u64,
    /// Older versions retired at keyvault.
    pub retired: u32,
}

impl Folders {
    /// Adds a key version for `folder_id`, then runs a re-encryption pass.
    pub(crate) async fn rotate_folder_key(&self, folder_id: &str) -> Result<ReencryptReport, FoldersError> {
        self.keys.rotate(folder_id).await?;
        self.reencrypt_folder(folder_id).await
    }

    /// Rewrites every item of `folder_id` to the newest key version, then retires older
    /// versions. Each item is rewritten only if unchanged since it was read (same item
    /// version and key version), so a concurrent edit is never lost; safe to repeat. The
    /// rewritten items (and the folder's cached entries: a new generation) are forgotten
    /// before anything is retired, so that no cache keeps serving a copy sealed under a
    /// retired version.
    pub(crate) async fn reencrypt_folder(&self, folder_id: &str) -> Result<ReencryptReport, FoldersError> {
        let newest = self.keys.newest(folder_id).await?;
        // The folder's own sealed fields (its name) first.
        if let Some(folder) = self.store.sealed_folder(folder_id).await?
            && let Some(old_version) = version_of(folder.key_version).filter(|v| *v < newest.version())
        {
            let old = self.keys.version(folder_id, old_version).await?;
            let enc = folder.enc.as_ref().ok_or(FoldersError::Incomplete { what: "folder", part: "sealed fields" })?;
            let resealed = reseal(&old, &newest, folder_id, FOLDER_ITEM_ID, enc)?;
            self.store.reseal_folder(folder_id, old_version, resealed, newest.version()).await?;
        }
        let mut report = ReencryptReport { key_version: newest.version(), ..Default::default() };
        let pass = async {
            for _ in 0..MAX_ROUNDS {
                let stale = self.store.stale_items(folder_id, newest.version()).await?;
                if stale.is_empty() {
                    return Ok(());
                }
                for item in stale {
                    let missing = |part| FoldersError::Incomplete { what: "item", part };
                    let old_version = version_of(item.key_version).ok_or_else(|| missing("a key version"))?;
                    let old = self.keys.version(folder_id, old_version).await?;
                    let enc = item.enc.as_ref().ok_or_else(|| missing("sealed fields"))?;
                    let resealed = reseal(&old, &newest, folder_id, &item.id, enc)?;
                    if self.store.reseal_item(&item, old_version, resealed, newest.version()).await? {
                        report.reencrypted += 1;
                    }
                }
            }
            Err(FoldersError::KeptChanging)
        }
        .await;
        // Whatever was rewritten is forgotten, also when the pass stops half-way: a later pass
        // that finds nothing left to rewrite still retires the old version.
        self.changed(folder_id).await;
        pass?;
        let retired = self.keys.retire(folder_id, newest.version()).await?;
        report.retired = retired;
        tracing::info!(
            folder_id,
            key_version = newest.version(),
            reencrypted = report.reencrypted,
            retired,
            "re-encryption pass finished"
        );
        Ok(report)
    }
}
