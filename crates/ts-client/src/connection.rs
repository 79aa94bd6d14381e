//! A shared connection and the user's own secrets, kept apart: [`strip_secrets`] takes every
//! secret out of a connection before it is shared (into [`LocalCredentials`]), and
//! [`connection_uri`] puts the user's own credentials back into a ready-to-use MongoDB URI.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Error;
use crate::credentials::LocalCredentials;
use crate::proto::{self, Connection, ReadPreference};

/// Connection-string and option keys whose values are secrets (compared case-insensitively).
const SECRET_OPTIONS: &[&str] = &[
    "password",
    "tlscertificatekeyfilepassword",
    "sslpemkeypassword",
    "sslclientcertificatekeypassword",
    "proxypassword",
    "authmechanismproperties",
    "awssessiontoken",
];

/// A connection to share, with the secrets of the user who shares it (kept on their machine).
#[derive(Debug, Clone, Default)]
pub struct ConnectionInput {
    /// The connection as the user typed it; secrets in it are taken out before sharing.
    pub connection: Connection,
    /// The user's own credentials (password, key passphrase, SSH), never shared.
    pub credentials: LocalCredentials,
}

/// What [`crate::Client::share_connection`] made.
#[derive(Debug, Clone)]
pub struct SharedConnection {
    /// The shared item, as the server stored it.
    pub item: proto::Item,
    /// The names of the secrets kept locally instead of shared.
    pub kept_locally: Vec<&'static str>,
}

/// `connection` without any secret, and the secrets it held: a password in the connection
/// string's user info, secret options in its query, `options` or `tls_options` (the TLS key
/// passphrase is kept as `key_passphrase`; other secret options are dropped).
pub fn strip_secrets(connection: &Connection) -> (Connection, LocalCredentials) {
    let mut shared = connection.clone();
    let mut found = LocalCredentials::default();
    if !shared.connection_string.is_empty() {
        let (uri, user, password, passphrase) = strip_uri(&shared.connection_string);
        shared.connection_string = uri;
        if shared.username.is_empty()
            && let Some(u) = user.clone()
        {
            shared.username = u;
        }
        found.password = password;
        found.key_passphrase = passphrase;
    }
    for map in [&mut shared.options, &mut shared.tls_options] {
        let secret: Vec<String> = map.keys().filter(|k| is_secret(k)).cloned().collect();
        for k in secret {
            if let Some(v) = map.remove(&k)
                && k.eq_ignore_ascii_case("tlsCertificateKeyFilePassword")
            {
                found.key_passphrase.get_or_insert(v);
            }
        }
    }
    (shared, found)
}

fn is_secret(key: &str) -> bool {
    SECRET_OPTIONS.iter().any(|s| key.eq_ignore_ascii_case(s))
}

/// The parts of a connection string: scheme, user info, hosts, and the rest (path and query).
struct UriParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: &'a str,
}

fn split_uri(uri: &str) -> UriParts<'_> {
    let (scheme, rest) = uri.split_once("://").map_or(("mongodb", uri), |(s, r)| (s, r));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    UriParts { scheme, userinfo, hosts, path, query }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A connection string without its password and secret options: (uri, user, password, key
/// passphrase).
fn strip_uri(uri: &str) -> (String, Option<String>, Option<String>, Option<String>) {
    let p = split_uri(uri);
    let (user, password) = match p.userinfo {
        Some(info) => match info.split_once(':') {
            Some((u, pw)) => (Some(decode(u)), Some(decode(pw))),
            None => (Some(decode(info)), None),
        },
        None => (None, None),
    };
    let mut passphrase = None;
    let kept: Vec<&str> = p
        .query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            if !is_secret(k) {
                return true;
            }
            if k.eq_ignore_ascii_case("tlsCertificateKeyFilePassword") {
                passphrase = Some(decode(v));
            }
            false
        })
        .collect();
    let userinfo = user.as_deref().map(|u| format!("{}@", encode(u))).unwrap_or_default();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    (format!("{}://{userinfo}{}{}{query}", p.scheme, p.hosts, p.path), user, password, passphrase)
}

/// What may stand unescaped in URI user info: RFC 3986 unreserved characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, USERINFO).to_string()
}

fn read_preference(p: i32) -> Option<&'static str> {
    Some(match ReadPreference::try_from(p).ok()? {
        ReadPreference::Unspecified => return None,
        ReadPreference::Primary => "primary",
        ReadPreference::PrimaryPreferred => "primaryPreferred",
        ReadPreference::Secondary => "secondary",
        ReadPreference::SecondaryPreferred => "secondaryPreferred",
        ReadPreference::Nearest => "nearest",
    })
}

