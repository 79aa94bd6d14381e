//! Sealed item fields as stored: `enc` is a sub-document mapping each user-typed field name
//! to its envelope, and `key_version` names the data-key version all of them use. Only ids,
//! membership, timestamps, kind and the sharer's email stay in plaintext (DESIGN.md §3).

use bson::{Bson, Document};
use tonic::Status;
use ts_crypto::{DataKey, Envelope, FieldRef};
use zeroize::Zeroizing;

/// Seals each `(field, plaintext)` of an item into an `enc` sub-document.
pub fn seal_fields(
    key: &DataKey,
    folder_id: &str,
    item_id: &str,
    fields: &[(&str, &[u8])],
) -> Result<Document, Status> {
    let mut enc = Document::new();
    for (field, plaintext) in fields {
        let env = Envelope::seal(key, FieldRef { folder_id, item_id, field }, plaintext)
            .map_err(|e| Status::internal(format!("cannot seal {field}: {e}")))?;
        enc.insert(*field, env.to_bson());
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
) -> Result<Zeroizing<Vec<u8>>, Status> {
    let Some(value) = enc.get(field) else { return Ok(Zeroizing::new(Vec::new())) };
    let env = Envelope::from_bson(value).map_err(|e| corrupt(item_id, field, &e))?;
    env.open(key, FieldRef { folder_id, item_id, field }).map_err(|e| corrupt(item_id, field, &e))
}

fn corrupt(item_id: &str, field: &str, e: &ts_crypto::CryptoError) -> Status {
    tracing::error!(item_id, field, error = %e, "stored field does not open");
    Status::data_loss(format!("item {item_id}: field {field} cannot be decrypted"))
}

/// Re-seals every field of `enc` from `old` to `new`, for the same folder and item.
pub fn reseal(
    old: &DataKey,
    new: &DataKey,
    folder_id: &str,
    item_id: &str,
    enc: &Document,
) -> Result<Document, Status> {
    let mut out = Document::new();
    for (field, value) in enc {
        let env = Envelope::from_bson(value).map_err(|e| corrupt(item_id, field, &e))?;
        let plaintext =
            env.open(old, FieldRef { folder_id, item_id, field }).map_err(|e| corrupt(item_id, field, &e))?;
        let sealed = Envelope::seal(new, FieldRef { folder_id, item_id, field }, &plaintext)
            .map_err(|e| Status::internal(format!("cannot seal {field}: {e}")))?;
        out.insert(field.clone(), sealed.to_bson());
    }
    Ok(out)
}

/// The `key_version` of a stored item.
pub fn key_version(doc: &Document) -> Option<u32> {
    match doc.get("key_version")? {
        Bson::Int64(v) => u32::try_from(*v).ok(),
        Bson::Int32(v) => u32::try_from(*v).ok(),
        _ => None,
    }
}
