//! Each user's own secrets for a shared connection (user name, password, key passphrase, SSH
//! credentials), kept on their own machine and never sent to the server: in the OS keychain
//! ([`KeyringStore`]) where there is one, else in a file encrypted under a passphrase
//! ([`EncryptedFileStore`], mode 0600). Entries are keyed by the shared item's id.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::Error;

/// One user's credentials for one shared connection. Every field is optional: a user may
/// keep only a password and take the shared user name. (Not wiped on drop, so that struct
/// update syntax works; call `zeroize()` when done with one.)
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalCredentials {
    /// The database user name (overrides the shared one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The database password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The passphrase of the TLS client key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_passphrase: Option<String>,
    /// The SSH tunnel user name (overrides the shared one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_username: Option<String>,
    /// The SSH tunnel password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_password: Option<String>,
    /// The SSH private key (PEM) or the path of its file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_private_key: Option<String>,
    /// The SSH private key's passphrase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_passphrase: Option<String>,
    /// Other secret connection options (`proxyPassword`, secret `authMechanismProperties`
    /// entries as `authMechanismProperties.NAME`), as the user gave them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_options: BTreeMap<String, String>,
    /// The fingerprint (`target_fingerprint`) of the connection these credentials were given
    /// for: while the shared connection points elsewhere they are not merged in. `None`
    /// until first use, which binds them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_to: Option<String>,
}

impl Zeroize for LocalCredentials {
    fn zeroize(&mut self) {
        for field in [
            &mut self.username,
            &mut self.password,
            &mut self.key_passphrase,
            &mut self.ssh_username,
            &mut self.ssh_password,
            &mut self.ssh_private_key,
            &mut self.ssh_key_passphrase,
        ] {
            field.zeroize();
        }
        for (mut k, mut v) in std::mem::take(&mut self.secret_options) {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl LocalCredentials {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &LocalCredentials::default()
    }

    /// The names of the fields that are set, never their values (for display).
    pub fn set_fields(&self) -> Vec<&'static str> {
        let fields = [
            ("username", &self.username),
            ("password", &self.password),
            ("key_passphrase", &self.key_passphrase),
            ("ssh_username", &self.ssh_username),
            ("ssh_password", &self.ssh_password),
            ("ssh_private_key", &self.ssh_private_key),
            ("ssh_key_passphrase", &self.ssh_key_passphrase),
        ];
        let mut set: Vec<&'static str> = fields.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| *n).collect();
        if !self.secret_options.is_empty() {
            set.push("secret_options");
        }
        set
    }

    /// `self` with the fields `other` sets replaced by `other`'s.
    pub fn merged(&self, other: &LocalCredentials) -> LocalCredentials {
        let pick = |a: &Option<String>, b: &Option<String>| b.clone().or_else(|| a.clone());
        LocalCredentials {
            username: pick(&self.username, &other.username),
            password: pick(&self.password, &other.password),
            key_passphrase: pick(&self.key_passphrase, &other.key_passphrase),
            ssh_username: pick(&self.ssh_username, &other.ssh_username),
            ssh_password: pick(&self.ssh_password, &other.ssh_password),
            ssh_private_key: pick(&self.ssh_private_key, &other.ssh_private_key),
            ssh_key_passphrase: pick(&self.ssh_key_passphrase, &other.ssh_key_passphrase),
            secret_options: self
                .secret_options
                .iter()
                .chain(&other.secret_options)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            bound_to: other.bound_to.clone(),
        }
    }
}

impl std::fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCredentials").field("set", &self.set_fields()).finish()
    }
}

/// Where a user's credentials live on their machine, keyed by the shared item's id.
pub trait CredentialStore: Send + Sync {
    /// The credentials kept for `item_id`, if any.
    fn get(&self, item_id: &str) -> Result<Option<LocalCredentials>, Error>;
    /// Keeps `credentials` for `item_id`, replacing what was kept.
    fn set(&self, item_id: &str, credentials: &LocalCredentials) -> Result<(), Error>;
    /// Forgets what is kept for `item_id`.
    fn forget(&self, item_id: &str) -> Result<(), Error>;
}

/// Credentials in memory only (tests).
#[derive(Debug, Default)]
pub struct MemoryCredentialStore(Mutex<BTreeMap<String, LocalCredentials>>);

impl CredentialStore for MemoryCredentialStore {
    fn get(&self, item_id: &str) -> Result<Option<LocalCredentials>, Error> {
        Ok(self.0.lock().map_err(|_| Error::Store("poisoned".into()))?.get(item_id).cloned())
    }
    fn set(&self, item_id: &str, credentials: &LocalCredentials) -> Result<(), Error> {
        self.0.lock().map_err(|_| Error::Store("poisoned".into()))?.insert(item_id.to_owned(), credentials.clone());
        Ok(())
    }
    fn forget(&self, item_id: &str) -> Result<(), Error> {
        self.0.lock().map_err(|_| Error::Store("poisoned".into()))?.remove(item_id);
        Ok(())
    }
}

