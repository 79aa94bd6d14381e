//! Identifier formats, checked at every boundary before an id reaches a store, a cache key
//! or the audit trail. Folder, item, user, session and invitation ids are server-made UUIDs
//! in their canonical form (lowercase, hyphenated); license ids are chosen by the operator.
//! Anything else, including a multi-megabyte string, is refused with INVALID_ARGUMENT
//! naming the field, and the value itself is never echoed.

use tonic::Status;

/// Length of a canonical hyphenated UUID.
pub const UUID_LEN: usize = 36;
/// Longest license id.
pub const MAX_LICENSE_ID: usize = 128;
/// Longest page token a client may send back.
pub const MAX_PAGE_TOKEN: usize = 1024;

/// Whether `raw` is a UUID in canonical lowercase hyphenated form.
pub fn is_uuid(raw: &str) -> bool {
    raw.len() == UUID_LEN
        && raw.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A required server-made id (folder, item, user, session, invitation), checked exactly as
/// the typed ids check it, where only the check is wanted (the gateway's request checks).
pub fn require_uuid<'a>(field: &str, raw: &'a str) -> Result<&'a str, Status> {
    match uuid_error(field, raw) {
        Some(e) => Err(e.into()),
        None => Ok(raw),
    }
}

/// Whether `raw` is a well-formed license id: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn is_license_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_LICENSE_ID
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A required license id, checked exactly as `LicenseId::parse` checks it.
pub fn require_license_id<'a>(field: &str, raw: &'a str) -> Result<&'a str, Status> {
    LicenseId::parse(field, raw).map(|_| raw).map_err(Status::from)
}

/// A page token, bounded before anyone tries to open it.
pub fn check_page_token(field: &str, raw: &str) -> Result<(), Status> {
    if raw.len() > MAX_PAGE_TOKEN {
        return Err(Status::invalid_argument(format!(
            "{field} is too long; use the next_page_token of the previous page"
        )));
    }
    Ok(())
}

/// An id that is not in its exact format, naming the field (the value is never echoed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct IdError {
    /// The request field (or stored field) that held it.
    pub field: String,
    problem: &'static str,
}

impl From<IdError> for Status {
    fn from(e: IdError) -> Status {
        crate::status::invalid_field(&e.field, e.to_string())
    }
}

/// A client-chosen request id (AIP-155) that makes a create safe to retry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// `raw` from the request field `field`: `None` when empty, INVALID_ARGUMENT naming the
    /// field when it is not a canonical UUID.
    pub fn parse_optional(field: &str, raw: &str) -> Result<Option<Self>, IdError> {
        if raw.is_empty() {
            return Ok(None);
        }
        match uuid_error(field, raw) {
            Some(e) => Err(e),
            None => Ok(Some(RequestId(raw.to_owned()))),
        }
    }

    /// A UUID (version 8) from SHA-256 of what `kind` of thing `owner` creates with this
    /// request id: two owners, or two kinds, never derive the same id.
    pub fn derive(&self, kind: &str, owner: &str) -> String {
        let input = format!("teamshare request id\0{kind}\0{owner}\0{}", self.0);
        let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        uuid::Uuid::new_v8(bytes).to_string()
    }

    /// The request id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

fn uuid_error(field: &str, raw: &str) -> Option<IdError> {
    let problem = if raw.is_empty() {
        "is required"
    } else if !is_uuid(raw) {
        "is not a valid id (a lowercase hyphenated UUID)"
    } else {
        return None;
    };
    Some(IdError { field: field.to_owned(), problem })
}

