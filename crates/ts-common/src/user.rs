//! The end user's identity as it travels from the gateway to internal services, in request
//! metadata. Services trust it only because the allowlist admitted the mTLS peer.

use tonic::metadata::{MetadataMap, MetadataValue};

const USER_ID: &str = "x-teamshare-user-id";
const EMAIL: &str = "x-teamshare-user-email";
const LICENSE: &str = "x-teamshare-license-id";
const SESSION: &str = "x-teamshare-session-id";

/// The signed-in user on whose behalf a request runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    /// User id.
    pub user_id: String,
    /// Verified, normalised email.
    pub email: String,
    /// License id, or empty.
    pub license_id: String,
    /// Session id from the access token.
    pub session_id: String,
}

impl UserContext {
    /// Writes the identity into outgoing metadata, replacing anything a client sent.
    pub fn attach(&self, md: &mut MetadataMap) {
        for (k, v) in
            [(USER_ID, &self.user_id), (EMAIL, &self.email), (LICENSE, &self.license_id), (SESSION, &self.session_id)]
        {
            match MetadataValue::try_from(v.as_str()) {
                Ok(v) => {
                    md.insert(k, v);
                }
                Err(_) => {
                    md.remove(k);
                }
            }
        }
    }

    /// Reads the identity from incoming metadata; UNAUTHENTICATED when it is missing.
    pub fn from_metadata(md: &MetadataMap) -> Result<UserContext, tonic::Status> {
        let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let user = UserContext {
            user_id: get(USER_ID),
            email: get(EMAIL),
            license_id: get(LICENSE),
            session_id: get(SESSION),
        };
        if user.user_id.is_empty() || user.email.is_empty() {
            return Err(tonic::Status::unauthenticated("no signed-in user on this request"));
        }
        Ok(user)
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
        let u = UserContext {
            user_id: "u1".into(),
            email: "a@b.c".into(),
            license_id: String::new(),
            session_id: "s".into(),
        };
        let mut md = MetadataMap::new();
        u.attach(&mut md);
        assert_eq!(UserContext::from_metadata(&md).unwrap(), u);
        UserContext::strip(&mut md);
        assert_eq!(UserContext::from_metadata(&md).unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
