//! Access tokens: compact JWS signed with Ed25519 (`EdDSA`) by auth, verified by the
//! gateway with auth's public keys, several at once (by key id) so keys can rotate.

use std::collections::HashMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::unix_secs;

/// Token issuer.
pub const ISSUER: &str = "teamshare-auth";
/// Token audience.
pub const AUDIENCE: &str = "teamshare";

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Verified email.
    pub email: String,
    /// License id, or empty.
    #[serde(default)]
    pub lic: String,
    /// Session id.
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// Why a token was refused. Deliberately coarse: the caller learns nothing useful.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed token.
    #[error("malformed access token")]
    Malformed,
    /// Signed by a key this verifier does not know.
    #[error("access token signed by an unknown key")]
    UnknownKey,
    /// Bad signature, issuer or audience.
    #[error("access token is invalid")]
    Invalid,
    /// Past its expiry.
    #[error("access token expired")]
    Expired,
}

/// A public verification key, as auth publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Key id (the JWS `kid`).
    pub kid: String,
    /// Raw 32-byte Ed25519 public key.
    pub bytes: Vec<u8>,
}

/// The key id of a raw Ed25519 public key: the first 12 bytes of its SHA-256, base64url.
pub fn key_id(public: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public);
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..12])
}

/// Verifies access tokens against a set of public keys.
#[derive(Clone, Default)]
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl Verifier {
    /// A verifier trusting `keys`.
    pub fn new(keys: &[PublicKey]) -> Self {
        let keys = keys
            .iter()
            .map(|k| (k.kid.clone(), DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&k.bytes)).ok()))
            .filter_map(|(k, d)| Some((k, d?)))
            .collect();
        Verifier { keys }
    }

    /// Whether a key id is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key id a token names, without verifying anything.
    pub fn kid_of(token: &str) -> Result<String, TokenError> {
        jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?.kid.ok_or(TokenError::Malformed)
    }

    /// Checks signature, issuer, audience and expiry (against `now`, not the system clock).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Invalid);
        }
        let key = self.keys.get(header.kid.as_deref().ok_or(TokenError::Malformed)?).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.validate_exp = false; // checked below against the injected clock
        validation.required_spec_claims = ["exp", "iss", "aud", "sub"].iter().map(|s| s.to_string()).collect();
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| TokenError::Invalid)?.claims;
        if unix_secs(now) >= claims.exp {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

/// Builds the JWS header for a key id.
pub fn header(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.to_owned());
    h
}
