//! Properties of the parsers that face the public: connection strings and item content,
//! page tokens, envelopes, access tokens, and every public request message. Each property is
//! a function that panics when the property is broken, so that one definition serves two
//! runners: the bounded proptests in `tests/props.rs` (stable Rust, part of `make test`) and
//! the cargo-fuzz targets in `fuzz/` (nightly, `make fuzz`), whose `fuzz(data)` entry points
//! live in each module here.
//!
//! Keys are fixed (see [`envelope::key`] and [`access_token::Signer::fixed`]) so that the
//! committed seed corpora stay valid; the proptests also use freshly generated keys.
#![forbid(unsafe_code)]

pub mod access_token;
pub mod connection_item;
pub mod envelope;
pub mod page_token;
pub mod public_requests;
pub mod seeds;

/// Splits a fuzz input into a number read from its first (up to) four bytes, for choosing
/// a mutation, and the rest.
pub fn choice(data: &[u8]) -> (usize, &[u8]) {
    let (head, rest) = data.split_at(data.len().min(4));
    let mut n = [0u8; 4];
    n[..head.len()].copy_from_slice(head);
    (u32::from_be_bytes(n) as usize, rest)
}

/// `bytes` with bit `bit` (taken modulo the length in bits) flipped; `bytes` must not be empty.
pub fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let bit = bit % (bytes.len() * 8);
    let mut out = bytes.to_vec();
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// The base64url alphabet, from which single-character token mutations are drawn.
pub const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `text` (ASCII) with the character at `m % len` replaced by a different one drawn from
/// `alphabet`; `text` must not be empty.
pub fn replace_char(text: &str, m: usize, alphabet: &[u8]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = m % bytes.len();
    let mut pick = (m / bytes.len()) % alphabet.len();
    if alphabet[pick] == bytes[at] {
        pick = (pick + 1) % alphabet.len();
    }
    bytes[at] = alphabet[pick];
    String::from_utf8_lossy(&bytes).into_owned()
}
