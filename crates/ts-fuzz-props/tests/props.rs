//! Bounded property tests of the public-facing parsers (the properties live in the library,
//! shared with the cargo-fuzz targets). Each property runs a fixed number of cases, so the
//! whole file runs in seconds as part of `make test`.

use std::path::PathBuf;

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use ts_crypto::DataKey;
use ts_fuzz_props::access_token::{self, Signer};
use ts_fuzz_props::{connection_item, envelope, page_token, public_requests, seeds};
use ts_proto::public::item_content::Content;
use ts_proto::public::{Connection, Generic, ItemContent, Query};

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

// ---- envelopes ----

/// Bytes that get past the format byte and the length check, so parsing reaches the end.
fn envelope_shaped() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 45..120).prop_map(|mut b| {
        b[0] = ts_crypto::FORMAT_V1;
        b
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn envelope_parsing_never_panics(bytes in prop_oneof![vec(any::<u8>(), 0..80), envelope_shaped()]) {
        envelope::parse_arbitrary(&bytes);
    }

    #[test]
    fn envelope_round_trips_and_refuses_any_change(
        version in any::<u32>(),
        key in any::<[u8; 32]>(),
        plaintext in vec(any::<u8>(), 0..200),
        bit in any::<usize>(),
        cut in any::<usize>(),
    ) {
        envelope::sealed_round_trip(&DataKey::new(version, key), &plaintext, bit, cut);
    }
}

// ---- page tokens ----

fn parts() -> impl Strategy<Value = Vec<String>> {
    vec("[^\u{1f}]{0,24}", 1..5)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plain_tokens_never_panic_and_are_canonical(token in prop_oneof!["[A-Za-z0-9_-]{0,64}", ".{0,40}"], n in 1usize..5) {
        page_token::plain_arbitrary(&token, n);
    }

    #[test]
    fn plain_tokens_round_trip(parts in parts()) {
        page_token::plain_round_trip(&parts);
    }

    #[test]
    fn sealed_tokens_never_panic(token in prop_oneof!["[A-Za-z0-9_-]{0,160}", ".{0,40}"]) {
        page_token::sealed_arbitrary(&token);
    }

    #[test]
    fn sealed_tokens_round_trip_and_refuse_any_change(parts in parts(), m in any::<usize>()) {
        page_token::sealed_round_trip(&parts, m);
    }
}

// ---- access tokens ----

/// Token-shaped text: three base64url segments, the first sometimes a real EdDSA header.
fn token_shaped() -> impl Strategy<Value = String> {
    let header =
        prop_oneof!["[A-Za-z0-9_-]{0,40}", Just("eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSIsImtpZCI6Inh4In0".to_owned()),];
    (header, "[A-Za-z0-9_-]{0,80}", "[A-Za-z0-9_-]{0,90}").prop_map(|(h, p, s)| format!("{h}.{p}.{s}"))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn access_token_parsing_never_panics(token in prop_oneof![token_shaped(), ".{0,120}"]) {
        access_token::arbitrary_token(Signer::fixed().verifier(), &token);
    }

    #[test]
    fn signed_tokens_verify_only_unmodified(
        sub in "\\PC{0,24}",
        email in "\\PC{0,32}",
        lic in "\\PC{0,12}",
        sid in "\\PC{0,24}",
        ttl in 1u64..10_000_000,
        m in any::<usize>(),
    ) {
        let signer = Signer::generate();
        access_token::signed_round_trip(&signer, &access_token::claims(&sub, &email, &lic, &sid, ttl), m);
    }
}

// ---- connection strings and item content ----

/// Text that sometimes carries key material.
fn field_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        1 => ".{0,8}(-----BEGIN|private key|PuTTY-User-Key-File)\\PC{0,8}",
    ]
}

