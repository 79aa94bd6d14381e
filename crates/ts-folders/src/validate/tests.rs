//! `check_item`, the entry point of CreateItem and UpdateItem, against connections written
//! to slip secrets past it, and property tests over generated connections and any input.

use prost::Message;
use ts_proto::public::item_content::Content;
use ts_proto::public::{Connection, ItemContent};

use super::{check_item, check_name};

const SECRET: &str = "Zq8vLw3sEcReT";

fn conn(c: Connection) -> Result<(Connection, Vec<String>), tonic::Status> {
    let item = check_item("c", "", Some(ItemContent { content: Some(Content::Connection(c)) }))
        .map_err(tonic::Status::from)?;
    let Some(Content::Connection(c)) = ItemContent::decode(item.content.as_slice()).unwrap().content else {
        panic!("connection")
    };
    Ok((c, item.removed))
}

fn uri(s: &str) -> (Connection, Vec<String>) {
    conn(Connection { connection_string: s.into(), ..Default::default() }).unwrap()
}

/// Whether the secret is left anywhere in the connection.
fn leaks(c: &Connection) -> bool {
    format!("{c:?}").to_ascii_lowercase().contains(&SECRET.to_ascii_lowercase())
}

#[test]
fn uri_user_info_passwords_are_stripped() {
    for s in [
        format!("mongodb://u:{SECRET}@h"),
        format!("mongodb+srv://u:{SECRET}@cluster0.example.net/db?retryWrites=true"),
        format!("mongodb://u:{SECRET}@h1:27017,h2:27018/admin"),
        format!("mongodb://u:{SECRET}@h?tls=true"),
        format!("mongodb://u%3A{SECRET}@h/"),
    ] {
        let (c, removed) = uri(&s);
        assert!(!leaks(&c), "{s} -> {c:?}");
        assert!(removed.contains(&"content.connection.connection_string.password".to_owned()), "{s}: {removed:?}");
    }
}

#[test]
fn secret_query_options_are_stripped_however_written() {
    for (option, name) in [
        ("password", "password"),
        ("PassWord", "PassWord"),
        ("%70assword", "password"),
        ("%50ASSWORD", "PASSWORD"),
        ("tlsCertificateKeyFilePassword", "tlsCertificateKeyFilePassword"),
        ("sslPEMKeyPassword", "sslPEMKeyPassword"),
        ("ssh_passphrase", "ssh_passphrase"),
        ("SSH-PassPhrase", "SSH-PassPhrase"),
        ("proxyPassword", "proxyPassword"),
        ("apiToken", "apiToken"),
        ("client_secret", "client_secret"),
        ("sshPrivateKey", "sshPrivateKey"),
    ] {
        let s = format!("mongodb://u@h/?tls=true&{option}={SECRET}&appName=x");
        let (c, removed) = uri(&s);
        assert!(!leaks(&c), "{s} -> {c:?}");
        assert_eq!(removed, [format!("content.connection.connection_string.{name}")], "{s}");
        assert!(c.connection_string.contains("tls=true") && c.connection_string.contains("appName=x"), "{c:?}");
    }
}

#[test]
fn auth_mechanism_property_secrets_are_stripped() {
    for props in [
        format!("AWS_SESSION_TOKEN:{SECRET}"),
        format!("aws_session_token:{SECRET}"),
        format!("AWS_SESSION_TOKEN%3A{SECRET}"),
        format!("SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:{SECRET}"),
        format!("AWS%5FSESSION%5FTOKEN:{SECRET}"),
        format!("AWS_SESSION_TOKEN%253A{SECRET}"),
    ] {
        let s = format!("mongodb://u@h/?authMechanism=MONGODB-AWS&authMechanismProperties={props}");
        let (c, removed) = uri(&s);
        assert!(!leaks(&c), "{s} -> {c:?}");
        assert_eq!(removed.len(), 1, "{s}: {removed:?}");
        assert!(removed[0].starts_with("content.connection.connection_string.authMechanismProperties"), "{removed:?}");
    }
    let (c, removed) = uri("mongodb://u@h/?authMechanism=GSSAPI&authMechanismProperties=SERVICE_NAME:other");
    assert!(removed.is_empty() && c.connection_string.contains("SERVICE_NAME:other"), "{c:?} {removed:?}");
}

#[test]
fn credentials_in_hosts_and_ssh_host_are_stripped() {
    let (c, removed) = conn(Connection {
        hosts: vec!["db1:27017".into(), format!("u:{SECRET}@db2:27017"), format!("u%3A{SECRET}@db3")],
        ssh_host: format!("admin:{SECRET}@bastion.example:22"),
        ..Default::default()
    })
    .unwrap();
    assert!(!leaks(&c), "{c:?}");
    assert_eq!(c.hosts, ["db1:27017", "db2:27017", "db3"]);
    assert_eq!(c.ssh_host, "bastion.example:22");
    assert_eq!(
        removed,
        [
            "content.connection.hosts[1].password",
            "content.connection.hosts[2].password",
            "content.connection.ssh_host.password"
        ]
    );
}

