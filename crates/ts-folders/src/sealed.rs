//! Sealed item fields as stored: `enc` is a sub-document mapping each user-typed field name
//! to its envelope, and `key_version` names the data-key version all of them use. Only ids,
//! membership, timestamps, kind and the sharer's email stay in plaintext (DESIGN.md §3).

use bson::{Bson, Document};
use ts_crypto::{DataKey, Envelope, FieldRef};
use zeroize::Zeroizing;

use crate::FoldersError;

/// Seals each `(field, plaintext)` of an item into an `enc` sub-document.
pub fn seal_fields(
    key: &DataKey,
    folder_id: &str,
    item_id: &str,
    fields: &[(&str, &[u8])],
) -> Result<Document, FoldersError> {
    let mut enc = Document::new();
    for (field, plaintext) in fields {
        enc.insert(*field, seal(key, FieldRef { folder_id, item_id, field }, plaintext)?);
    }
    Ok(enc)
}

/// Opens one field of an `enc` sub-document; a missing field reads as empty.
pub fn open_field(
    key: &DataKey,
    folder_id: &str,
    item_id: &str,
    enc: &Document,
    field: &str,
) -> Result<Zeroizing<Vec<u8>>, FoldersError> {
    let Some(value) = enc.get(field) else { return Ok(Zeroizing::new(Vec::new())) };
    open(key, FieldRef { folder_id, item_id, field }, value)
}

/// Re-seals every field of `enc` from `old` to `new`, for the same folder and item.
pub fn reseal(
    old: &DataKey,
    new: &DataKey,
    folder_id: &str,
    item_id: &str,
    enc: &Document,
) -> Result<Document, FoldersError> {
    let mut out = Document::new();
    for (field, value) in enc {
        let at = FieldRef { folder_id, item_id, field };
        let plaintext = open(old, at, value)?;
        out.insert(field.clone(), seal(new, at, &plaintext)?);
    }
    Ok(out)
}

fn seal(key: &DataKey, at: FieldRef<'_>, plaintext: &[u8]) -> Result<Bson, FoldersError> {
    let env = Envelope::seal(key, at, plaintext)
        .map_err(|source| FoldersError::Seal { what: at.field.to_owned(), source })?;
    Ok(env.to_bson())
}

fn open(key: &DataKey, at: FieldRef<'_>, value: &Bson) -> Result<Zeroizing<Vec<u8>>, FoldersError> {
    let corrupt = |e: ts_crypto::CryptoError| {
        tracing::error!(item_id = at.item_id, field = at.field, error = %e, "stored field does not open");
        FoldersError::Undecryptable { item_id: at.item_id.to_owned(), field: at.field.to_owned() }
    };
    Envelope::from_bson(value).map_err(corrupt)?.open(key, at).map_err(corrupt)
}

/// The `key_version` of a stored item.
pub fn key_version(doc: &Document) -> Option<u32> {
    match doc.get("key_version")? {
        Bson::Int64(v) => u32::try_from(*v).ok(),
        Bson::Int32(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}

/// A typed document's `key_version` as a key version.
pub(crate) fn version_of(stored: Option<i64>) -> Option<u32> {
    stored.and_then(|v| u32::try_from(v).ok())
}
