//! Envelopes (`ts_crypto::Envelope`): the packed layout read back from storage and from
//! sealed page tokens.

use bson::Binary;
use bson::spec::BinarySubtype;
use ts_crypto::{DataKey, Envelope, FieldRef};

/// Where the fixed-key envelopes are bound.
pub const AT: FieldRef<'static> = FieldRef { folder_id: "fuzz-folder", item_id: "fuzz-item", field: "content" };

/// The fixed data key the seed envelopes are sealed with.
pub fn key() -> DataKey {
    DataKey::new(7, [0x5a; 32])
}

/// Arbitrary bytes: parsing never panics, a parsed envelope re-encodes to exactly the bytes
/// it came from, BSON accepts the same bytes under subtype 0x80 only, and opening never
/// panics.
pub fn parse_arbitrary(bytes: &[u8]) {
    let parsed = Envelope::from_bytes(bytes).ok();
    if let Some(env) = &parsed {
        assert_eq!(env.to_bytes(), bytes, "an envelope re-encodes to the bytes it was read from");
        let _ = env.open(&key(), AT);
        let _ = env.open_string(&key(), AT);
    }
    let stored = bson::Bson::Binary(Binary { subtype: BinarySubtype::UserDefined(0x80), bytes: bytes.to_vec() });
    assert_eq!(Envelope::from_bson(&stored).ok(), parsed, "BSON and bytes agree");
    let generic = bson::Bson::Binary(Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() });
    assert!(Envelope::from_bson(&generic).is_err(), "a generic binary is never an envelope");
}

fn opens(bytes: &[u8], key: &DataKey) -> bool {
    Envelope::from_bytes(bytes).and_then(|e| e.open(key, AT)).is_ok()
}

/// Sealing `plaintext` under `key` round-trips through bytes and BSON; flipping any single
/// bit (`bit`), cutting it short (to `cut` bytes) or extending it is refused, and so is
/// opening it at another place.
pub fn sealed_round_trip(key: &DataKey, plaintext: &[u8], bit: usize, cut: usize) {
    let env = Envelope::seal(key, AT, plaintext).expect("sealing works");
    let bytes = env.to_bytes();
    let back = Envelope::from_bytes(&bytes).expect("a sealed envelope parses");
    assert_eq!(&*back.open(key, AT).expect("and opens"), plaintext);
    let stored = Envelope::from_bson(&env.to_bson()).expect("a stored envelope parses");
    assert_eq!(&*stored.open(key, AT).expect("and opens"), plaintext);

    let flipped = crate::flip_bit(&bytes, bit);
    assert!(!opens(&flipped, key), "bit {} of {} flipped and still opened", bit % (bytes.len() * 8), bytes.len());
    let cut = cut % bytes.len();
    assert!(!opens(&bytes[..cut], key), "cut to {cut} of {} bytes and still opened", bytes.len());
    let mut longer = bytes.clone();
    longer.push(cut as u8);
    assert!(!opens(&longer, key), "extended by a byte and still opened");
    for elsewhere in [FieldRef { item_id: "other-item", ..AT }, FieldRef { field: "name", ..AT }] {
        assert!(back.open(key, elsewhere).is_err(), "opened at {elsewhere:?}");
    }
}

/// The fuzz target: `data` as a stored envelope, and as a plaintext to seal and mutate.
pub fn fuzz(data: &[u8]) {
    parse_arbitrary(data);
    let (m, plaintext) = crate::choice(data);
    sealed_round_trip(&key(), plaintext, m, m >> 8);
}