/// The file format: the credentials map as JSON, sealed with ChaCha20-Poly1305 under a key
/// stretched from the passphrase by Argon2id with this file's own salt.
#[derive(Serialize, Deserialize)]
struct SealedFile {
    format: u32,
    kdf: String,
    /// Argon2id's memory (KiB), passes and lanes, as written: a file stays readable when the
    /// defaults grow.
    #[serde(default = "default_cost")]
    cost: [u32; 3],
    salt: String,
    nonce: String,
    ciphertext: String,
}

const FORMAT: u32 = 1;

/// Argon2id cost for new files: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommendation;
/// about 0.2 s per open on a 2-core CI machine: the file-store unit test's 11 derivations
/// take 2.4 s).
const COST: [u32; 3] = [65_536, 3, 1];

/// The cost of files written before it was recorded (the argon2 crate's defaults).
fn default_cost() -> [u32; 3] {
    [19_456, 2, 1]
}
const AAD: &[u8] = b"teamshare local credentials v1";

/// Credentials in one file encrypted under a passphrase (Argon2id, ChaCha20-Poly1305), mode
/// 0600, rewritten atomically on every change with a fresh salt and nonce. A wrong passphrase
/// or a tampered file is refused, never half-read.
pub struct EncryptedFileStore {
    path: PathBuf,
    passphrase: Zeroizing<String>,
    lock: Mutex<()>,
}

impl std::fmt::Debug for EncryptedFileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedFileStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl EncryptedFileStore {
    /// A store in `path` (created on the first `set`), opened with `passphrase`.
    pub fn new(path: impl Into<PathBuf>, passphrase: &str) -> Result<Self, Error> {
        if passphrase.is_empty() {
            return Err(Error::InvalidInput { field: "passphrase", message: "must not be empty".into() });
        }
        Ok(EncryptedFileStore {
            path: path.into(),
            passphrase: Zeroizing::new(passphrase.to_owned()),
            lock: Mutex::new(()),
        })
    }

    fn key(&self, salt: &[u8], cost: [u32; 3]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let mut key = Zeroizing::new([0u8; 32]);
        let [m, t, p] = cost;
        if m > 4 * 1024 * 1024 || t > 64 || p > 16 {
            return Err(Error::Store("the credential file asks for an unreasonable key-derivation cost".into()));
        }
        let params =
            argon2::Params::new(m, t, p, Some(32)).map_err(|e| Error::Store(format!("key derivation: {e}")))?;
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(self.passphrase.as_bytes(), salt, &mut key[..])
            .map_err(|e| Error::Store(format!("key derivation: {e}")))?;
        Ok(key)
    }

    fn read_all(&self) -> Result<BTreeMap<String, LocalCredentials>, Error> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::Store(format!("{}: {e}", self.path.display()))),
        };
        let unreadable = || Error::Store(format!("{}: wrong passphrase or damaged file", self.path.display()));
        let file: SealedFile = serde_json::from_slice(&bytes).map_err(|_| unreadable())?;
        if file.format != FORMAT || file.kdf != "argon2id" {
            return Err(Error::Store(format!("{}: unknown format {}", self.path.display(), file.format)));
        }
        let salt = B64.decode(&file.salt).map_err(|_| unreadable())?;
        let nonce: [u8; 12] = B64.decode(&file.nonce).ok().and_then(|n| n.try_into().ok()).ok_or_else(unreadable)?;
        let mut sealed = Zeroizing::new(B64.decode(&file.ciphertext).map_err(|_| unreadable())?);
        let key = aead_key(&*self.key(&salt, file.cost)?)?;
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let plain = key.open_in_place(nonce, ring::aead::Aad::from(AAD), &mut sealed).map_err(|_| unreadable())?;
        serde_json::from_slice(plain).map_err(|_| unreadable())
    }

    fn write_all(&self, all: &BTreeMap<String, LocalCredentials>) -> Result<(), Error> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut salt)
            .and_then(|_| getrandom::fill(&mut nonce))
            .map_err(|e| Error::Store(e.to_string()))?;
        let mut buf = Zeroizing::new(serde_json::to_vec(all).map_err(|e| Error::Store(e.to_string()))?);
        let key = aead_key(&*self.key(&salt, COST)?)?;
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::from(AAD),
            &mut *buf,
        )
        .map_err(|_| Error::Store("cannot seal the credentials".into()))?;
        let file = SealedFile {
            format: FORMAT,
            kdf: "argon2id".into(),
            cost: COST,
            salt: B64.encode(salt),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(&buf[..]),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::Store(e.to_string()))?;
        crate::session::write_private(&self.path, &bytes)
    }

    fn change(&self, f: impl FnOnce(&mut BTreeMap<String, LocalCredentials>)) -> Result<(), Error> {
        let _one_writer = self.lock.lock().map_err(|_| Error::Store("poisoned".into()))?;
        let mut all = self.read_all()?;
        f(&mut all);
        self.write_all(&all)
    }
}

