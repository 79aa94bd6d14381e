//! A shared connection and the user's own secrets, kept apart: [`strip_secrets`] takes every
//! secret out of a connection before it is shared (into [`LocalCredentials`]), and
//! [`connection_uri`] puts the user's own credentials back into a ready-to-use MongoDB URI.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::Error;
use crate::credentials::LocalCredentials;
use crate::proto::{self, Connection, ReadPreference};

/// A connection to share, with the secrets of the user who shares it (kept on their machine).
/// Its `Debug` shows neither (the connection may still hold a password).
#[derive(Clone, Default)]
pub struct ConnectionInput {
    /// The connection as the user typed it; secrets in it are taken out before sharing.
    pub connection: Connection,
    /// The user's own credentials (password, key passphrase, SSH), never shared.
    pub credentials: LocalCredentials,
}

impl std::fmt::Debug for ConnectionInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInput").field("credentials", &self.credentials).finish_non_exhaustive()
    }
}

/// Which server a connection points at, as a fingerprint: scheme, hosts, replica set,
/// authentication database and mechanism, user and TLS. Credentials are kept with the
/// fingerprint of the connection they were given for, so that a member who edits a shared
/// connection to point elsewhere does not receive the others' passwords.
pub fn target_fingerprint(c: &Connection) -> String {
    let (scheme, hosts, user) = if c.connection_string.is_empty() {
        ("mongodb".to_owned(), c.hosts.join(","), c.username.clone())
    } else {
        let p = split_uri(&c.connection_string);
        let user = p.userinfo.map(|i| decode(i.split_once(':').map_or(i, |(u, _)| u))).unwrap_or_default();
        let query: Vec<&str> = p.query.split('&').filter(|kv| !kv.is_empty()).collect();
        (format!("{}{}?{}", p.scheme, p.path, query.join("&")), p.hosts.to_owned(), user)
    };
    let text = format!(
        "{scheme}\n{hosts}\n{}\n{}\n{}\n{user}\n{}\n{}\n{:?}",
        c.replica_set, c.auth_database, c.auth_mechanism, c.tls, c.ssh_host, c.tls_options
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`crate::Client::share_connection`] made.
#[derive(Debug, Clone)]
pub struct SharedConnection {
    /// The shared item, as the server stored it.
    pub item: proto::Item,
    /// The names of the secrets kept locally instead of shared.
    pub kept_locally: Vec<&'static str>,
}

/// `connection` without any secret, and the secrets it held. Secret option names are those
/// the server strips too (`ts-secret-names`: percent-decoded, case- and separator-blind):
/// the password of a connection string, of a host or SSH host written `user:pass@host`, or
/// after a colon in a user name; secret options in the string's query, `options` and
/// `tls_options` (the TLS key passphrase as `key_passphrase`, the rest in
/// `secret_options`); secret `authMechanismProperties` entries; passwords in connection
/// strings nested in option values.
/// Refused (nothing to send) when the connection string cannot be split where the driver
/// would split it.
pub fn strip_secrets(connection: &Connection) -> Result<(Connection, LocalCredentials), Error> {
    let mut shared = connection.clone();
    let mut found = LocalCredentials::default();
    if !shared.connection_string.is_empty() {
        shared.connection_string = strip_uri(&shared.connection_string, &mut found)?;
    }
    for host in &mut shared.hosts {
        *host = strip_host(host, &mut found.password);
    }
    shared.ssh_host = strip_host(&shared.ssh_host, &mut found.ssh_password);
    split_user(&mut shared.username, &mut found.password);
    split_user(&mut shared.ssh_username, &mut found.ssh_password);
    for map in [&mut shared.options, &mut shared.tls_options] {
        let entries = std::mem::take(map);
        for (key, value) in entries {
            if let Some(kept) = strip_option(&key, &value, &mut found)? {
                map.insert(key, kept);
            }
        }
    }
    Ok((shared, found))
}

/// Keeps `secret` in `slot` unless the user already gave one.
fn keep(slot: &mut Option<String>, secret: String) {
    if slot.is_none() && !secret.is_empty() {
        *slot = Some(secret);
    }
}

/// `user:pass@host:port` without its user info (the password kept in `slot`).
fn strip_host(host: &str, slot: &mut Option<String>) -> String {
    match host.rsplit_once('@') {
        Some((info, rest)) => {
            if let Some((_, pw)) = info.split_once(':') {
                keep(slot, decode(pw));
            }
            rest.to_owned()
        }
        None => host.to_owned(),
    }
}

/// A user name typed as `user:password` keeps only the user.
fn split_user(user: &mut String, slot: &mut Option<String>) {
    if let Some((u, pw)) = user.clone().split_once(':') {
        keep(slot, pw.to_owned());
        *user = u.to_owned();
    }
}

/// An option's value as it may be shared, or `None` when the whole option is a secret (kept
/// in `found`). `value` is as the user typed it (not percent-encoded).
fn strip_option(key: &str, value: &str, found: &mut LocalCredentials) -> Result<Option<String>, Error> {
    if ts_secret_names::is_auth_properties(key) {
        let kept = strip_properties(value, found);
        return Ok((!kept.is_empty()).then(|| kept.join(",")));
    }
    if ts_secret_names::is_secret(key) {
        if ts_secret_names::normalise(key) == "tlscertificatekeyfilepassword" {
            keep(&mut found.key_passphrase, value.to_owned());
        } else {
            found.secret_options.insert(key.to_owned(), value.to_owned());
        }
        return Ok(None);
    }
    if value.contains("://") {
        return strip_uri(value, found).map(Some);
    }
    Ok(Some(value.to_owned()))
}

/// The entries of an `authMechanismProperties` value that are not secret; the secret ones go
/// to `found` as `authMechanismProperties.NAME`.
fn strip_properties<'a>(value: &'a str, found: &mut LocalCredentials) -> Vec<&'a str> {
    let mut kept = Vec::new();
    for entry in value.split(',').filter(|e| !e.is_empty()) {
        let (name, v) = entry.split_once(':').unwrap_or((entry, ""));
        if ts_secret_names::is_secret(name) {
            found.secret_options.insert(format!("{AUTH_PROPERTIES}.{}", decode(name)), decode(v));
        } else {
            kept.push(entry);
        }
    }
    kept
}

