//! Key material in any encoding a user could paste: PEM armour, PuTTY and OpenSSH key files,
//! and bare DER written as base64 or hex, whole or broken into lines.
//!
//! Bare DER is recognised by structure, not by a prefix: an outer SEQUENCE whose length fits
//! the text, whose first element is an INTEGER (a key's version) or a SEQUENCE (a
//! certificate's body), and whose elements, at most [`MAX_ELEMENTS`] of them, tile it exactly.
//! Random text, hashes, ObjectIds and UUIDs do not pass that; keys, certificates and PKCS#12
//! bundles do. Only the start of a run of digits is tried, so a blob inside a longer blob (an
//! image, say) is not mistaken for a key. Every check reads a fixed number of bytes, so a
//! megabyte of text is scanned in linear time.

/// Fewest DER bytes counted as key material: an Ed25519 PKCS#8 key has 48.
pub const MIN_DER_BYTES: usize = 40;
/// Most top-level elements in a key structure (PKCS#1 RSA keys have 9).
pub const MAX_ELEMENTS: usize = 16;

/// Labels of key files, matched upper-cased: PEM armour (`-----BEGIN …`), the SSH2 format
/// (`---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----`), PuTTY files and their body alone, and the
/// decoded OpenSSH magic.
const MARKERS: &[&str] = &["-----BEGIN", "PRIVATE KEY", "PUTTY-USER-KEY-FILE", "PRIVATE-LINES:", "OPENSSH-KEY-V1"];

/// `openssh-key-v1\0` in base64: how every unarmoured OpenSSH private key starts.
const OPENSSH_BASE64: &str = "b3BlbnNzaC1rZXktdjE";

/// The kind of key material found, for the refusal message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMaterial {
    /// A PEM block or a labelled key file (PuTTY, SSH2, OpenSSH).
    Labelled,
    /// An OpenSSH private key in base64 without its armour.
    OpenSsh,
    /// DER in base64 (standard or URL-safe alphabet).
    Base64Der,
    /// DER in hex.
    HexDer,
}

impl KeyMaterial {
    /// Words for an error message.
    pub fn describe(self) -> &'static str {
        match self {
            KeyMaterial::Labelled => "a PEM block or key file",
            KeyMaterial::OpenSsh => "an OpenSSH private key",
            KeyMaterial::Base64Der => "key material (base64 DER)",
            KeyMaterial::HexDer => "key material (hex DER)",
        }
    }
}

/// The first kind of key material in `text`, if any.
pub fn find(text: &str) -> Option<KeyMaterial> {
    let upper = text.to_ascii_uppercase();
    if MARKERS.iter().any(|m| upper.contains(m)) {
        return Some(KeyMaterial::Labelled);
    }
    if text.contains(OPENSSH_BASE64) {
        return Some(KeyMaterial::OpenSsh);
    }
    if Digits::scan(text.as_bytes(), base64_value, 6).holds_der() {
        return Some(KeyMaterial::Base64Der);
    }
    if Digits::scan(text.as_bytes(), hex_value, 4).holds_der() {
        return Some(KeyMaterial::HexDer);
    }
    None
}