#[test]
fn secret_options_in_maps_are_stripped_however_spelled() {
    let (c, removed) = conn(Connection {
        options: [
            ("sshPassword".to_owned(), SECRET.to_owned()),
            ("SSH_PASSPHRASE".to_owned(), SECRET.to_owned()),
            ("ssh%50assphrase".to_owned(), SECRET.to_owned()),
            ("authMechanismProperties".to_owned(), format!("AWS_SESSION_TOKEN:{SECRET}")),
            ("appName".to_owned(), "reports".to_owned()),
        ]
        .into(),
        tls_options: [
            ("TLSCertificateKeyFilePassword".to_owned(), SECRET.to_owned()),
            ("tlsCAFile".to_owned(), "/etc/ca.pem".to_owned()),
        ]
        .into(),
        ..Default::default()
    })
    .unwrap();
    assert!(!leaks(&c), "{c:?}");
    assert_eq!(c.options.len(), 1);
    assert_eq!(c.tls_options.len(), 1);
    assert_eq!(removed.len(), 5, "{removed:?}");
}

fn refused(c: Connection, field: &str) {
    let err = conn(c).unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with(field), "{field}: {}", err.message());
}

#[test]
fn key_material_in_other_encodings_is_refused() {
    // A PKCS#8 Ed25519 private key as DER, then as bare base64 and hex.
    let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
    der.extend((0..32u8).map(|i| i.wrapping_mul(37).wrapping_add(11)));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
    let openssh = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZWQyNTUxOQ";
    let putty = "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none";
    for value in [b64.as_str(), hex.as_str(), openssh, putty] {
        refused(
            Connection { tls_options: [("comment".to_owned(), value.to_owned())].into(), ..Default::default() },
            "content.connection.tls_options",
        );
        refused(Connection { ssh_username: value.to_owned(), ..Default::default() }, "content.connection.ssh_username");
    }
}

#[test]
fn key_material_is_refused_in_every_kind_and_never_echoed() {
    let der_b64 = "MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC";
    let c = Connection { username: "-----BEGIN RSA PRIVATE KEY-----".into(), ..Default::default() };
    refused(c, "content.connection.username");
    let c = Connection {
        connection_string: format!(
            "mongodb://h/?tlsCertificateKey={}",
            der_b64.replace('+', "%2B").replace('/', "%2F")
        ),
        ..Default::default()
    };
    refused(c, "content.connection.connection_string");
    let bodies = [
        Content::Query(ts_proto::public::Query { filter: format!("{{\"k\": \"{der_b64}\"}}"), ..Default::default() }),
        Content::Script(ts_proto::public::Script { body: format!("key = '{der_b64}'"), ..Default::default() }),
    ];
    for (content, field) in bodies.into_iter().zip(["content.query.filter", "content.script.body"]) {
        let err = tonic::Status::from(check_item("k", "", Some(ItemContent { content: Some(content) })).unwrap_err());
        assert!(err.message().starts_with(field), "{}", err.message());
        assert!(!err.message().contains("MC4C"), "the value is never echoed: {}", err.message());
    }
    let err = tonic::Status::from(check_name("name", der_b64).unwrap_err());
    assert!(err.message().starts_with("name contains key material"));
    let err = check_item("k", der_b64, Some(ItemContent { content: Some(Content::Connection(Connection::default())) }));
    assert!(tonic::Status::from(err.unwrap_err()).message().starts_with("description"));
}

