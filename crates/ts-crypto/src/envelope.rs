//! The sealed-field envelope and its binary layout.
//!
//! Layout, format 1: `format (1) | key_version (4, big-endian) | nonce (24) | ciphertext+tag`.
//! The associated data is never stored: it is rebuilt from where the envelope is read, which
//! is what makes a moved ciphertext fail.

use bson::Binary;
use bson::spec::BinarySubtype;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::{CryptoError, DataKey};

/// The only envelope format so far.
pub const FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// Domain separation for the associated data, so these ciphertexts mean nothing elsewhere.
const AAD_DOMAIN: &[u8] = b"teamshare.field";
/// BSON binary subtype for envelopes (user-defined range).
pub const BSON_SUBTYPE: u8 = 0x80;

/// Where a field lives: what its ciphertext is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldRef<'a> {
    /// The folder holding the item.
    pub folder_id: &'a str,
    /// The item.
    pub item_id: &'a str,
    /// The field's name, such as `content.query.filter`.
    pub field: &'a str,
}

impl FieldRef<'_> {
    fn aad(&self, format: u8, key_version: u32) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(AAD_DOMAIN.len() + 32 + self.folder_id.len() + self.item_id.len() + self.field.len());
        // Length-prefixed parts: ("ab","c") and ("a","bc") must not collide.
        for part in [AAD_DOMAIN, self.folder_id.as_bytes(), self.item_id.as_bytes(), self.field.as_bytes()] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad.push(format);
        aad.extend_from_slice(&key_version.to_be_bytes());
        aad
    }
}