const AUTH_PROPERTIES: &str = "authMechanismProperties";

/// The parts of a connection string: scheme, user info, hosts, and the rest (path and query).
struct UriParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: &'a str,
}

/// Splits a connection string as the MongoDB driver does: the options start at the first
/// '?'; before it, the user info ends at the last '@', and the hosts at the next '/'.
fn split_uri(uri: &str) -> UriParts<'_> {
    let (scheme, rest) = uri.split_once("://").map_or(("mongodb", uri), |(s, r)| (s, r));
    let (before, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, after) = match before.rfind('@') {
        Some(at) => (Some(&before[..at]), &before[at + 1..]),
        None => (None, before),
    };
    let (hosts, path) = after.find('/').map_or((after, ""), |i| after.split_at(i));
    UriParts { scheme, userinfo, hosts, path, query }
}

/// Whether a host list is only host names, addresses and ports: anything else means the
/// string was not split where the driver would split it, and nothing is sent.
fn plain_hosts(hosts: &str) -> bool {
    !hosts.is_empty() && hosts.chars().all(|c| c.is_ascii_alphanumeric() || ".-_:[]%,".contains(c))
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A connection string without its password and secret options, which go to `found`.
fn strip_uri(uri: &str, found: &mut LocalCredentials) -> Result<String, Error> {
    let p = split_uri(uri);
    if !plain_hosts(p.hosts) {
        return Err(Error::InvalidInput {
            field: "connection",
            message: "has a connection string whose hosts cannot be told apart from its user info or options; percent-encode '@', '/' and '?' in the user name and password".into(),
        });
    }
    let user = p.userinfo.map(|info| match info.split_once(':') {
        Some((u, pw)) => {
            keep(&mut found.password, decode(pw));
            decode(u)
        }
        None => decode(info),
    });
    let mut kept = Vec::new();
    for pair in p.query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (decode(k), decode(v));
        match strip_option(&key, &value, found)? {
            Some(clean) if clean == value => kept.push(pair.to_owned()),
            Some(clean) => kept.push(format!("{k}={}", encode_value(&clean))),
            None => {}
        }
    }
    let userinfo = user.filter(|u| !u.is_empty()).map(|u| format!("{}@", encode(&u))).unwrap_or_default();
    let query = if kept.is_empty() { String::new() } else { format!("?{}", kept.join("&")) };
    Ok(format!("{}://{userinfo}{}{}{query}", p.scheme, p.hosts, p.path))
}