#[test]
fn connections_without_secrets_pass_unchanged() {
    let c = Connection {
        connection_string: "mongodb+srv://reporter@cluster0.example.net/sales?retryWrites=true&w=majority&authSource=admin&tlsCAFile=%2Fetc%2Fca.pem".into(),
        hosts: vec!["db1.example.net:27017".into(), "[::1]:27018".into(), "%2Ftmp%2Fmongodb-27017.sock".into()],
        username: "CN=client,OU=reports,O=Example".into(),
        ssh_host: "bastion.example.net:22".into(),
        ssh_username: "ubuntu".into(),
        options: [("appName".to_owned(), "reports".to_owned()), ("filter".to_owned(), r#"{"_id": {"$oid": "507f1f77bcf86cd799439011"}}"#.to_owned())].into(),
        tls_options: [("tlsCertificateKeyFile".to_owned(), "/home/me/client.pem".to_owned())].into(),
        ..Default::default()
    };
    let (out, removed) = conn(c.clone()).unwrap();
    assert_eq!(out, c);
    assert!(removed.is_empty());
}

#[test]
fn bad_connection_strings_and_hosts_are_refused_without_echo() {
    for s in [
        "localhost:27017",
        "postgres://u:p@h/db",
        "mongodb://:p@h/",
        "mongodb://u:p@x@h",
        "mongodb+srv://h:27017",
        "mongodb://",
    ] {
        let err = conn(Connection { connection_string: s.into(), ..Default::default() }).unwrap_err();
        assert!(err.message().starts_with("content.connection.connection_string"), "{s}: {}", err.message());
        assert!(!err.message().contains(s), "{}", err.message());
        // And it says what is wrong.
        let why = if s.starts_with("mongodb") {
            "is not a valid MongoDB connection string"
        } else {
            "must start with mongodb:// or mongodb+srv://"
        };
        assert!(err.message().ends_with(why), "{s}: {}", err.message());
    }
    for h in ["h/?password=x", "h 1", "", "h:port"] {
        refused(Connection { hosts: vec![h.into()], ..Default::default() }, "content.connection.hosts[0]");
        if !h.is_empty() {
            refused(Connection { ssh_host: h.into(), ..Default::default() }, "content.connection.ssh_host");
        }
    }
}

#[test]
fn user_names_lose_what_follows_a_colon() {
    let (c, removed) = conn(Connection {
        username: format!("reader:{SECRET}"),
        ssh_username: format!("ubuntu:{SECRET}"),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((c.username.as_str(), c.ssh_username.as_str()), ("reader", "ubuntu"));
    assert_eq!(removed, ["content.connection.username.password", "content.connection.ssh_username.password"]);
}

#[test]
fn names_are_checked() {
    assert!(check_name("name", "  ").is_err());
    assert!(check_name("name", &"x".repeat(201)).is_err());
    assert!(check_name("name", "tab\there").is_err());
    assert_eq!(check_name("name", " Orders ").unwrap(), "Orders");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn planted_secrets_never_survive(p in ts_testkit::planted::connection_with_secrets()) {
        let (c, removed) = conn(p.connection.clone()).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e:?}")))?;
        let text = format!("{c:?}");
        for s in &p.secrets {
            proptest::prop_assert!(!text.contains(s.as_str()), "{s} survived in {c:?}");
        }
        proptest::prop_assert_eq!(removed.len(), p.removals, "{:?}", removed);
        let before_options = c.connection_string.split_once('?').map_or(c.connection_string.as_str(), |(b, _)| b);
        let parsed = mongodb::options::ConnectionString::parse(before_options).expect("the driver reads the result");
        proptest::prop_assert!(parsed.credential.and_then(|c| c.password).is_none());
        proptest::prop_assert!(c.connection_string.contains("appName=reports"));
    }

    #[test]
    fn any_input_is_answered_without_panicking(
        s in "\\PC{0,200}",
        uri in "mongodb(\\+srv)?://[a-z:@%/?&=,.0-9A-Z_-]{0,80}",
        key in "[a-zA-Z%_]{0,20}",
    ) {
        let _ = conn(Connection {
            connection_string: uri.clone(),
            hosts: vec![s.clone(), uri.clone()],
            ssh_host: s.clone(),
            username: s.clone(),
            options: [(key.clone(), s.clone()), (s.clone(), uri.clone())].into(),
            tls_options: [(key, uri)].into(),
            ..Default::default()
        });
        let _ = conn(Connection { connection_string: s.clone(), ..Default::default() });
        let _ = check_name("name", &s);
    }
}

#[test]
fn sizes_are_bounded_exactly_where_documented() {
    use super::{MAX_BODY_BYTES, MAX_TEXT_BYTES};
    use ts_proto::public::Query;
    assert_eq!(MAX_TEXT_BYTES, 64 * 1024);
    assert_eq!(MAX_BODY_BYTES, 1024 * 1024);
    let query = |filter: String| ItemContent { content: Some(Content::Query(Query { filter, ..Default::default() })) };
    let text = "d".repeat(MAX_TEXT_BYTES);
    assert!(check_item("q", &text, Some(query("{}".into()))).is_ok(), "a description at the limit is kept");
    let e = tonic::Status::from(check_item("q", &format!("{text}d"), Some(query("{}".into()))).unwrap_err());
    assert!(e.message().starts_with("description "), "{}", e.message());
    let body = format!("{{\"a\": \"{}\"}}", "b".repeat(MAX_BODY_BYTES - 10));
    assert!(body.len() <= MAX_BODY_BYTES);
    assert!(check_item("q", "", Some(query(body))).is_ok(), "a filter within the body limit is kept");
    let e = tonic::Status::from(check_item("q", "", Some(query("b".repeat(MAX_BODY_BYTES + 1)))).unwrap_err());
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}
