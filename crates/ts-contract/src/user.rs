//! The end user's identity as it travels from the gateway to internal services, in request
//! metadata. Services trust it only because the allowlist admitted the mTLS peer.

use tonic::metadata::{MetadataMap, MetadataValue};

use crate::ids::{LicenseId, SessionId, UserId, license_text};

const USER_ID: &str = "x-teamshare-user-id";
const EMAIL: &str = "x-teamshare-user-email";
const LICENSE: &str = "x-teamshare-license-id";
const SESSION: &str = "x-teamshare-session-id";

/// The client's network address as the gateway saw it, sent to auth for per-address limits
/// on sign-in attempts. The gateway replaces anything a client sent under this name.
pub const CLIENT_ADDR_HEADER: &str = "x-teamshare-client-addr";

/// The signed-in user on whose behalf a request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    /// User id.
    pub user_id: UserId,
    /// Verified, normalised email.
    pub email: String,
    /// The user's license, if they have one.
    pub license_id: Option<LicenseId>,
    /// Session id from the access token.
    pub session_id: SessionId,
}

impl UserContext {
    /// Writes the identity into outgoing metadata, replacing anything a client sent.
    pub fn attach(&self, md: &mut MetadataMap) {
        for (k, v) in [
            (USER_ID, self.user_id.as_str()),
            (EMAIL, self.email.as_str()),
            (LICENSE, license_text(&self.license_id)),
            (SESSION, self.session_id.as_str()),
        ] {
            match MetadataValue::try_from(v) {
                Ok(v) => {
                    md.insert(k, v);
                }
                Err(_) => {
                    md.remove(k);
                }
            }
        }
    }

    /// Reads the identity from incoming metadata; UNAUTHENTICATED when it is missing or
    /// malformed.
    pub fn from_metadata(md: &MetadataMap) -> Result<UserContext, tonic::Status> {
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let none = || tonic::Status::unauthenticated("no signed-in user on this request");
        let email = get(EMAIL);
        if email.is_empty() {
            return Err(none());
        }
        Ok(UserContext {
            user_id: UserId::parse(USER_ID, get(USER_ID)).map_err(|_| none())?,
            email: email.to_owned(),
            license_id: LicenseId::optional(LICENSE, get(LICENSE)).map_err(|_| none())?,
            session_id: SessionId::parse(SESSION, get(SESSION)).map_err(|_| none())?,
        })
    }

    /// Removes any identity headers, so that a client cannot smuggle one through the gateway.
    pub fn strip(md: &mut MetadataMap) {
        for k in [USER_ID, EMAIL, LICENSE, SESSION] {
            md.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_round_trips_and_strip_removes_it() {
        let mut u = UserContext {
            user_id: UserId::new(),
            email: "a@b.c".into(),
            license_id: None,
            session_id: SessionId::new(),
        };
        let mut md = MetadataMap::new();
        u.attach(&mut md);
        assert_eq!(UserContext::from_metadata(&md).unwrap(), u);
        u.license_id = Some(LicenseId::parse("license_id", "acme").unwrap());
        u.attach(&mut md);
        assert_eq!(UserContext::from_metadata(&md).unwrap(), u);
        md.insert(USER_ID, MetadataValue::from_static("not-a-uuid"));
        assert_eq!(UserContext::from_metadata(&md).unwrap_err().code(), tonic::Code::Unauthenticated);
        UserContext::strip(&mut md);
        assert_eq!(UserContext::from_metadata(&md).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
