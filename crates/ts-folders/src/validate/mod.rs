//! Item validation at the boundary: sizes, kinds, enum values, and the rule that connections
//! never carry secrets: credentials are stripped and reported ([`connection`]), and key
//! material in any field is refused, naming the field ([`keys`]). Refusals never echo the
//! value. Refusals are `FoldersError::Invalid` (INVALID_ARGUMENT).

use prost::Message;
use ts_proto::public::item_content::Content;
use ts_proto::public::{ItemContent, ItemKind};

use self::connection::check_connection;
use crate::FoldersError;
use ts_contract::email::Email;

mod connection;
mod keys;
use ts_secret_names as names;

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest ordinary text field, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest body (query filter, pipeline, SQL, script, generic text), in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A checked item, ready to seal.
#[derive(Debug, Clone)]
pub struct CheckedItem {
    /// Kind, from the content.
    pub kind: ItemKind,
    /// Trimmed name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The sanitized content, protobuf-encoded.
    pub content: Vec<u8>,
    /// Fields removed because they carried secrets.
    pub removed: Vec<String>,
}

fn invalid(field: &str, why: &str) -> FoldersError {
    FoldersError::invalid(field, why)
}

/// Checks a display name (folder or item).
pub fn check_name(field: &str, raw: &str) -> Result<String, FoldersError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(field, &format!("is longer than {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    no_key_material(field, name)?;
    Ok(name.to_owned())
}

/// Checks an email address (normalised as `Email` does).
pub fn check_email(field: &str, raw: &str) -> Result<Email, FoldersError> {
    Email::parse(raw).map_err(|why| invalid(field, why))
}

fn no_key_material(field: &str, value: &str) -> Result<(), FoldersError> {
    match keys::find(value) {
        Some(found) => Err(invalid(field, &format!("contains {}, which is never shared", found.describe()))),
        None => Ok(()),
    }
}

fn text(field: &str, value: &str, max: usize) -> Result<(), FoldersError> {
    if value.len() > max {
        return Err(invalid(field, &format!("is longer than {max} bytes")));
    }
    no_key_material(field, value)
}

/// Checks and sanitizes an item for storage.
pub fn check_item(name: &str, description: &str, content: Option<ItemContent>) -> Result<CheckedItem, FoldersError> {
    let name = check_name("name", name)?;
    text("description", description, MAX_TEXT_BYTES)?;
    let mut content = content.ok_or_else(|| invalid("content", "is required"))?;
    let mut removed = Vec::new();
    let kind = match content.content.as_mut() {
        None => {
            return Err(invalid(
                "content",
                "must set one of connection, query, aggregation, sql_query, script or generic",
            ));
        }
        Some(Content::Connection(c)) => {
            check_connection(c, &mut removed)?;
            ItemKind::Connection
        }
        Some(Content::Query(q)) => {
            for (n, v) in [
                ("database", &q.database),
                ("collection", &q.collection),
                ("projection", &q.projection),
                ("sort", &q.sort),
            ] {
                text(&format!("content.query.{n}"), v, MAX_TEXT_BYTES)?;
            }
            text("content.query.filter", &q.filter, MAX_BODY_BYTES)?;
            ItemKind::Query
        }
        Some(Content::Aggregation(a)) => {
            text("content.aggregation.database", &a.database, MAX_TEXT_BYTES)?;
            text("content.aggregation.collection", &a.collection, MAX_TEXT_BYTES)?;
            text("content.aggregation.pipeline", &a.pipeline, MAX_BODY_BYTES)?;
            ItemKind::Aggregation
        }
        Some(Content::SqlQuery(s)) => {
            text("content.sql_query.database", &s.database, MAX_TEXT_BYTES)?;
            text("content.sql_query.sql", &s.sql, MAX_BODY_BYTES)?;
            ItemKind::SqlQuery
        }
        Some(Content::Script(s)) => {
            text("content.script.language", &s.language, 64)?;
            text("content.script.body", &s.body, MAX_BODY_BYTES)?;
            ItemKind::Script
        }
        Some(Content::Generic(g)) => {
            text("content.generic.text", &g.text, MAX_BODY_BYTES)?;
            ItemKind::Generic
        }
    };
    Ok(CheckedItem { kind, name, description: description.to_owned(), content: content.encode_to_vec(), removed })
}

#[cfg(test)]
mod tests;
