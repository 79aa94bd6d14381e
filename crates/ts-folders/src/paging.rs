//! Page sizes and page tokens. Folder-scoped tokens are sealed with the folder's data key,
//! bound to the folder and the RPC, so a token cannot be forged or replayed into another
//! folder; user-scoped tokens only ever narrow a query already limited to the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;
use ts_crypto::{Envelope, FieldRef};

use crate::keys::FolderKeys;

pub use ts_common::paging::{open_plain, page_size, plain_token, token};

fn bad() -> Status {
    Status::invalid_argument("page.page_token is not valid here; use the next_page_token of the previous page")
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
