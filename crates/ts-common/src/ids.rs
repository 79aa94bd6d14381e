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

fn invalid(field: &str, what: &str) -> Status {
    Status::invalid_argument(format!("{field} {what}"))
}

/// Whether `raw` is a UUID in canonical lowercase hyphenated form.
pub fn is_uuid(raw: &str) -> bool {
    raw.len() == UUID_LEN
        && raw.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// A required server-made id (folder, item, user, session, invitation).
pub fn require_uuid<'a>(field: &str, raw: &'a str) -> Result<&'a str, Status> {
    if raw.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if !is_uuid(raw) {
        return Err(invalid(field, "is not a valid id (a lowercase hyphenated UUID)"));
    }
    Ok(raw)
}

/// Whether `raw` is a well-formed license id: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn is_license_id(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_LICENSE_ID
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A required license id.
pub fn require_license_id<'a>(field: &str, raw: &'a str) -> Result<&'a str, Status> {
    if !is_license_id(raw) {
        return Err(invalid(field, "must be 1-128 characters of [A-Za-z0-9._-]"));
    }
    Ok(raw)
}

/// A page token, bounded before anyone tries to open it.
pub fn check_page_token(field: &str, raw: &str) -> Result<(), Status> {
    if raw.len() > MAX_PAGE_TOKEN {
        return Err(invalid(field, "is too long; use the next_page_token of the previous page"));
    }
    Ok(())
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
}
