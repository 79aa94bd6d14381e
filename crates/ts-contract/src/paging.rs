//! Page sizes and plain page tokens, for lists whose query is already limited to what the
//! caller may see (a forged token can only move within it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tonic::Status;
use ts_proto::public::PageRequest;

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
