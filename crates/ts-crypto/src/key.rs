//! A plaintext data key: 256 bits, versioned, zeroized on drop, never printed.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// One version of a folder's data key, in plaintext. Lives only in keyvault and folders
/// memory; `Debug` prints the version only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    #[zeroize(skip)]
    version: u32,
    bytes: [u8; 32],
}

impl DataKey {
    /// Wraps key bytes of a version.
    pub fn new(version: u32, bytes: [u8; 32]) -> Self {
        DataKey { version, bytes }
    }

    /// From a slice, which must be exactly 32 bytes.
    pub fn from_slice(version: u32, bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(DataKey { version, bytes })
    }

    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The raw key bytes; for handing to the cipher or over mTLS to folders only.
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey").field("version", &self.version).field("bytes", &"<redacted>").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let k = DataKey::new(3, [0xAB; 32]);
        let s = format!("{k:?}");
        assert!(s.contains('3') && !s.to_lowercase().contains("ab, ") && !s.contains("171"));
        assert!(DataKey::from_slice(1, &[0; 31]).is_none());
    }
}