fn base64_value(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

fn hex_value(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Digits of one encoding taken out of a text, with line breaks, spaces, colons (as in
/// `30:82:…`) and written-out `\n` escapes skipped, and the places where a run of digits
/// starts.
struct Digits {
    /// Bits per digit: 6 for base64, 4 for hex.
    bits: u32,
    values: Vec<u8>,
    /// (first digit, end of its run) for each run start.
    starts: Vec<(usize, usize)>,
}

impl Digits {
    fn scan(text: &[u8], value: fn(u8) -> Option<u8>, bits: u32) -> Digits {
        let mut d = Digits { bits, values: Vec::new(), starts: Vec::new() };
        let mut open = 0; // starts[open..] belong to the current run
        let mut after_digit = false;
        let mut i = 0;
        while i < text.len() {
            let c = text[i];
            if let Some(v) = value(c) {
                if !after_digit {
                    d.starts.push((d.values.len(), usize::MAX));
                }
                d.values.push(v);
                after_digit = true;
            } else if c == b'\\' && matches!(text.get(i + 1), Some(b'n' | b'r' | b't')) {
                after_digit = false;
                i += 1;
            } else if matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b':') {
                after_digit = false;
            } else {
                d.close(&mut open);
                after_digit = false;
            }
            i += 1;
        }
        d.close(&mut open);
        d
    }

    fn close(&mut self, open: &mut usize) {
        let end = self.values.len();
        for s in &mut self.starts[*open..] {
            s.1 = end;
        }
        *open = self.starts.len();
    }

    fn holds_der(&self) -> bool {
        self.starts.iter().any(|&(start, end)| {
            let available = (end - start) * self.bits as usize / 8;
            is_der(available, |k| self.byte(start, k))
        })
    }

    /// Byte `k` of the bytes that the digits from `start` encode.
    fn byte(&self, start: usize, k: usize) -> u8 {
        let digit = |i: usize| u32::from(self.values.get(start + i).copied().unwrap_or(0));
        let first_bit = k * 8;
        let (first, skip) = (first_bit / self.bits as usize, first_bit % self.bits as usize);
        // Two or three digits cover the byte; gather them and cut it out.
        let mut acc = 0u32;
        for i in 0..3 {
            acc = (acc << self.bits) | digit(first + i);
        }
        let total = 3 * self.bits as usize;
        ((acc >> (total - skip - 8)) & 0xff) as u8
    }
}

/// Whether the first `available` bytes start with a DER structure shaped like key material.
fn is_der(available: usize, byte: impl Fn(usize) -> u8) -> bool {
    if byte(0) != 0x30 {
        return false;
    }
    let Some((header, body)) = length(&byte, 1, available) else { return false };
    let Some(total) = body.checked_add(1 + header) else { return false };
    if total < MIN_DER_BYTES || total > available {
        return false;
    }
    let mut at = 1 + header;
    let mut elements = 0;
    while at < total {
        let tag = byte(at);
        if elements == MAX_ELEMENTS || (elements == 0 && tag != 0x02 && tag != 0x30) {
            return false;
        }
        let Some((h, l)) = length(&byte, at + 1, total) else { return false };
        let Some(next) = l.checked_add(at + 1 + h) else { return false };
        at = next;
        elements += 1;
    }
    at == total && elements >= 2
}

/// A DER length at `at`: (bytes it takes, the length), if it is definite and within `limit`.
fn length(byte: &impl Fn(usize) -> u8, at: usize, limit: usize) -> Option<(usize, usize)> {
    if at >= limit {
        return None;
    }
    let first = byte(at);
    if first < 0x80 {
        return Some((1, usize::from(first)));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || at + n >= limit {
        return None;
    }
    let mut len = 0usize;
    for i in 1..=n {
        len = len.checked_mul(256)?.checked_add(usize::from(byte(at + i)))?;
    }
    Some((1 + n, len))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// A TLV whose length takes the long form with two length bytes.
    fn tlv_long(tag: u8, content: &[u8]) -> Vec<u8> {
        let n = content.len();
        let mut out = vec![tag, 0x82, (n >> 8) as u8, n as u8];
        out.extend_from_slice(content);
        out
    }

    /// A key-shaped structure of `total` bytes: SEQUENCE { INTEGER 0, OCTET STRING … }.
    fn der(total: usize) -> Vec<u8> {
        // Some totals (130, 259) no minimal encoding reaches: the outer length then takes the
        // two-byte long form (valid BER, as keys pasted from other tools may be).
        for long_outer in [false, true] {
            for int_len in 1..=3 {
                for fill in total.saturating_sub(12)..total {
                    let body: Vec<u8> = (0..fill).map(|i| (i * 7 + 3) as u8).collect();
                    let content = [tlv(0x02, &vec![1; int_len]), tlv(0x04, &body)].concat();
                    let d = if long_outer { tlv_long(0x30, &content) } else { tlv(0x30, &content) };
                    if d.len() == total {
                        return d;
                    }
                }
            }
        }
        panic!("no structure of {total} bytes")
    }

    #[test]
    fn the_generator_reaches_every_size() {
        for total in 40..=3000 {
            assert_eq!(der(total).len(), total);
        }
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn lines(s: &str, sep: &str) -> String {
        s.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(sep)
    }

    #[test]
    fn labelled_key_files_are_found_by_each_label() {
        for text in [
            "-----BEGIN CERTIFICATE-----",
            "-----begin encrypted private key-----",
            "---- BEGIN SSH2 ENCRYPTED PRIVATE KEY ----",
            "PuTTY-User-Key-File-3: ssh-ed25519",
            "Encryption: none\nPrivate-Lines: 1\nAAAAIA==",
            "openssh-key-v1\0\0\0\0\x04none",
        ] {
            assert_eq!(find(text), Some(KeyMaterial::Labelled), "{text:?}");
        }
        let openssh = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQy";
        assert_eq!(find(&format!("key: {openssh}")), Some(KeyMaterial::OpenSsh));
    }

    #[test]
    fn bare_der_is_found_in_base64_and_hex_however_laid_out() {
        let key = der(48);
        let b64 = STANDARD.encode(&key);
        for text in [
            b64.clone(),
            format!("key={b64}&x=1"),
            URL_SAFE_NO_PAD.encode(&key),
            lines(&b64, "\n"),
            lines(&b64, "\r\n"),
            lines(&b64, "\\n"),
            format!("\"{}\"", lines(&b64, " ")),
            format!("junk line\n{b64}"),
        ] {
            assert_eq!(find(&text), Some(KeyMaterial::Base64Der), "{text:?}");
        }
        let h = hex(&key);
        let colons = key.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
        for text in [h.clone(), h.to_uppercase(), format!("0x{h}"), colons, lines(&h, "\n")] {
            assert_eq!(find(&text), Some(KeyMaterial::HexDer), "{text:?}");
        }
    }

    #[test]
    fn long_form_lengths_are_read() {
        let rsa_like = der(1200); // 0x82 two-byte length
        assert_eq!(rsa_like[1], 0x82);
        assert_eq!(find(&STANDARD.encode(&rsa_like)), Some(KeyMaterial::Base64Der));
        let mid = der(200); // 0x81 one-byte length
        assert_eq!(mid[1], 0x81);
        assert_eq!(find(&hex(&mid)), Some(KeyMaterial::HexDer));
        let mut indefinite = der(48);
        indefinite[1] = 0x80;
        assert_eq!(find(&STANDARD.encode(&indefinite)), None);
    }

    #[test]
    fn structure_decides_not_the_prefix() {
        assert_eq!(find(&hex(&der(MIN_DER_BYTES))), Some(KeyMaterial::HexDer));
        assert_eq!(find(&hex(&der(MIN_DER_BYTES - 1))), None, "too short");
        let certificate_like = tlv(0x30, &[tlv(0x30, &[0; 30]), tlv(0x03, &[0; 12])].concat());
        assert_eq!(find(&STANDARD.encode(&certificate_like)), Some(KeyMaterial::Base64Der));
        let not_a_key = tlv(0x30, &[tlv(0x04, &[0; 30]), tlv(0x02, &[0; 12])].concat());
        assert_eq!(find(&STANDARD.encode(&not_a_key)), None, "first element neither INTEGER nor SEQUENCE");
        let one_element = tlv(0x30, &tlv(0x02, &[1; 50]));
        assert_eq!(find(&STANDARD.encode(&one_element)), None, "one element");
        let sixteen = tlv(0x30, &[tlv(0x02, &[0; 3]).repeat(16)].concat());
        assert_eq!(find(&hex(&sixteen)), Some(KeyMaterial::HexDer));
        let seventeen = tlv(0x30, &[tlv(0x02, &[0; 3]).repeat(17)].concat());
        assert_eq!(find(&hex(&seventeen)), None, "too many elements");
        let mut overrun = der(48);
        overrun[6] += 1; // the last element runs past the end
        assert_eq!(find(&hex(&overrun)), None);
        let mut truncated = der(60);
        truncated.truncate(50);
        assert_eq!(find(&STANDARD.encode(&truncated)), None, "shorter than it says");
        let mut trailing = der(48);
        trailing.extend([0x41; 9]);
        assert_eq!(find(&STANDARD.encode(&trailing)), Some(KeyMaterial::Base64Der));
    }

    #[test]
    fn ordinary_text_is_not_key_material() {
        let mut noise = Vec::new();
        let mut x: u32 = 12345;
        for _ in 0..3000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            noise.push((x >> 16) as u8 | 1); // never 0x30 at the start
        }
        noise[0] = 0x89; // a PNG
        let mut image = noise.clone();
        image.splice(300..300, der(48)); // a key-shaped run inside a blob, not at its start
        for text in [
            r#"{"status": "A", "qty": {"$lt": 30}, "_id": {"$oid": "507f1f77bcf86cd799439011"}}"#.to_owned(),
            "orders-db-1.internal.example:27017".to_owned(),
            "507f1f77bcf86cd799439011".to_owned(),
            "3082ab12-4c5d-4e6f-8a9b-0c1d2e3f4a5b".to_owned(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_owned(),
            "MIIE MIIBIjAN MC4CAQ Base64 words".to_owned(),
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U".to_owned(),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGpl9xMn1PXPzs1tLVgQz7s0PsCr7eDL0c4M8VdBAZxQ alice@laptop".to_owned(),
            STANDARD.encode(&noise),
            hex(&noise),
            STANDARD.encode(&image),
            "db.orders.aggregate([{ $match: { total: { $gt: 3082 } } }])".to_owned(),
        ] {
            assert_eq!(find(&text), None, "{text:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_text_is_scanned_without_panicking(text in ".{0,400}", bytes in proptest::collection::vec(0u8..=255, 0..400)) {
            let _ = find(&text);
            let _ = find(&String::from_utf8_lossy(&bytes));
            let _ = find(&STANDARD.encode(&bytes));
            let _ = find(&hex(&bytes));
        }

        #[test]
        fn any_key_shaped_der_is_found(size in MIN_DER_BYTES..3000usize, prefix in "[ a-z=:]{0,8}", wrap in 0usize..3) {
            let key = der(size);
            let sep = ["\n", "\\n", " "][wrap];
            let b64 = lines(&STANDARD.encode(&key), sep);
            proptest::prop_assert_eq!(find(&format!("{prefix} {b64}")), Some(KeyMaterial::Base64Der));
            proptest::prop_assert_eq!(find(&format!("{prefix} {}", lines(&hex(&key), sep))), Some(KeyMaterial::HexDer));
        }
    }
}
