//! Single sign-on: OIDC ID tokens verified against a configured issuer's keys (JWKS), its
//! issuer name and our audience, expiry, and `email_verified`.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use ts_common::clock::unix_secs;
use ts_common::config::{ConfigError, SsoIssuerConfig};

use crate::email::Email;
use crate::state::{Auth, AuthError, AuthResult};

/// A configured OIDC issuer with its keys.
#[derive(Debug, Clone)]
pub struct SsoIssuer {
    issuer: String,
    audience: String,
    keys: JwkSet,
}

/// Seconds of clock skew tolerated on `exp`.
const LEEWAY_SECS: u64 = 30;

impl SsoIssuer {
    /// Loads each issuer's JWKS file.
    pub fn load(configs: &[SsoIssuerConfig]) -> Result<Vec<SsoIssuer>, ConfigError> {
        configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let key = format!("accounts.sso[{i}].jwks_file");
                ts_common::config::check_file(&key, &c.jwks_file)?;
                let text = std::fs::read(&c.jwks_file).map_err(|e| ConfigError::key(&key, e.to_string()))?;
                let keys: JwkSet =
                    serde_json::from_slice(&text).map_err(|e| ConfigError::key(&key, format!("not a JWKS: {e}")))?;
                Ok(SsoIssuer { issuer: c.issuer.clone(), audience: c.audience.clone(), keys })
            })
            .collect()
    }
}

#[derive(Deserialize)]
struct IdClaims {
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    exp: u64,
}

impl Auth {
    /// Verifies an ID token and returns its verified email.
    pub async fn verify_id_token(&self, token: &str) -> AuthResult<Email> {
        let refused = |why: &str| AuthError::Unauthenticated(format!("single sign-on token refused: {why}"));
        let header = jsonwebtoken::decode_header(token.trim()).map_err(|_| refused("malformed"))?;
        let now = unix_secs(self.now());
        for issuer in &self.sso {
            let jwk = match &header.kid {
                Some(kid) => issuer.keys.find(kid),
                None if issuer.keys.keys.len() == 1 => issuer.keys.keys.first(),
                None => None,
            };
            let Some(jwk) = jwk else { continue };
            let key = DecodingKey::from_jwk(jwk).map_err(|_| refused("issuer key unusable"))?;
            let mut validation = Validation::new(header.alg);
            validation.set_issuer(&[&issuer.issuer]);
            validation.set_audience(&[&issuer.audience]);
            validation.validate_exp = false; // against the injected clock below
            validation.required_spec_claims = ["exp", "iss", "aud"].iter().map(|s| s.to_string()).collect();
            let claims = match jsonwebtoken::decode::<IdClaims>(token.trim(), &key, &validation) {
                Ok(data) => data.claims,
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    let why = match e.kind() {
                        ErrorKind::InvalidIssuer => "wrong issuer",
                        ErrorKind::InvalidAudience => "wrong audience",
                        ErrorKind::InvalidSignature => "bad signature",
                        ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                        _ => "invalid token",
                    };
                    return Err(refused(why));
                }
            };
            if now >= claims.exp + LEEWAY_SECS {
                return Err(refused("expired"));
            }
            let verified = matches!(claims.email_verified, Some(serde_json::Value::Bool(true)))
                || matches!(&claims.email_verified, Some(serde_json::Value::String(s)) if s == "true");
            if !verified {
                return Err(refused("the issuer has not verified this email"));
            }
            let email = claims.email.ok_or_else(|| refused("no email claim"))?;
            return Email::parse(&email).map_err(|_| refused("email claim is not a valid address"));
        }
        Err(refused("unknown issuer key"))
    }
}
