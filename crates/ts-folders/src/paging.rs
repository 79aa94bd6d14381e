//! Page sizes and page tokens. Folder-scoped tokens are sealed with the folder's data key,
//! bound to the folder and the RPC, so a token cannot be forged or replayed into another
//! folder; user-scoped tokens only ever narrow a query already limited to the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;
use ts_crypto::{Envelope, FieldRef};
use ts_proto::public::PageRequest;

use crate::keys::FolderKeys;

/// The page size to use: the RPC's default for 0, clamped to its maximum.
pub fn page_size(page: &Option<PageRequest>, default: u32, max: u32) -> usize {
    let asked = page.as_ref().map_or(0, |p| p.page_size);
    (if asked == 0 { default } else { asked.min(max) }) as usize
}

/// The token a request carries, if any.
pub fn token(page: &Option<PageRequest>) -> Option<&str> {
    page.as_ref().map(|p| p.page_token.as_str()).filter(|t| !t.is_empty())
}

fn bad() -> Status {
    Status::invalid_argument("page.page_token is not valid here; use the next_page_token of the previous page")
}

/// A token of plain parts (user-scoped lists).
pub fn plain_token(parts: &[String]) -> String {
    URL_SAFE_NO_PAD.encode(parts.join("\u{1f}"))
}

/// Parses a plain token into exactly `n` parts.
pub fn open_plain(token: &str, n: usize) -> Result<Vec<String>, Status> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    if parts.len() != n { Err(bad()) } else { Ok(parts) }
}

/// A token sealed for `scope` (the RPC) in `folder_id`.
pub async fn seal_token(keys: &FolderKeys, folder_id: &str, scope: &str, parts: &[String]) -> Result<String, Status> {
    let key = keys.newest(folder_id).await?;
    let env =
        Envelope::seal(&key, FieldRef { folder_id, item_id: "_page", field: scope }, parts.join("\u{1f}").as_bytes())
            .map_err(|e| Status::internal(format!("cannot seal page token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(env.to_bytes()))
}

/// Opens a sealed token into exactly `n` parts; any mismatch is INVALID_ARGUMENT.
pub async fn open_token(
    keys: &FolderKeys,
    folder_id: &str,
    scope: &str,
    token: &str,
    n: usize,
) -> Result<Vec<String>, Status> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let env = Envelope::from_bytes(&bytes).map_err(|_| bad())?;
    let key = keys.version(folder_id, env.key_version).await.map_err(|_| bad())?;
    let plain = env.open(&key, FieldRef { folder_id, item_id: "_page", field: scope }).map_err(|_| bad())?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    if parts.len() != n { Err(bad()) } else { Ok(parts) }
}