/// A MongoDB URI for `connection` with `credentials` (the user's own) merged in: their user
/// name over the shared one, their password, their TLS key passphrase. SSH credentials are
/// not part of a URI; the application opens the tunnel with them.
pub fn connection_uri(connection: &Connection, credentials: Option<&LocalCredentials>) -> Result<String, Error> {
    let none = LocalCredentials::default();
    let creds = credentials.unwrap_or(&none);
    let (base, mut params) = if !connection.connection_string.is_empty() {
        let p = split_uri(&connection.connection_string);
        let shared_user = p.userinfo.map(|i| decode(i.split_once(':').map_or(i, |(u, _)| u)));
        let user = creds.username.clone().or(shared_user).or_else(|| non_empty(&connection.username));
        let query: Vec<String> = p
            .query
            .split('&')
            .filter(|kv| !kv.is_empty() && !is_secret(kv.split_once('=').map_or(kv, |(k, _)| k)))
            .map(str::to_owned)
            .collect();
        let path = if p.path.is_empty() { "/" } else { p.path };
        ((p.scheme.to_owned(), user, p.hosts.to_owned(), path.to_owned()), query)
    } else {
        if connection.hosts.is_empty() {
            return Err(Error::InvalidInput {
                field: "connection",
                message: "has neither a connection string nor hosts".into(),
            });
        }
        let user = creds.username.clone().or_else(|| non_empty(&connection.username));
        let mut params = Vec::new();
        let mut push = |k: &str, v: &str| params.push(format!("{k}={}", encode(v)));
        if !connection.replica_set.is_empty() {
            push("replicaSet", &connection.replica_set);
        }
        if !connection.auth_database.is_empty() {
            push("authSource", &connection.auth_database);
        }
        if !connection.auth_mechanism.is_empty() {
            push("authMechanism", &connection.auth_mechanism);
        }
        if connection.tls {
            push("tls", "true");
        }
        if let Some(rp) = read_preference(connection.read_preference) {
            push("readPreference", rp);
        }
        for (k, v) in connection.tls_options.iter().chain(connection.options.iter()) {
            if !is_secret(k) {
                push(k, v);
            }
        }
        (("mongodb".to_owned(), user, connection.hosts.join(","), "/".to_owned()), params)
    };
    let (scheme, user, hosts, path) = base;
    if let Some(p) = &creds.key_passphrase {
        params.push(format!("tlsCertificateKeyFilePassword={}", encode(p)));
    }
    let userinfo = match (user, &creds.password) {
        (Some(u), Some(pw)) => format!("{}:{}@", encode(&u), encode(pw)),
        (Some(u), None) => format!("{}@", encode(&u)),
        (None, Some(_)) => {
            return Err(Error::InvalidInput { field: "credentials", message: "a password needs a user name".into() });
        }
        (None, None) => String::new(),
    };
    let query = if params.is_empty() { String::new() } else { format!("?{}", params.join("&")) };
    Ok(format!("{scheme}://{userinfo}{hosts}{path}{query}"))
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_and_secret_options_never_stay_in_the_shared_connection() {
        let c = Connection {
            connection_string: "mongodb+srv://ana:p%40ss%3Aword@cluster0.example.net/admin?retryWrites=true&tlsCertificateKeyFilePassword=kp&authMechanismProperties=AWS_SESSION_TOKEN:tok".into(),
            options: [("proxyPassword".to_owned(), "px".to_owned()), ("appName".to_owned(), "gui".to_owned())].into(),
            ..Default::default()
        };
        let (shared, found) = strip_secrets(&c);
        let text = format!("{shared:?}");
        for secret in ["p@ss", "p%40ss", "kp", "px", "tok"] {
            assert!(
                !text.contains(&format!("={secret}")) && !text.contains(&format!(":{secret}")),
                "{secret} in {text}"
            );
        }
        assert_eq!(shared.connection_string, "mongodb+srv://ana@cluster0.example.net/admin?retryWrites=true");
        assert_eq!(shared.username, "ana");
        assert_eq!(found.password.as_deref(), Some("p@ss:word"));
        assert_eq!(found.key_passphrase.as_deref(), Some("kp"));
        assert!(shared.options.contains_key("appName"));
    }

    #[test]
    fn the_uri_merges_the_users_own_credentials() {
        let shared = Connection {
            hosts: vec!["db1:27017".into(), "db2:27017".into()],
            replica_set: "rs0".into(),
            auth_database: "admin".into(),
            username: "team".into(),
            tls: true,
            read_preference: ReadPreference::SecondaryPreferred as i32,
            ..Default::default()
        };
        let bob =
            LocalCredentials { username: Some("bob".into()), password: Some("b/b pw".into()), ..Default::default() };
        assert_eq!(
            connection_uri(&shared, Some(&bob)).unwrap(),
            "mongodb://bob:b%2Fb%20pw@db1:27017,db2:27017/?replicaSet=rs0&authSource=admin&tls=true&readPreference=secondaryPreferred"
        );
        let with_string =
            Connection { connection_string: "mongodb://ana@h:1/app?w=majority".into(), ..Default::default() };
        let pw = LocalCredentials { password: Some("x".into()), ..Default::default() };
        assert_eq!(connection_uri(&with_string, Some(&pw)).unwrap(), "mongodb://ana:x@h:1/app?w=majority");
        assert_eq!(connection_uri(&with_string, None).unwrap(), "mongodb://ana@h:1/app?w=majority");
        assert!(connection_uri(&Connection::default(), None).is_err());
    }
}
