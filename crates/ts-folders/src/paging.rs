//! Page sizes, page tokens and the cursors they carry. Folder-scoped tokens are sealed with
//! the folder's data key, bound to the folder and the RPC, so a token cannot be forged or
//! replayed into another folder; user-scoped tokens are plain, because they only ever narrow
//! a query already limited to the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bson::DateTime;
use ts_contract::paging::{open_plain, plain_token};
use ts_crypto::{DataKey, Envelope, FieldRef};
use ts_proto::public::PageRequest;

use crate::FoldersError;
use crate::keys::FolderKeys;

/// What a request asked for: a page size (0 for the RPC's default) and where to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageAsk {
    asked: u32,
    token: Option<String>,
}

impl PageAsk {
    /// The request's `page` field.
    pub fn from_request(page: &Option<PageRequest>) -> Self {
        PageAsk {
            asked: page.as_ref().map_or(0, |p| p.page_size),
            token: ts_contract::paging::token(page).map(str::to_owned),
        }
    }

    /// The page size to use: `default` for 0, clamped to `max`.
    pub fn size(&self, default: u32, max: u32) -> usize {
        (if self.asked == 0 { default } else { self.asked.min(max) }) as usize
    }

    /// The token to resume from, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// One page of results and the token of the next (empty on the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next_token: String,
}

/// A plain token's exactly `N` parts.
fn plain<const N: usize>(token: &str) -> Result<[String; N], FoldersError> {
    open_plain(token, N).ok().and_then(|parts| parts.try_into().ok()).ok_or(FoldersError::PageToken)
}

fn millis(raw: &str) -> Result<DateTime, FoldersError> {
    raw.parse().map(DateTime::from_millis).map_err(|_| FoldersError::PagePosition)
}

/// ListFolders resumes after this folder id (plain: the query is the caller's memberships).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderCursor {
    /// The last folder id listed.
    pub folder_id: String,
}

impl FolderCursor {
    /// The token.
    pub fn encode(&self) -> String {
        plain_token(std::slice::from_ref(&self.folder_id))
    }

    /// Reads a token.
    pub fn decode(token: &str) -> Result<Self, FoldersError> {
        let [folder_id] = plain(token)?;
        Ok(FolderCursor { folder_id })
    }
}

/// ListMembers resumes after this (email, user id) (plain: the caller is a member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberCursor {
    /// The last email listed.
    pub email: String,
    /// The last user id listed.
    pub user_id: String,
}

impl MemberCursor {
    /// The token.
    pub fn encode(&self) -> String {
        plain_token(&[self.email.clone(), self.user_id.clone()])
    }

    /// Reads a token.
    pub fn decode(token: &str) -> Result<Self, FoldersError> {
        let [email, user_id] = plain(token)?;
        Ok(MemberCursor { email, user_id })
    }
}

/// Audit listings resume before this (time, event id) (plain: the query is already limited
/// to what the caller may read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCursor {
    /// The last time listed.
    pub time: DateTime,
    /// The last event id listed.
    pub id: String,
}

impl EventCursor {
    /// The token.
    pub fn encode(&self) -> String {
        plain_token(&[self.time.timestamp_millis().to_string(), self.id.clone()])
    }

    /// Reads a token.
    pub fn decode(token: &str) -> Result<Self, FoldersError> {
        let [time, id] = plain(token)?;
        Ok(EventCursor { time: millis(&time)?, id })
    }
}

/// ListItems resumes after this (creation time, item id); sealed for the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemCursor {
    /// The last creation time listed.
    pub created_at: DateTime,
    /// The last item id listed.
    pub id: String,
}

impl ItemCursor {
    /// The RPC a token is bound to.
    const SCOPE: &'static str = "list_items";

    /// The token, sealed under `key` (one of the folder's versions).
    pub fn seal_under(&self, key: &DataKey, folder_id: &str) -> Result<String, FoldersError> {
        let parts = [self.created_at.timestamp_millis().to_string(), self.id.clone()];
        seal_with(key, folder_id, Self::SCOPE, &parts)
    }

