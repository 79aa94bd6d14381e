//! The audit trail's contract: the collection folders keeps it in, the event other services
//! send (auth, keyvault, invitations, the gateway), and the bound on every string. Callers put
//! no codes, tokens or secrets in events.

/// The most bytes any string of an audit event keeps.
pub const MAX_FIELD_BYTES: usize = 256;

/// The MongoDB collection (in folders' database) that holds the audit trail.
pub const COLLECTION: &str = "audit_events";

/// The actor name of operator actions (the operator has no account).
pub const OPERATOR: &str = "operator";

/// `s` cut to at most `MAX_FIELD_BYTES`, on a character boundary.
pub fn bounded(s: &str) -> String {
    if s.len() <= MAX_FIELD_BYTES {
        return s.to_owned();
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// One event, as the recording service knows it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Who acted: their email (the one tried, for a failed sign-in), or `OPERATOR`.
    pub actor_email: String,
    /// Their user id, when they have an account.
    pub actor_user_id: String,
    /// The license concerned, if any.
    pub license_id: String,
    /// The folder concerned, if any.
    pub folder_id: String,
    /// Action name, such as `auth.refresh_session`.
    pub action: String,
    /// The outcome.
    pub code: tonic::Code,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            actor_email: String::new(),
            actor_user_id: String::new(),
            license_id: String::new(),
            folder_id: String::new(),
            action: String::new(),
            code: tonic::Code::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_are_bounded_on_character_boundaries() {
        assert_eq!(super::bounded("short"), "short");
        let long = "é".repeat(200);
        let cut = super::bounded(&long);
        assert!(cut.len() <= super::MAX_FIELD_BYTES && long.starts_with(&cut));
    }
}
