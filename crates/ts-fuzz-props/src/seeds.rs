//! The seed corpora committed under `fuzz/corpus/<target>/`: a few small, meaningful inputs
//! per target. Envelopes and sealed tokens carry fresh nonces, so regenerating gives new
//! bytes with the same meaning; `tests/props.rs` replays whatever is committed.

use std::collections::HashMap;

use prost::Message;
use ts_contract::paging::plain_token;
use ts_crypto::Envelope;
use ts_folders::paging::seal_with;
use ts_proto::public::item_content::Content;
use ts_proto::public::{self, Connection, ItemContent, PageRequest, Query};

use crate::access_token::{Signer, claims};
use crate::{envelope, page_token};

/// The fuzz targets, by the name of their file in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &["access_token", "connection_item", "envelope", "page_token", "public_requests"];

/// Runs the fuzz target `target` on `data`, as `cargo fuzz run <target>` would.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "access_token" => crate::access_token::fuzz(data),
        "connection_item" => crate::connection_item::fuzz(data),
        "envelope" => crate::envelope::fuzz(data),
        "page_token" => crate::page_token::fuzz(data),
        "public_requests" => crate::public_requests::fuzz(data),
        _ => panic!("unknown fuzz target {target}"),
    }
}

/// A fuzz input made of a mutation choice and a payload, as [`crate::choice`] reads it.
fn structured(m: u32, payload: &str) -> Vec<u8> {
    let mut out = m.to_be_bytes().to_vec();
    out.extend_from_slice(payload.as_bytes());
    out
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn connection_item_request() -> public::CreateItemRequest {
    let options = HashMap::from([
        ("appName".to_owned(), "orders-report".to_owned()),
        ("password".to_owned(), "Pl4nted-0ption-Secret".to_owned()),
    ]);
    let tls_options = HashMap::from([("tlsCertificateKeyFilePassword".to_owned(), "Pl4nted-TLS-Secret".to_owned())]);
    let c = Connection {
        connection_string: "mongodb://report:Pl4nted-Us3rinfo@db1.example.net:27017/orders?authSource=admin".into(),
        hosts: strings(&["db1.example.net:27017", "db2.example.net:27017"]),
        replica_set: "rs0".into(),
        auth_mechanism: "SCRAM-SHA-256".into(),
        username: "report".into(),
        tls: true,
        tls_options,
        options,
        ..Default::default()
    };
    public::CreateItemRequest {
        folder_id: "0f3c2a9e-7d61-4f4b-9a53-0d6f2b0c8e11".into(),
        name: "Orders (prod)".into(),
        description: "read-only reporting user".into(),
        content: Some(ItemContent { content: Some(Content::Connection(c)) }),
        ..Default::default()
    }
}

fn query_item_request() -> public::CreateItemRequest {
    let q = Query {
        database: "shop".into(),
        collection: "orders".into(),
        filter: r#"{"status": "open", "total": {"$gt": 100}}"#.into(),
        sort: r#"{"created_at": -1}"#.into(),
        limit: 50,
        ..Default::default()
    };
    public::CreateItemRequest {
        folder_id: "0f3c2a9e-7d61-4f4b-9a53-0d6f2b0c8e11".into(),
        name: "Open orders over 100".into(),
        content: Some(ItemContent { content: Some(Content::Query(q)) }),
        ..Default::default()
    }
}

/// One target's seeds, as (file name, bytes).
pub type Corpus = Vec<(&'static str, Vec<u8>)>;

/// Every target's seeds, by target.
pub fn corpora() -> Vec<(&'static str, Corpus)> {
    let text = |s: &str| s.as_bytes().to_vec();
    let connection_item = vec![
        (
            "userinfo-password.txt",
            text("mongodb://alice:Pl4nted-Secret-1@db1.example.net:27017,db2.example.net:27017/orders?replicaSet=rs0"),
        ),
        (
            "srv-password-option.txt",
            text("mongodb+srv://bob:Pl4nted-Secret-2@cluster0.example.net/?retryWrites=true&password=Pl4nted-Secret-2"),
        ),
        (
            "aws-session-token.txt",
            text(
                "mongodb://carol@db1/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:Pl4ntedT0ken",
            ),
        ),
        ("no-secret.txt", text("mongodb://db1.example.net:27017/?tls=true&appName=teamshare")),
        ("pem-block.txt", text("mongodb://db1/?tlsCertificateKeyFile=-----BEGIN PRIVATE KEY-----MIIE")),
        ("connection-request.bin", connection_item_request().encode_to_vec()),
        ("query-request.bin", query_item_request().encode_to_vec()),
    ];

    let key = envelope::key();
    let sealed = |plain: &[u8]| Envelope::seal(&key, envelope::AT, plain).expect("sealing works").to_bytes();
    let envelope = vec![
        ("sealed-text.bin", sealed(b"prod cluster")),
        ("sealed-empty.bin", sealed(b"")),
        ("sealed-json.bin", sealed("{\"status\": \"open\", \"owner\": \"J\u{e9}r\u{f4}me\"}".as_bytes())),
        ("format-2.bin", {
            let mut b = sealed(b"from the future");
            b[0] = 2;
            b
        }),
    ];

    let seal = |parts: &[&str]| {
        let token = seal_with(&key, page_token::FOLDER, page_token::SCOPE, &strings(parts)).expect("sealing works");
        token.into_bytes()
    };
    let page_token = vec![
        ("sealed-list-items.txt", seal(&["2024-05-01T12:00:00.000Z", "7b0e1c54-0d7a-4c50-9d7c-0f1f6b1b2a33"])),
        ("sealed-one-part.txt", seal(&["42"])),
        ("plain-two-parts.txt", plain_token(&strings(&["2024-05-01T12:00:00.000Z", "folder-9"])).into_bytes()),
        ("structured-parts.bin", structured(0x0102_0304, "2024-05-01T12:00:00.000Z\u{1f}item-42")),
    ];

    let signer = Signer::fixed();
    let access_token = vec![
        ("valid.txt", signer.sign(&claims("user-1", "alice@example.com", "lic-1", "sess-1", 3600)).into_bytes()),
        (
            "valid-no-license.txt",
            signer.sign(&claims("user-2", "j\u{e9}r\u{f4}me@example.fr", "", "sess-2", 60)).into_bytes(),
        ),
        ("expired.txt", {
            let mut c = claims("user-3", "bob@example.com", "", "sess-3", 1);
            c.exp = c.iat;
            signer.sign(&c).into_bytes()
        }),
        ("structured-claims.bin", structured(7, "user-4\ncarol@example.com\nlic-2\nsess-4")),
    ];

    let page = |token: &str| Some(PageRequest { page_size: 50, page_token: token.into() });
    let public_requests = vec![
        ("create-item.bin", connection_item_request().encode_to_vec()),
        ("list-items.bin", {
            let t = String::from_utf8(seal(&["2024-05-01T12:00:00.000Z", "item-1"])).expect("tokens are ASCII");
            public::ListItemsRequest { folder_id: "folder-1".into(), page: page(&t) }.encode_to_vec()
        }),
        (
            "create-invitation.bin",
            public::CreateInvitationRequest {
                folder_id: "folder-1".into(),
                invitee_email: "dave@example.com".into(),
                access: public::AccessLevel::Edit as i32,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "complete-email-verification.bin",
            public::CompleteEmailVerificationRequest { email: "alice@example.com".into(), code: "493817".into() }
                .encode_to_vec(),
        ),
        (
            "update-item.bin",
            public::UpdateItemRequest {
                folder_id: "folder-1".into(),
                item_id: "item-1".into(),
                expected_version: 3,
                name: "Open orders".into(),
                content: query_item_request().content,
                ..Default::default()
            }
            .encode_to_vec(),
        ),
    ];

    vec![
        ("access_token", access_token),
        ("connection_item", connection_item),
        ("envelope", envelope),
        ("page_token", page_token),
        ("public_requests", public_requests),
    ]
}