    /// Opens a token sealed for `folder_id`.
    pub async fn open(keys: &FolderKeys, folder_id: &str, token: &str) -> Result<Self, FoldersError> {
        let parts = open_token(keys, folder_id, Self::SCOPE, token, 2).await?;
        let [time, id]: [String; 2] = parts.try_into().map_err(|_| FoldersError::PageToken)?; // two, as opened
        Ok(ItemCursor { created_at: millis(&time)?, id })
    }
}

/// Opens a sealed token into exactly `n` parts; any mismatch is `FoldersError::PageToken`.
pub async fn open_token(
    keys: &FolderKeys,
    folder_id: &str,
    scope: &str,
    token: &str,
    n: usize,
) -> Result<Vec<String>, FoldersError> {
    let env = token_envelope(token)?;
    let key = keys.version(folder_id, env.key_version).await.map_err(|_| FoldersError::PageToken)?;
    open_with(&env, &key, folder_id, scope, n)
}

/// Seals `parts` for `scope` (the RPC) in `folder_id` under `key`, one of the folder's
/// versions (public for the property tests and fuzz targets, which have no keyvault).
pub fn seal_with(key: &DataKey, folder_id: &str, scope: &str, parts: &[String]) -> Result<String, FoldersError> {
    let env = Envelope::seal(key, page_field(folder_id, scope), parts.join("\u{1f}").as_bytes())
        .map_err(|source| FoldersError::Seal { what: "page token".to_owned(), source })?;
    Ok(URL_SAFE_NO_PAD.encode(env.to_bytes()))
}

/// The envelope a token carries, read before its key version is looked up.
pub fn token_envelope(token: &str) -> Result<Envelope, FoldersError> {
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| FoldersError::PageToken)?;
    Envelope::from_bytes(&bytes).map_err(|_| FoldersError::PageToken)
}

/// Opens a token's envelope with the key it names into exactly `n` parts: `open_token` once
/// the key is known.
pub fn open_with(
    env: &Envelope,
    key: &DataKey,
    folder_id: &str,
    scope: &str,
    n: usize,
) -> Result<Vec<String>, FoldersError> {
    let plain = env.open(key, page_field(folder_id, scope)).map_err(|_| FoldersError::PageToken)?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| FoldersError::PageToken)?;
    let parts: Vec<String> = text.split('\u{1f}').map(str::to_owned).collect();
    if parts.len() != n { Err(FoldersError::PageToken) } else { Ok(parts) }
}

/// Where a page token is bound: the folder, the pseudo item `_page`, and the RPC.
fn page_field<'a>(folder_id: &'a str, scope: &'a str) -> FieldRef<'a> {
    FieldRef { folder_id, item_id: "_page", field: scope }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cursors_round_trip_and_refuse_other_shapes() {
        let folder = FolderCursor { folder_id: "f1".into() };
        assert_eq!(FolderCursor::decode(&folder.encode()).unwrap(), folder);
        let member = MemberCursor { email: "a@b.c".into(), user_id: "u1".into() };
        assert_eq!(MemberCursor::decode(&member.encode()).unwrap(), member);
        let event = EventCursor { time: DateTime::from_millis(1_700_000_000_123), id: "e1".into() };
        assert_eq!(EventCursor::decode(&event.encode()).unwrap(), event);
        assert!(matches!(FolderCursor::decode(&member.encode()), Err(FoldersError::PageToken)));
        assert!(matches!(MemberCursor::decode("%%%"), Err(FoldersError::PageToken)));
        let bad_time = plain_token(&["soon".to_owned(), "e1".to_owned()]);
        assert!(matches!(EventCursor::decode(&bad_time), Err(FoldersError::PagePosition)));
    }

    #[test]
    fn page_sizes_default_and_clamp() {
        let ask = |page_size| PageAsk::from_request(&Some(PageRequest { page_size, page_token: String::new() }));
        assert_eq!(ask(0).size(50, 200), 50);
        assert_eq!(ask(7).size(50, 200), 7);
        assert_eq!(ask(1000).size(50, 200), 200);
        assert_eq!(ask(0).token(), None);
        assert_eq!(PageAsk::from_request(&None).size(100, 500), 100);
    }
}