/// What may stand unescaped in a query value: unreserved characters and the separators of
/// `authMechanismProperties` and host lists.
const VALUE: &AsciiSet = &USERINFO.remove(b':').remove(b',');

fn encode_value(s: &str) -> String {
    utf8_percent_encode(s, VALUE).to_string()
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
            .filter(|kv| !kv.is_empty() && !ts_secret_names::is_secret(kv.split_once('=').map_or(kv, |(k, _)| k)))
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
            if !ts_secret_names::is_secret(k) {
                push(k, v);
            }
        }
        (("mongodb".to_owned(), user, connection.hosts.join(","), "/".to_owned()), params)
    };
    let (scheme, user, hosts, path) = base;
    if let Some(p) = &creds.key_passphrase {
        params.push(format!("tlsCertificateKeyFilePassword={}", encode(p)));
    }
    merge_secret_options(&mut params, creds);
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

/// The user's secret options back into the query: plain ones as `key=value`, secret
/// `authMechanismProperties` entries into that option (added when the shared one had none).
fn merge_secret_options(params: &mut Vec<String>, creds: &LocalCredentials) {
    let prefix = format!("{AUTH_PROPERTIES}.");
    let mut properties = Vec::new();
    for (key, value) in &creds.secret_options {
        match key.strip_prefix(&prefix) {
            Some(name) => properties.push(format!("{}:{}", encode(name), encode(value))),
            None => params.push(format!("{}={}", encode(key), encode(value))),
        }
    }
    if properties.is_empty() {
        return;
    }
    let existing =
        params.iter_mut().find(|p| p.split_once('=').is_some_and(|(k, _)| ts_secret_names::is_auth_properties(k)));
    match existing {
        Some(p) => {
            p.push(',');
            p.push_str(&properties.join(","));
        }
        None => params.push(format!("{AUTH_PROPERTIES}={}", properties.join(","))),
    }
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
            connection_string: "mongodb+srv://ana:p%40ss%3Aword@cluster0.example.net/admin?retryWrites=true&tlsCertificateKeyFilePassword=kp&authMechanismProperties=AWS_SESSION_TOKEN:tok,SERVICE_NAME:mongodb".into(),
            options: [("proxyPassword".to_owned(), "px".to_owned()), ("appName".to_owned(), "gui".to_owned())].into(),
            ..Default::default()
        };
        let (shared, found) = strip_secrets(&c).unwrap();
        let text = format!("{shared:?}");
        for secret in ["p@ss", "p%40ss", "=kp", "px\"", "tok"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(
            shared.connection_string,
            "mongodb+srv://ana@cluster0.example.net/admin?retryWrites=true&authMechanismProperties=SERVICE_NAME:mongodb"
        );
        assert_eq!(found.password.as_deref(), Some("p@ss:word"));
        assert_eq!(found.key_passphrase.as_deref(), Some("kp"));
        assert_eq!(found.secret_options.get("proxyPassword").map(String::as_str), Some("px"));
        assert_eq!(
            found.secret_options.get("authMechanismProperties.AWS_SESSION_TOKEN").map(String::as_str),
            Some("tok")
        );
        assert!(shared.options.contains_key("appName"));
        // Merged back, the user's URI has everything again.
        let uri = connection_uri(&shared, Some(&found)).unwrap();
        assert!(uri.starts_with("mongodb+srv://ana:p%40ss%3Aword@cluster0.example.net/admin?"), "{uri}");
        for part in
            ["tlsCertificateKeyFilePassword=kp", "proxyPassword=px", "SERVICE_NAME:mongodb,AWS_SESSION_TOKEN:tok"]
        {
            assert!(uri.contains(part), "{part} missing from {uri}");
        }
    }

    #[test]
    fn secrets_are_found_however_they_are_written() {
        const S: &str = "Zq8vLw3sEcReT";
        let cases = [
            Connection { connection_string: format!("mongodb://u:{S}@h:1/"), ..Default::default() },
            Connection { connection_string: format!("mongodb://u:p@{S}@h:1/db"), ..Default::default() },
            Connection { connection_string: format!("mongodb://h:1/?%70assword={S}"), ..Default::default() },
            Connection { connection_string: format!("mongodb://h:1/?SSH-Pass%2570hrase={S}"), ..Default::default() },
            Connection { connection_string: format!("mongodb://[::1]:27017,u:{S}@h2/?x=1"), ..Default::default() },
            Connection { hosts: vec![format!("admin:{S}@db1:27017")], ..Default::default() },
            Connection { ssh_host: format!("tunnel:{S}@bastion:22"), ..Default::default() },
            Connection { username: format!("alice:{S}"), ..Default::default() },
            Connection { ssh_username: format!("t:{S}"), ..Default::default() },
            Connection { options: [("db_passwd".to_owned(), S.to_owned())].into(), ..Default::default() },
            Connection { tls_options: [("x-api-key".to_owned(), S.to_owned())].into(), ..Default::default() },
            Connection { options: [("seed".to_owned(), format!("mongodb://u:{S}@h/"))].into(), ..Default::default() },
            Connection {
                options: [("authMechanismProperties".to_owned(), format!("AWS_SESSION_TOKEN:{S}"))].into(),
                ..Default::default()
            },
        ];
        for c in cases {
            let (shared, found) = strip_secrets(&c).unwrap();
            assert!(!format!("{shared:?}").contains(S), "{c:?} -> {shared:?}");
            assert!(!found.is_empty(), "{c:?}: the secret was lost instead of kept");
        }
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

    #[test]
    fn an_at_sign_in_the_options_never_moves_the_split() {
        // The options start at the first '?': an '@' after it is part of an option value.
        let c = Connection {
            connection_string: "mongodb+srv://ana@cluster0.example.net/?tlsCertificateKeyFilePassword=Tr0ub4dor@3"
                .into(),
            ..Default::default()
        };
        let (shared, found) = strip_secrets(&c).unwrap();
        assert_eq!(shared.connection_string, "mongodb+srv://ana@cluster0.example.net/");
        assert_eq!(found.key_passphrase.as_deref(), Some("Tr0ub4dor@3"));
        let c = Connection {
            connection_string:
                "mongodb+srv://ana@cluster0.example.net/?appName=ana@laptop&tlsCertificateKeyFilePassword=S3cr3t".into(),
            ..Default::default()
        };
        let (shared, found) = strip_secrets(&c).unwrap();
        assert_eq!(shared.connection_string, "mongodb+srv://ana@cluster0.example.net/?appName=ana@laptop");
        assert_eq!(found.key_passphrase.as_deref(), Some("S3cr3t"));
        // A raw '/' in a password: the user info still ends at the last '@' before the options.
        let c = Connection { connection_string: "mongodb://u:a/b@h:1/".into(), ..Default::default() };
        let (shared, found) = strip_secrets(&c).unwrap();
        assert_eq!((shared.connection_string.as_str(), found.password.as_deref()), ("mongodb://u@h:1/", Some("a/b")));
        // Hosts that are not host names: nothing is sent.
        for bad in ["mongodb://u:pw@h o st/", "mongodb://u:pw@h=1/", "mongodb://"] {
            let c = Connection { connection_string: bad.into(), ..Default::default() };
            assert!(strip_secrets(&c).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_fingerprint_follows_where_a_connection_points() {
        let a = Connection { connection_string: "mongodb://ana@db1:27017/admin?tls=true".into(), ..Default::default() };
        let moved =
            Connection { connection_string: "mongodb://ana@evil:27017/admin?tls=true".into(), ..Default::default() };
        let plain =
            Connection { connection_string: "mongodb://ana@db1:27017/admin?tls=false".into(), ..Default::default() };
        assert_eq!(target_fingerprint(&a), target_fingerprint(&a.clone()));
        assert_ne!(target_fingerprint(&a), target_fingerprint(&moved));
        assert_ne!(target_fingerprint(&a), target_fingerprint(&plain));
    }
}
