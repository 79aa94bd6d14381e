//! Page tokens: plain ones (`ts_contract::paging`) for user-scoped lists, and sealed ones
//! (`ts_folders::paging`) bound to a folder and an RPC.

use ts_contract::paging::{open_plain, plain_token};
use ts_folders::paging::{open_with, seal_with, token_envelope};

use crate::envelope::key;

/// The folder the fixed-key sealed tokens belong to.
pub const FOLDER: &str = "fuzz-folder";
/// The RPC the fixed-key sealed tokens belong to.
pub const SCOPE: &str = "list_items";
const SEPARATOR: char = '\u{1f}';

/// Arbitrary text as a plain token of `n` parts: never panics, and an accepted token is the
/// one encoding of its parts (so no two tokens name the same page).
pub fn plain_arbitrary(token: &str, n: usize) {
    if let Ok(parts) = open_plain(token, n) {
        assert_eq!(parts.len(), n);
        assert_eq!(plain_token(&parts), token, "an accepted plain token is canonical");
    }
}

/// Parts without the separator round-trip through a plain token, which is refused for any
/// other part count.
pub fn plain_round_trip(parts: &[String]) {
    if parts.is_empty() || parts.iter().any(|p| p.contains(SEPARATOR)) {
        return;
    }
    let token = plain_token(parts);
    assert_eq!(open_plain(&token, parts.len()).expect("a plain token opens"), parts);
    assert!(open_plain(&token, parts.len() + 1).is_err());
    assert!(open_plain(&token, parts.len() - 1).is_err());
}

fn open_sealed(token: &str, folder: &str, scope: &str, n: usize) -> Option<Vec<String>> {
    let env = token_envelope(token).ok()?;
    open_with(&env, &key(), folder, scope, n).ok()
}

/// Arbitrary text as a sealed token: never panics, and an accepted token has the asked-for
/// number of parts.
pub fn sealed_arbitrary(token: &str) {
    for n in 1..=3 {
        if let Some(parts) = open_sealed(token, FOLDER, SCOPE, n) {
            assert_eq!(parts.len(), n);
        }
    }
}

/// Parts without the separator round-trip through a sealed token; the token is refused in
/// another folder, for another RPC, with another part count, and after any one-character
/// change (`m` picks it), truncation or extension.
pub fn sealed_round_trip(parts: &[String], m: usize) {
    if parts.is_empty() || parts.iter().any(|p| p.contains(SEPARATOR)) {
        return;
    }
    let n = parts.len();
    let token = seal_with(&key(), FOLDER, SCOPE, parts).expect("sealing works");
    assert_eq!(open_sealed(&token, FOLDER, SCOPE, n).expect("a sealed token opens"), parts);
    assert!(open_sealed(&token, "other-folder", SCOPE, n).is_none(), "opened in another folder");
    assert!(open_sealed(&token, FOLDER, "list_folder_audit", n).is_none(), "opened for another RPC");
    assert!(open_sealed(&token, FOLDER, SCOPE, n + 1).is_none(), "opened with another part count");

    let changed = crate::replace_char(&token, m, crate::BASE64URL);
    assert!(open_sealed(&changed, FOLDER, SCOPE, n).is_none(), "{token} changed to {changed} and still opened");
    let cut = m % token.len();
    assert!(open_sealed(&token[..cut], FOLDER, SCOPE, n).is_none(), "cut to {cut} characters and still opened");
    let longer = format!("{token}{}", crate::BASE64URL[m % 64] as char);
    assert!(open_sealed(&longer, FOLDER, SCOPE, n).is_none(), "extended and still opened");
}

/// The fuzz target: `data` as plain and sealed tokens, and as parts to seal and mutate.
pub fn fuzz(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for n in 1..=3 {
        plain_arbitrary(&text, n);
    }
    sealed_arbitrary(&text);
    let (m, rest) = crate::choice(data);
    let parts: Vec<String> = String::from_utf8_lossy(rest).split(SEPARATOR).map(str::to_owned).collect();
    plain_round_trip(&parts);
    sealed_round_trip(&parts, m);
}
