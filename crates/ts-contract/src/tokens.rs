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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::EncodingKey;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;

    struct Key {
        kid: String,
        encoding: EncodingKey,
        public: PublicKey,
    }

    fn key() -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("pair");
        let bytes = pair.public_key().as_ref().to_vec();
        let kid = key_id(&bytes);
        Key { kid: kid.clone(), encoding: EncodingKey::from_ed_der(pkcs8.as_ref()), public: PublicKey { kid, bytes } }
    }

    const NOW: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn claims() -> Claims {
        Claims {
            sub: "user-1".into(),
            email: "ann@example.com".into(),
            lic: String::new(),
            sid: "session-1".into(),
            iat: NOW,
            exp: NOW + 900,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        }
    }

    fn sign(k: &Key, c: &Claims) -> String {
        jsonwebtoken::encode(&header(&k.kid), c, &k.encoding).expect("sign")
    }

    #[test]
    fn a_good_token_verifies_until_the_second_it_expires() {
        let k = key();
        let v = Verifier::new(std::slice::from_ref(&k.public));
        let token = sign(&k, &claims());
        assert_eq!(v.verify(&token, at(NOW)), Ok(claims()));
        assert_eq!(v.verify(&token, at(NOW + 899)).map(|c| c.sid), Ok("session-1".into()));
        assert_eq!(v.verify(&token, at(NOW + 900)), Err(TokenError::Expired));
        assert_eq!(v.verify(&token, at(NOW + 10_000)), Err(TokenError::Expired));
    }

    #[test]
    fn issuer_audience_signature_and_algorithm_are_checked() {
        let k = key();
        let v = Verifier::new(std::slice::from_ref(&k.public));
        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(v.verify(&sign(&k, &c), at(NOW)), Err(TokenError::Invalid));
        let mut c = claims();
        c.aud = "another-service".into();
        assert_eq!(v.verify(&sign(&k, &c), at(NOW)), Err(TokenError::Invalid));

        // Another key under this key's id.
        let other = key();
        let forged = jsonwebtoken::encode(&header(&k.kid), &claims(), &other.encoding).expect("sign");
        assert_eq!(v.verify(&forged, at(NOW)), Err(TokenError::Invalid));

        // An HMAC token under a known key id is refused before any key is used.
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(k.kid.clone());
        let hmac = jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&k.public.bytes)).expect("sign");
        assert_eq!(v.verify(&hmac, at(NOW)), Err(TokenError::Invalid));
    }

    #[test]
    fn unknown_and_missing_key_ids_and_garbage() {
        let (k, other) = (key(), key());
        let v = Verifier::new(std::slice::from_ref(&k.public));
        assert!(v.knows(&k.kid) && !v.knows(&other.kid));
        assert_eq!(v.verify(&sign(&other, &claims()), at(NOW)), Err(TokenError::UnknownKey));
        let no_kid = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims(), &k.encoding).expect("sign");
        assert_eq!(v.verify(&no_kid, at(NOW)), Err(TokenError::Malformed));
        assert_eq!(Verifier::kid_of(&no_kid), Err(TokenError::Malformed));
        assert_eq!(Verifier::kid_of(&sign(&k, &claims())), Ok(k.kid.clone()));
        for garbage in ["", "a.b.c", "not a token", "..."] {
            assert_eq!(v.verify(garbage, at(NOW)), Err(TokenError::Malformed), "{garbage:?}");
            assert_eq!(Verifier::kid_of(garbage), Err(TokenError::Malformed));
        }
        // A verifier trusts every key it was given, so keys can rotate.
        let both = Verifier::new(&[k.public.clone(), other.public.clone()]);
        assert!(both.verify(&sign(&other, &claims()), at(NOW)).is_ok());
        assert!(both.verify(&sign(&k, &claims()), at(NOW)).is_ok());
        assert!(!Verifier::default().knows(&k.kid));
    }

    #[test]
    fn key_ids_are_short_stable_digests() {
        let k = key();
        assert_eq!(key_id(&k.public.bytes), k.kid);
        assert_eq!(k.kid.len(), 16, "12 bytes, base64url");
        assert_ne!(key_id(&k.public.bytes), key_id(&key().public.bytes));
        let debug = format!("{:?}", Verifier::new(std::slice::from_ref(&k.public)));
        assert!(debug.contains(&k.kid), "{debug}");
    }
}