macro_rules! uuid_ids {
    ($($(#[$doc:meta])* $name:ident = $make:ident;)*) => {$(
        $(#[$doc])*
        ///
        /// A server-made UUID in canonical lowercase hyphenated form; parsed once where it
        /// enters (a request field, a header, a stored document) and never malformed after.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A new random id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                $name(uuid::Uuid::$make().to_string())
            }

            /// `raw` from the request field `field`: INVALID_ARGUMENT naming the field when it
            /// is empty or not a canonical UUID.
            pub fn parse(field: &str, raw: &str) -> Result<Self, IdError> {
                match uuid_error(field, raw) {
                    Some(e) => Err(e),
                    None => Ok($name(raw.to_owned())),
                }
            }

            /// The id a create by `owner` makes: with a client-chosen `request` id, the same
            /// for every retry of that create, so that the store's unique id stops a second
            /// one; without, a new random id.
            pub fn for_create(owner: &str, request: Option<&RequestId>) -> Self {
                match request {
                    Some(r) => $name(r.derive(stringify!($name), owner)),
                    None => Self::new(),
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, IdError> {
                match uuid_error(stringify!($name), &raw) {
                    Some(e) => Err(e),
                    None => Ok($name(raw)),
                }
            }
        }

        impl From<$name> for bson::Bson {
            fn from(id: $name) -> bson::Bson {
                bson::Bson::String(id.0)
            }
        }
    )*};
}

uuid_ids! {
    /// A shared folder.
    FolderId = new_v4;
    /// An item in a folder. New ids are version 7 (time-ordered, and ordered by creation
    /// within a process), so that items made in the same millisecond, or on a stopped test
    /// clock, still list in the order they were made (ListItems breaks ties by id).
    ItemId = now_v7;
    /// A user account.
    UserId = new_v4;
    /// A signed-in session (one refresh-token family).
    SessionId = new_v4;
    /// An invitation to a folder; time-ordered like items, for the same reason (lists).
    InvitationId = now_v7;
}

/// A license, named by the operator: 1–128 characters of `[A-Za-z0-9._-]`. A user without a
/// license has `Option<LicenseId>::None`, never an empty string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LicenseId(String);

impl LicenseId {
    /// A required license id from `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, IdError> {
        if !is_license_id(raw) {
            return Err(IdError { field: field.to_owned(), problem: "must be 1-128 characters of [A-Za-z0-9._-]" });
        }
        Ok(LicenseId(raw.to_owned()))
    }

    /// An optional license id from `field`: empty is `None`.
    pub fn optional(field: &str, raw: &str) -> Result<Option<Self>, IdError> {
        if raw.is_empty() { Ok(None) } else { Self::parse(field, raw).map(Some) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An optional license id as the empty-or-id text of wire formats.
pub fn license_text(license: &Option<LicenseId>) -> &str {
    license.as_ref().map_or("", LicenseId::as_str)
}

impl std::fmt::Display for LicenseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for LicenseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LicenseId({})", self.0)
    }
}

impl AsRef<str> for LicenseId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for LicenseId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<LicenseId> for String {
    fn from(id: LicenseId) -> String {
        id.0
    }
}

impl TryFrom<String> for LicenseId {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, IdError> {
        LicenseId::parse("license_id", &raw)
    }
}

impl From<LicenseId> for bson::Bson {
    fn from(id: LicenseId) -> bson::Bson {
        bson::Bson::String(id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_uuids_pass() {
        assert!(is_uuid("0b8c5f7e-1a2b-4c3d-9e8f-001122334455"));
        assert!(is_uuid(&uuid::Uuid::new_v4().to_string()));
        for bad in [
            "",
            "0B8C5F7E-1A2B-4C3D-9E8F-001122334455",
            "0b8c5f7e1a2b4c3d9e8f001122334455",
            "{0b8c5f7e-1a2b-4c3d-9e8f-001122334455}",
            "0b8c5f7e-1a2b-4c3d-9e8f-00112233445",
            "0b8c5f7e-1a2b-4c3d-9e8f-0011223344556",
            "0b8c5f7e-1a2b-4c3d-9e8f_001122334455",
            "0b8c5f7e-1a2b-4c3d-9e8f-00112233445g",
            "../../../etc/passwd/xxxxxxxxxxxxxxxxx",
            "0b8c5f7e-1a2b-4c3d-9e8f-00112233445\u{e9}",
        ] {
            assert!(!is_uuid(bad), "{bad:?} passed");
        }
        let huge = "a".repeat(4 << 20);
        let e = require_uuid("folder_id", &huge).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("folder_id "));
        assert!(e.message().len() < 100, "the value is not echoed");
        assert_eq!(require_uuid("item_id", "").unwrap_err().message(), "item_id is required");
    }

    #[test]
    fn required_ids_come_back_unchanged_or_refused_naming_the_field() {
        assert_eq!(require_license_id("license_id", "acme-1").unwrap(), "acme-1");
        let e = require_license_id("license_id", "acme corp").unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("license_id "), "{}", e.message());
        assert!(require_license_id("license_id", "").is_err());
        let id = "0b8c5f7e-1a2b-4c3d-9e8f-001122334455";
        assert_eq!(require_uuid("folder_id", id).unwrap(), id);
    }

    #[test]
    fn license_ids_and_tokens_are_bounded() {
        assert!(is_license_id("acme-2026_eu.1"));
        assert!(!is_license_id(""));
        assert!(!is_license_id(&"a".repeat(129)));
        assert!(is_license_id(&"a".repeat(128)));
        assert!(!is_license_id("acme corp"));
        assert!(!is_license_id("acme\u{0}"));
        assert!(check_page_token("page.page_token", &"x".repeat(MAX_PAGE_TOKEN)).is_ok());
        assert!(check_page_token("page.page_token", &"x".repeat(MAX_PAGE_TOKEN + 1)).is_err());
    }

    #[test]
    fn typed_ids_parse_once_and_refuse_naming_the_field() {
        let raw = "0b8c5f7e-1a2b-4c3d-9e8f-001122334455";
        let id = FolderId::parse("folder_id", raw).unwrap();
        assert_eq!(id.as_str(), raw);
        assert_eq!(id.to_string(), raw);
        let e = ItemId::parse("item.id", &"Z".repeat(1 << 20)).unwrap_err();
        assert_eq!(e.to_string(), "item.id is not a valid id (a lowercase hyphenated UUID)");
        assert_eq!(Status::from(e).code(), tonic::Code::InvalidArgument);
        assert_eq!(UserId::parse("user_id", "").unwrap_err().to_string(), "user_id is required");
        assert!(is_uuid(InvitationId::new().as_str()));
        let made: Vec<ItemId> = (0..1000).map(|_| ItemId::new()).collect();
        assert!(made.iter().all(|id| is_uuid(id.as_str())));
        assert!(made.windows(2).all(|w| w[0] < w[1]), "item ids sort in the order they were made");
        assert_ne!(SessionId::new(), SessionId::new());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{raw}\""));
        assert_eq!(serde_json::from_str::<FolderId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<FolderId>("\"../etc\"").is_err(), "stored ids are checked too");
        assert_eq!(LicenseId::optional("license_id", "").unwrap(), None);
        assert_eq!(license_text(&LicenseId::optional("license_id", "acme").unwrap()), "acme");
        assert!(LicenseId::optional("license_id", "a b").unwrap_err().to_string().starts_with("license_id "));
    }
}
