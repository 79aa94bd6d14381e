//! Field-level encryption for teamshare (DESIGN.md §3).
//!
//! Every user-typed field is sealed with XChaCha20-Poly1305 under its folder's data key and a
//! fresh random 192-bit nonce. The associated data binds the ciphertext to the folder, the
//! item, the field name and the key version, so a ciphertext copied to any other place fails
//! to open. The stored form is a versioned envelope, `{format, key_version, nonce,
//! ciphertext}`, packed into one BSON binary value.
#![forbid(unsafe_code)]

mod cache;
mod envelope;
mod key;

pub use cache::{CacheLimits, KeyCache};
pub use envelope::{Envelope, FORMAT_V1, FieldRef};
pub use key::DataKey;

/// Why a field could not be sealed or opened. Never carries key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The stored bytes are not an envelope this code understands.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope names a format this code does not know.
    #[error("unsupported envelope format {0}")]
    UnsupportedFormat(u8),
    /// The envelope was sealed with another key version than the key offered.
    #[error("envelope is sealed with key version {envelope}, not {key}")]
    WrongKeyVersion {
        /// Version named by the envelope.
        envelope: u32,
        /// Version of the key offered.
        key: u32,
    },
    /// Authentication failed: wrong key, or the ciphertext was altered or moved to another
    /// folder, item or field.
    #[error("ciphertext failed authentication (altered, moved, or wrong key)")]
    Authentication,
    /// The random source failed.
    #[error("random source unavailable")]
    Random,
}
