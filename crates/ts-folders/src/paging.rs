//! Page sizes and page tokens. Folder-scoped tokens are sealed with the folder's data key,
//! bound to the folder and the RPC, so a token cannot be forged or replayed into another
//! folder; user-scoped tokens only ever narrow a query already limited to the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;
use ts_crypto::{DataKey, Envelope, FieldRef};

use crate::keys::FolderKeys;

pub use ts_contract::paging::{open_plain, page_size, plain_token, token};

fn bad() -> Status {
    Status::invalid_argument("page.page_token is not valid here; use the next_page_token of the previous page")
}

/// A token sealed for `scope` (the RPC) in `folder_id`.
pub async fn seal_token(keys: &FolderKeys, folder_id: &str, scope: &str, parts: &[String]) -> Result<String, Status> {
    seal_with(&keys.newest(folder_id).await?, folder_id, scope, parts)
}

/// Opens a sealed token into exactly `n` parts; any mismatch is INVALID_ARGUMENT.
pub async fn open_token(
    keys: &FolderKeys,
    folder_id: &str,
    scope: &str,
    token: &str,
    n: usize,
) -> Result<Vec<String>, Status> {
    let env = token_envelope(token)?;
    let key = keys.version(folder_id, env.key_version).await.map_err(|_| bad())?;
    open_with(&env, &key, folder_id, scope, n)
}

/// Seals `parts` under `key`: `seal_token` once the key is known (public for the property
/// tests and fuzz targets, which have no keyvault).
pub fn seal_with(key: &DataKey, folder_id: &str, scope: &str, parts: &[String]) -> Result<String, Status> {
    let env = Envelope::seal(key, page_field(folder_id, scope), parts.join("\u{1f}").as_bytes())
        .map_err(|e| Status::internal(format!("cannot seal page token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(env.to_bytes()))
}

/// The envelope a token carries, read before its key version is looked up.
pub fn token_envelope(token: &str) -> Result<Envelope, Status> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    Envelope::from_bytes(&bytes).map_err(|_| bad())
}

/// Opens a token's envelope with the key it names into exactly `n` parts: `open_token` once
/// the key is known.
pub fn open_with(env: &Envelope, key: &DataKey, folder_id: &str, scope: &str, n: usize) -> Result<Vec<String>, Status> {
    let plain = env.open(key, page_field(folder_id, scope)).map_err(|_| bad())?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| bad())?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    if parts.len() != n { Err(bad()) } else { Ok(parts) }
}

/// Where a page token is bound: the folder, the pseudo item `_page`, and the RPC.
fn page_field<'a>(folder_id: &'a str, scope: &'a str) -> FieldRef<'a> {
    FieldRef { folder_id, item_id: "_page", field: scope }
}
