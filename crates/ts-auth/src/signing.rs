//! auth's access-token signing keys, loaded from PEM files (PKCS#8 Ed25519).

use std::path::Path;

use jsonwebtoken::EncodingKey;
use ts_config::ConfigError;
use ts_contract::tokens::{Claims, PublicKey, header, key_id};

/// One signing key.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public: Vec<u8>,
}

/// The configured keys: the first signs, all are published for verification.
pub struct Signer {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kids", &self.keys.iter().map(|k| &k.kid).collect::<Vec<_>>()).finish()
    }
}

impl Signer {
    /// Loads every file; `accounts.token_signing_keys` must name at least one.
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Signer, ConfigError> {
        if paths.is_empty() {
            return Err(ConfigError::key("accounts.token_signing_keys", "at least one signing key is required"));
        }
        let keys = paths.iter().map(|p| load_one(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Signer { keys })
    }

    /// Signs `claims` with the first key.
    pub fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let key = &self.keys[0];
        jsonwebtoken::encode(&header(&key.kid), claims, &key.encoding)
    }

    /// Every public key, for the gateway.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        self.keys.iter().map(|k| PublicKey { kid: k.kid.clone(), bytes: k.public.clone() }).collect()
    }
}

fn load_one(path: &Path) -> Result<SigningKey, ConfigError> {
    let bad = |m: String| ConfigError::key("accounts.token_signing_keys", format!("{}: {m}", path.display()));
    ts_config::check_file("accounts.token_signing_keys", path)?;
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).map_err(|_| bad("not a PEM file".into()))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&block.contents)
        .map_err(|_| bad("not an Ed25519 PKCS#8 private key".into()))?;
    use ring::signature::KeyPair;
    let public = pair.public_key().as_ref().to_vec();
    let encoding = EncodingKey::from_ed_der(&block.contents);
    Ok(SigningKey { kid: key_id(&public), encoding, public })
}