fn content() -> impl Strategy<Value = Option<ItemContent>> {
    let options = || hash_map("[A-Za-z]{1,12}", field_text(), 0..4);
    let connection =
        ("[a-z+]{1,10}://[ -~]{0,60}", vec(field_text(), 0..3), field_text(), options(), options(), -1i32..8).prop_map(
            |(connection_string, hosts, username, options, tls_options, read_preference)| {
                Content::Connection(Connection {
                    connection_string,
                    hosts,
                    username,
                    options,
                    tls_options,
                    read_preference,
                    ..Default::default()
                })
            },
        );
    let query = (field_text(), field_text(), any::<u32>()).prop_map(|(collection, filter, limit)| {
        Content::Query(Query { collection, filter, limit, ..Default::default() })
    });
    let generic = field_text().prop_map(|text| Content::Generic(Generic { text }));
    proptest::option::weighted(0.95, proptest::option::weighted(0.95, prop_oneof![connection, query, generic]))
        .prop_map(|c| c.map(|content| ItemContent { content }))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn accepted_items_are_sanitized_fixed_points(name in field_text(), description in field_text(), content in content()) {
        connection_item::check_fields(&name, &description, content);
    }

    #[test]
    fn item_requests_from_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        connection_item::request_bytes(&bytes);
    }

    #[test]
    fn connection_string_passwords_never_survive(s in prop_oneof![
        "[a-z+]{1,10}://[ -~]{0,60}",
        "mongodb(\\+srv)?://[a-z]{1,8}:[!-~]{4,16}@[a-z0-9.,:]{1,30}(/[a-z]{0,8})?(\\?[ -~]{0,30})?",
    ]) {
        connection_item::connection_string(&s);
    }

    #[test]
    fn planted_passwords_are_removed(
        user in "[a-z][a-z0-9]{0,8}",
        // Valid in a URI: a `%` only as an escape (a bare one makes the string invalid, and
        // an invalid string is refused whole, which is a pass of its own).
        password in "Zq([A-Za-z0-9._~!$'()*+,;=-]|%25|%3A|%40|%2F){4,20}",
        hosts in vec("[a-z][a-z0-9]{0,8}(\\.[a-z]{2,5})?(:[1-9][0-9]{1,3})?", 1..4),
        db in "[a-z]{0,8}",
        option in prop_oneof![Just("password"), Just("sshPassword"), Just("tlsCertificateKeyFilePassword"), Just("awsSessionToken")],
    ) {
        connection_item::planted_password(&user, &password, &hosts, &db, option);
    }
}

// ---- public requests ----

/// Well-formed protobuf: a few fields of each wire type, length-delimited ones holding
/// either bytes or well-formed fields in turn, so that nested messages decode too.
fn protobuf() -> impl Strategy<Value = Vec<u8>> {
    let leaf = vec(any::<u8>(), 0..24);
    leaf.prop_recursive(2, 64, 6, |inner| {
        let field = (1u32..14, prop_oneof![any::<u64>().prop_map(Ok), inner.prop_map(Err)]);
        vec(field, 0..6).prop_map(|fields| {
            let mut out = Vec::new();
            for (tag, value) in fields {
                match value {
                    Ok(n) => {
                        encode_key(tag, WireType::Varint, &mut out);
                        encode_varint(n, &mut out);
                    }
                    Err(bytes) => {
                        encode_key(tag, WireType::LengthDelimited, &mut out);
                        encode_varint(bytes.len() as u64, &mut out);
                        out.extend_from_slice(&bytes);
                    }
                }
            }
            out
        })
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn public_requests_round_trip(which in 0..public_requests::NAMES.len(), bytes in prop_oneof![vec(any::<u8>(), 0..120), protobuf()]) {
        public_requests::decode_as(which, &bytes);
    }
}

/// The list of requests is the public API's: every RPC input type of `teamshare.v1`.
#[test]
fn every_public_request_is_covered() {
    let set = prost_types::FileDescriptorSet::decode(ts_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut inputs: Vec<String> = set
        .file
        .iter()
        .filter(|f| f.package() == "teamshare.v1")
        .flat_map(|f| &f.service)
        .flat_map(|s| &s.method)
        .map(|m| m.input_type().trim_start_matches(".teamshare.v1.").to_owned())
        .collect();
    inputs.sort();
    inputs.dedup();
    let mut covered: Vec<&str> = public_requests::NAMES.to_vec();
    covered.sort_unstable();
    assert_eq!(inputs, covered);
}

// ---- the committed seed corpora ----

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target)
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir(target).join(name)).unwrap_or_else(|e| panic!("{target}/{name}: {e}"))
}

/// Every committed seed passes its target (a regression corpus in `make test`), and the
/// valid ones are still valid under the fixed keys.
#[test]
fn committed_seeds_hold_the_properties() {
    for target in seeds::TARGETS {
        let files: Vec<_> = std::fs::read_dir(corpus_dir(target)).unwrap().map(|e| e.unwrap().path()).collect();
        assert!(files.len() >= 3, "{target} has {} seeds", files.len());
        for file in files {
            seeds::run(target, &std::fs::read(&file).unwrap());
        }
    }
    let token = String::from_utf8(seed("access_token", "valid.txt")).unwrap();
    assert_eq!(Signer::fixed().verifier().verify(&token, access_token::now()).unwrap().sub, "user-1");
    let env = ts_crypto::Envelope::from_bytes(&seed("envelope", "sealed-text.bin")).unwrap();
    assert_eq!(&*env.open(&envelope::key(), envelope::AT).unwrap(), b"prod cluster");
    let token = String::from_utf8(seed("page_token", "sealed-list-items.txt")).unwrap();
    let env = ts_folders::paging::token_envelope(&token).unwrap();
    ts_folders::paging::open_with(&env, &envelope::key(), page_token::FOLDER, page_token::SCOPE, 2).unwrap();
    let planted = String::from_utf8(seed("connection_item", "userinfo-password.txt")).unwrap();
    assert!(connection_item::userinfo_password(&planted).is_some(), "the planted password is checked");
}

/// Rewrites the seed corpora: `cargo test -p ts-fuzz-props --test props -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the seeds change"]
fn write_seed_corpora() {
    for (target, files) in seeds::corpora() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
