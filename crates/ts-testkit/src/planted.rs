//! Connections with planted secrets, for property tests of the scrubber: passwords, tokens
//! and passphrases put wherever a user could write them, under names spelled every way the
//! scrubber must still recognise.
//!
//! Each secret has an alphanumeric core of 16 characters, unique to the case, which survives
//! percent-encoding unchanged: a test looks for the cores, in any reply and any store.

use proptest::prelude::*;
use ts_proto::public::Connection;

/// A connection with secrets planted in it.
#[derive(Debug, Clone)]
pub struct Planted {
    /// The connection as a user would send it.
    pub connection: Connection,
    /// The secrets' cores; none may be found after scrubbing.
    pub secrets: Vec<String>,
    /// How many fields the scrubber must report removed.
    pub removals: usize,
}

/// Where a secret is planted.
#[derive(Debug, Clone, Copy)]
enum Place {
    UriPassword,
    UriEncodedColon,
    UriOption,
    UriAuthProperty,
    Host,
    SshHost,
    Options,
    TlsOptions,
    MapAuthProperty,
    MapUrl,
    Username,
    SshUsername,
}

const PLACES: [Place; 12] = [
    Place::UriPassword,
    Place::UriEncodedColon,
    Place::UriOption,
    Place::UriAuthProperty,
    Place::Host,
    Place::SshHost,
    Place::Options,
    Place::TlsOptions,
    Place::MapAuthProperty,
    Place::MapUrl,
    Place::Username,
    Place::SshUsername,
];

/// Names of options that hold secrets, as the tools that use them spell them.
const SECRET_NAMES: &[&str] = &[
    "password",
    "sshPassword",
    "sshPassphrase",
    "ssh_tunnel_passphrase",
    "tlsCertificateKeyFilePassword",
    "sslPEMKeyPassword",
    "proxyPassword",
    "apiToken",
    "client_secret",
    "sshPrivateKey",
    "awsCredentials",
    "dbPass",
];

/// A secret with the core `core`, and some characters that must be percent-encoded in a URI.
fn secret(core: String) -> impl Strategy<Value = (String, String)> {
    ("[!*@:/?#% ]{0,3}", "[!*@:/?#% ]{0,3}").prop_map(move |(a, b)| (core.clone(), format!("{a}{core}{b}")))
}

/// `s` percent-encoded where a URI needs it (letters and digits are kept).
fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `name` spelled oddly: letters in random case, some percent-encoded, separators added.
fn spelled(name: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..6, name.len()).prop_map(move |choices| {
        name.chars()
            .zip(choices)
            .map(|(c, k)| match k {
                0 => c.to_ascii_uppercase().to_string(),
                1 => c.to_ascii_lowercase().to_string(),
                2 => format!("%{:02X}", c as u32),
                3 if c.is_ascii_alphabetic() => format!("_{c}"),
                _ => c.to_string(),
            })
            .collect()
    })
}

fn secret_name() -> impl Strategy<Value = String> {
    proptest::sample::select(SECRET_NAMES).prop_flat_map(spelled)
}

fn plant(place: Place, index: usize) -> impl Strategy<Value = (Place, String, String, String)> {
    let core = "[A-Za-z0-9]{16}".prop_map(move |c| format!("P{index:02}{c}"));
    (core.prop_flat_map(secret), secret_name(), spelled("AWS_SESSION_TOKEN"))
        .prop_map(move |((core, value), name, aws)| (place, core, value, format!("{name}\u{0}{aws}")))
}

/// A connection with one to six secrets planted in different places, among ordinary hosts
/// and options that must survive.
pub fn connection_with_secrets() -> impl Strategy<Value = Planted> {
    let places = proptest::sample::subsequence(PLACES.to_vec(), 1..=6).prop_shuffle();
    let plants =
        places.prop_flat_map(|places| places.into_iter().enumerate().map(|(i, p)| plant(p, i)).collect::<Vec<_>>());
    (plants, any::<bool>(), "[a-z][a-z0-9-]{0,10}", 1usize..=3, proptest::option::of("[a-z]{1,8}")).prop_map(
        |(plants, srv, host, count, db)| {
            let mut c = Connection { replica_set: "rs0".into(), ..Default::default() };
            let hosts: Vec<String> = if srv {
                vec![format!("{host}.example.net")]
            } else {
                (0..count).map(|i| format!("{host}-{i}.example.net:{}", 27017 + i)).collect()
            };
            let mut user_info = String::new();
            let mut query = vec!["appName=reports".to_owned(), "retryWrites=true".to_owned()];
            let mut secrets = Vec::new();
            for (place, core, value, names) in &plants {
                let (name, aws) = names.split_once('\u{0}').unwrap_or_default();
                secrets.push(core.clone());
                match place {
                    Place::UriPassword => user_info = format!("reader:{}@", pct(value)),
                    Place::UriEncodedColon => user_info = format!("reader%3A{}@", pct(value)),
                    Place::UriOption => query.push(format!("{name}={}", pct(value))),
                    Place::UriAuthProperty => {
                        query.push(format!("authMechanismProperties=SERVICE_NAME:mongodb,{aws}:{}", pct(value)))
                    }
                    Place::Host => c.hosts.push(format!("admin:{}@{}", pct(value), hosts[0])),
                    Place::SshHost => c.ssh_host = format!("tunnel:{}@bastion.example.net:22", pct(value)),
                    Place::Options => {
                        c.options.insert(name.to_owned(), value.clone());
                    }
                    Place::TlsOptions => {
                        c.tls_options.insert(name.to_owned(), value.clone());
                    }
                    Place::MapAuthProperty => {
                        c.options.insert("authMechanismProperties".into(), format!("{aws}:{value}"));
                    }
                    Place::MapUrl => {
                        let url = format!("http://proxy:{}@proxy.example.net:3128", pct(value));
                        c.options.insert("proxy".into(), url);
                    }
                    Place::Username => c.username = format!("reader:{value}"),
                    Place::SshUsername => c.ssh_username = format!("tunnel:{value}"),
                }
            }
            // A user info written twice would leave one password behind the other's '@'.
            let uri_passwords = plants.iter().filter(|p| matches!(p.0, Place::UriPassword | Place::UriEncodedColon));
            let removals = plants.len() - uri_passwords.count().saturating_sub(1);
            let scheme = if srv { "mongodb+srv" } else { "mongodb" };
            let db = db.unwrap_or_default();
            c.connection_string = format!("{scheme}://{user_info}{}/{db}?{}", hosts.join(","), query.join("&"));
            c.hosts.extend(hosts);
            Planted { connection: c, secrets, removals }
        },
    )
}