fn aead_key(bytes: &[u8; 32]) -> Result<ring::aead::LessSafeKey, Error> {
    let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, bytes)
        .map_err(|_| Error::Store("bad key length".into()))?;
    Ok(ring::aead::LessSafeKey::new(key))
}

impl CredentialStore for EncryptedFileStore {
    fn get(&self, item_id: &str) -> Result<Option<LocalCredentials>, Error> {
        Ok(self.read_all()?.remove(item_id))
    }
    fn set(&self, item_id: &str, credentials: &LocalCredentials) -> Result<(), Error> {
        self.change(|all| {
            all.insert(item_id.to_owned(), credentials.clone());
        })
    }
    fn forget(&self, item_id: &str) -> Result<(), Error> {
        self.change(|all| {
            all.remove(item_id);
        })
    }
}

/// Credentials in the OS keychain (macOS Keychain, Windows Credential Manager, the Linux
/// kernel keyring), one entry per item under the service name `teamshare` (or another).
#[cfg(feature = "keyring")]
#[derive(Debug, Clone)]
pub struct KeyringStore {
    service: String,
}

#[cfg(feature = "keyring")]
impl KeyringStore {
    /// A store under `service`, if this machine has a working keychain (checked by writing,
    /// reading and deleting a probe entry).
    pub fn open(service: &str) -> Result<Self, Error> {
        let store = KeyringStore { service: service.to_owned() };
        let probe = store.entry("probe")?;
        probe.set_password("probe").map_err(|e| Error::Store(format!("no usable keychain: {e}")))?;
        let read = probe.get_password().map_err(|e| Error::Store(format!("no usable keychain: {e}")))?;
        let _ = probe.delete_credential();
        if read != "probe" {
            return Err(Error::Store("no usable keychain: a probe did not read back".into()));
        }
        Ok(store)
    }

    fn entry(&self, item_id: &str) -> Result<keyring::Entry, Error> {
        keyring::Entry::new(&self.service, &format!("connection:{item_id}")).map_err(|e| Error::Store(e.to_string()))
    }
}

#[cfg(feature = "keyring")]
impl CredentialStore for KeyringStore {
    fn get(&self, item_id: &str) -> Result<Option<LocalCredentials>, Error> {
        match self.entry(item_id)?.get_password() {
            Ok(json) => {
                let json = Zeroizing::new(json);
                serde_json::from_str(&json).map(Some).map_err(|e| Error::Store(e.to_string()))
            }
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(Error::Store(e.to_string())),
        }
    }
    fn set(&self, item_id: &str, credentials: &LocalCredentials) -> Result<(), Error> {
        let json = Zeroizing::new(serde_json::to_string(credentials).map_err(|e| Error::Store(e.to_string()))?);
        self.entry(item_id)?.set_password(&json).map_err(|e| Error::Store(e.to_string()))
    }
    fn forget(&self, item_id: &str) -> Result<(), Error> {
        match self.entry(item_id)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(Error::Store(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> LocalCredentials {
        LocalCredentials { username: Some("alice".into()), password: Some("s3cret-pass".into()), ..Default::default() }
    }

    #[test]
    fn the_file_holds_no_secret_in_the_clear_and_needs_the_passphrase() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        let store = EncryptedFileStore::new(&path, "correct horse").unwrap();
        store.set("item-1", &alice()).unwrap();
        store
            .set("item-2", &LocalCredentials { ssh_password: Some("tunnel-pw".into()), ..Default::default() })
            .unwrap();
        let raw = std::fs::read_to_string(&path).unwrap();
        for secret in ["s3cret-pass", "alice", "tunnel-pw", "item-1"] {
            assert!(!raw.contains(secret), "{secret} in the clear");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(store.get("item-1").unwrap(), Some(alice()));
        let wrong = EncryptedFileStore::new(&path, "wrong horse").unwrap();
        assert!(wrong.get("item-1").is_err());
        assert!(wrong.set("item-3", &alice()).is_err(), "a wrong passphrase must not overwrite the file");
        store.forget("item-1").unwrap();
        assert_eq!(store.get("item-1").unwrap(), None);
        assert!(store.get("item-2").unwrap().is_some());
        // A flipped byte in the ciphertext is refused.
        let mut file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut ct = B64.decode(file["ciphertext"].as_str().unwrap()).unwrap();
        ct[0] ^= 1;
        file["ciphertext"] = B64.encode(ct).into();
        std::fs::write(&path, file.to_string()).unwrap();
        assert!(store.get("item-2").is_err());
    }

    #[test]
    fn debug_never_shows_a_value() {
        assert!(!format!("{:?}", alice()).contains("s3cret"));
    }
}