/// A sealed field.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope format.
    pub format: u8,
    /// Data-key version it was sealed with.
    pub key_version: u32,
    /// Random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext with the Poly1305 tag appended.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("format", &self.format)
            .field("key_version", &self.key_version)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl Envelope {
    /// Seals `plaintext` for `field` under `key`, with a fresh random nonce.
    pub fn seal(key: &DataKey, field: FieldRef<'_>, plaintext: &[u8]) -> Result<Envelope, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let aad = field.aad(FORMAT_V1, key.version());
        let cipher = XChaCha20Poly1305::new(&Key::from(*key.expose_bytes()));
        let ciphertext = cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad })
            .map_err(|_| CryptoError::Malformed("plaintext too long"))?;
        Ok(Envelope { format: FORMAT_V1, key_version: key.version(), nonce, ciphertext })
    }

    /// Opens the envelope as the field at `field`. Fails, never panics, on any mismatch.
    pub fn open(&self, key: &DataKey, field: FieldRef<'_>) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if self.format != FORMAT_V1 {
            return Err(CryptoError::UnsupportedFormat(self.format));
        }
        if self.key_version != key.version() {
            return Err(CryptoError::WrongKeyVersion { envelope: self.key_version, key: key.version() });
        }
        let aad = field.aad(self.format, self.key_version);
        let cipher = XChaCha20Poly1305::new(&Key::from(*key.expose_bytes()));
        cipher
            .decrypt(&XNonce::from(self.nonce), Payload { msg: &self.ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Authentication)
    }

    /// Opens and decodes UTF-8 text.
    pub fn open_string(&self, key: &DataKey, field: FieldRef<'_>) -> Result<Zeroizing<String>, CryptoError> {
        let bytes = self.open(key, field)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))
    }

    /// The packed binary layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.ciphertext.len());
        out.push(self.format);
        out.extend_from_slice(&self.key_version.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses the packed binary layout.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, CryptoError> {
        let (&format, rest) = bytes.split_first().ok_or(CryptoError::Malformed("empty"))?;
        if format != FORMAT_V1 {
            return Err(CryptoError::UnsupportedFormat(format));
        }
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        let (version, rest) = rest.split_at(4);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        Ok(Envelope {
            format,
            key_version: u32::from_be_bytes(version.try_into().map_err(|_| CryptoError::Malformed("version"))?),
            nonce: nonce.try_into().map_err(|_| CryptoError::Malformed("nonce"))?,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// As a BSON binary value (subtype 0x80), ready to store.
    pub fn to_bson(&self) -> bson::Bson {
        bson::Bson::Binary(Binary { subtype: BinarySubtype::UserDefined(BSON_SUBTYPE), bytes: self.to_bytes() })
    }

    /// From a stored BSON value.
    pub fn from_bson(value: &bson::Bson) -> Result<Envelope, CryptoError> {
        match value {
            bson::Bson::Binary(Binary { subtype: BinarySubtype::UserDefined(BSON_SUBTYPE), bytes }) => {
                Envelope::from_bytes(bytes)
            }
            bson::Bson::Binary(_) => Err(CryptoError::Malformed("unexpected binary subtype")),
            _ => Err(CryptoError::Malformed("not a binary value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: u32) -> DataKey {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).unwrap();
        DataKey::new(v, b)
    }

    const AT: FieldRef<'static> = FieldRef { folder_id: "f1", item_id: "i1", field: "name" };

    #[test]
    fn round_trip_through_bson() {
        let k = key(1);
        let env = Envelope::seal(&k, AT, b"prod cluster").unwrap();
        let back = Envelope::from_bson(&env.to_bson()).unwrap();
        assert_eq!(&*back.open(&k, AT).unwrap(), b"prod cluster");
        assert_eq!(&*back.open_string(&k, AT).unwrap(), "prod cluster");
        let empty = Envelope::seal(&k, AT, b"").unwrap();
        assert_eq!(&*Envelope::from_bytes(&empty.to_bytes()).unwrap().open(&k, AT).unwrap(), b"");
    }

    #[test]
    fn nonces_are_fresh() {
        let k = key(1);
        let a = Envelope::seal(&k, AT, b"same").unwrap();
        let b = Envelope::seal(&k, AT, b"same").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn moved_ciphertexts_fail() {
        let k = key(1);
        let env = Envelope::seal(&k, AT, b"secret").unwrap();
        for other in [
            FieldRef { folder_id: "f2", ..AT },
            FieldRef { item_id: "i2", ..AT },
            FieldRef { field: "description", ..AT },
            // Length prefixes: shifting bytes between parts is a different place.
            FieldRef { folder_id: "f", item_id: "1i1", field: "name" },
        ] {
            assert_eq!(env.open(&k, other).unwrap_err(), CryptoError::Authentication, "{other:?}");
        }
    }

    #[test]
    fn wrong_key_or_version_fails() {
        let (k1, k2) = (key(1), key(2));
        let env = Envelope::seal(&k1, AT, b"x").unwrap();
        assert_eq!(env.open(&k2, AT).unwrap_err(), CryptoError::WrongKeyVersion { envelope: 1, key: 2 });
        assert_eq!(env.open(&DataKey::new(1, [7; 32]), AT).unwrap_err(), CryptoError::Authentication);
        // Relabelling the version in the header breaks the AAD binding.
        let mut relabelled = env.clone();
        relabelled.key_version = 2;
        assert_eq!(relabelled.open(&DataKey::new(2, *k1.expose_bytes()), AT).unwrap_err(), CryptoError::Authentication);
    }

    #[test]
    fn every_flipped_bit_fails() {
        let k = key(1);
        let bytes = Envelope::seal(&k, AT, b"hello world").unwrap().to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let result = Envelope::from_bytes(&b).and_then(|e| e.open(&k, AT).map(|_| ()));
            assert!(result.is_err(), "bit {i} flipped and still opened");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[][..], &[1], &[2; 60], &[1; 20]] {
            assert!(Envelope::from_bytes(bad).is_err());
        }
        assert!(Envelope::from_bson(&bson::Bson::String("x".into())).is_err());
        let generic = bson::Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: vec![1; 60] });
        assert!(Envelope::from_bson(&generic).is_err());
    }
}
