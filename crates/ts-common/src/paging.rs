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

/// One page of `coll` matching `filter` in `sort` order (one document more is read to know
/// whether more follow).
pub async fn find_page(
    coll: &mongodb::Collection<bson::Document>,
    filter: bson::Document,
    sort: bson::Document,
    size: usize,
) -> mongodb::error::Result<(Vec<bson::Document>, bool)> {
    use futures::TryStreamExt;
    let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
    let mut docs: Vec<bson::Document> = coll.find(filter).sort(sort).limit(limit).await?.try_collect().await?;
    let more = docs.len() > size;
    docs.truncate(size);
    Ok((docs, more))
}
