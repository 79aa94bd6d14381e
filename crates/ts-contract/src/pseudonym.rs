//! The pseudonym that replaces an erased person's email (PRIVACY.md): `erased-` and 20
//! lowercase hex digits of a keyed hash of the email. Auth makes it; folders and invitations
//! accept nothing else where an email was.

/// How a pseudonym starts.
pub const PREFIX: &str = "erased-";
/// How many hex digits follow (80 bits).
pub const DIGITS: usize = 20;

/// The pseudonym whose digits are the first bytes of `mac` (a keyed hash of the email).
pub fn from_mac(mac: &[u8]) -> String {
    let hex: String = mac.iter().take(DIGITS / 2).map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

/// Why `raw` is not a pseudonym, as the end of a message that starts with the field's name.
pub fn check(raw: &str) -> Result<(), &'static str> {
    if raw.is_empty() {
        return Err("is required");
    }
    let well_formed = raw.strip_prefix(PREFIX).is_some_and(|digits| {
        digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if well_formed { Ok(()) } else { Err("must be \"erased-\" and 20 lowercase hex digits") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_have_one_exact_form() {
        let made = from_mac(&[0xab; 32]);
        assert_eq!(made, "erased-abababababababababab");
        assert_eq!(check(&made), Ok(()));
        assert_eq!(check(""), Err("is required"));
        let long = "x".repeat(65);
        for bad in [
            "erased-",
            "erased-0123456789abcdef012",
            "erased-0123456789abcdef01234",
            "erased-0123456789ABCDEF0123",
            "Erased-0123456789abcdef0123",
            "bob@example.com",
            "erased x",
            "erased-0123456789abcdef012\u{e9}",
            long.as_str(),
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
