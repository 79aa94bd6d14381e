//! The signed-in session: where its refresh token is kept between runs ([`SessionStore`]), and
//! the access token that every call carries, refreshed before it expires by one caller at a
//! time while the others wait for its result.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// What is kept between runs: the refresh token (rotated on every refresh) and who it is for.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct StoredSession {
    /// The gateway it was opened with: a session is never sent anywhere else.
    #[serde(default)]
    pub endpoint: String,
    /// The user's email.
    pub email: String,
    /// The user's id.
    pub user_id: String,
    /// The current refresh token: a secret.
    pub refresh_token: String,
}

impl std::fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSession")
            .field("endpoint", &self.endpoint)
            .field("email", &self.email)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Where the session's refresh token lives between runs. `save` is called after every
/// rotation: a store that loses it signs the user out.
pub trait SessionStore: Send + Sync {
    /// The kept session, if any.
    fn load(&self) -> Result<Option<StoredSession>, Error>;
    /// Keeps `session`, replacing what was kept.
    fn save(&self, session: &StoredSession) -> Result<(), Error>;
    /// Forgets the session (sign-out).
    fn clear(&self) -> Result<(), Error>;
}

/// A session kept in memory only (tests, short-lived tools).
#[derive(Debug, Default)]
pub struct MemorySessionStore(Mutex<Option<StoredSession>>);

impl SessionStore for MemorySessionStore {
    fn load(&self) -> Result<Option<StoredSession>, Error> {
        Ok(self.0.lock().map_err(|_| Error::Store("poisoned".into()))?.clone())
    }
    fn save(&self, session: &StoredSession) -> Result<(), Error> {
        *self.0.lock().map_err(|_| Error::Store("poisoned".into()))? = Some(session.clone());
        Ok(())
    }
    fn clear(&self) -> Result<(), Error> {
        *self.0.lock().map_err(|_| Error::Store("poisoned".into()))? = None;
        Ok(())
    }
}

/// A session kept in a JSON file readable by its owner only (mode 0600), replaced atomically.
#[derive(Debug, Clone)]
pub struct FileSessionStore {
    path: PathBuf,
}

impl FileSessionStore {
    /// A store at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSessionStore { path: path.into() }
    }
}

impl SessionStore for FileSessionStore {
    fn load(&self) -> Result<Option<StoredSession>, Error> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Store(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Store(format!("{}: {e}", self.path.display()))),
        }
    }
    fn save(&self, session: &StoredSession) -> Result<(), Error> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(session).map_err(|e| Error::Store(e.to_string()))?);
        write_private(&self.path, &bytes)
    }
    fn clear(&self) -> Result<(), Error> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Store(e.to_string())),
            _ => Ok(()),
        }
    }
}

/// Writes `bytes` to `path` through a temporary file created with mode 0600 in the same
/// directory, then renamed over it: never a moment when the file is readable by others or
/// half-written.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    let fail = |e: std::io::Error| Error::Store(format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(fail)?;
    }
    // A new file of a random name (O_EXCL, mode 0600): nothing planted at a guessable path
    // can receive the secret.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).and_then(|_| file.as_file().sync_all()).map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error)).map(drop)
}

/// The live tokens of a signed-in client.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Tokens {
    pub access_token: String,
    #[zeroize(skip)]
    pub access_expires: SystemTime,
    pub refresh_token: String,
    pub email: String,
    pub user_id: String,
}

impl Tokens {
    /// Whether the access token must be refreshed before a call: it expires within `margin`.
    pub fn expiring(&self, margin: Duration) -> bool {
        self.access_expires <= SystemTime::now() + margin
    }

    pub fn stored(&self, endpoint: &str) -> StoredSession {
        StoredSession {
            endpoint: endpoint.to_owned(),
            email: self.email.clone(),
            user_id: self.user_id.clone(),
            refresh_token: self.refresh_token.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_session_is_private_and_survives_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileSessionStore::new(dir.path().join("nested/session.json"));
        assert!(store.load().unwrap().is_none());
        let s = StoredSession {
            endpoint: "https://x".into(),
            email: "a@example.com".into(),
            user_id: "u".into(),
            refresh_token: "secret".into(),
        };
        store.save(&s).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("nested/session.json")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(store.load().unwrap().unwrap().refresh_token, "secret");
        assert!(!format!("{s:?}").contains("secret"));
        store.clear().unwrap();
        assert!(store.load().unwrap().is_none());
    }
}
