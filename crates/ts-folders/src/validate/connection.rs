//! Connections never carry secrets: credentials are stripped from every field that can hold
//! them (the connection string's user info and options, `hosts`, `ssh_host`, user names, the
//! option maps and URLs inside them), and each removal is reported by field name.
//!
//! The connection string is split the way the MongoDB driver splits it, and the driver's own
//! parser (`ConnectionString::parse`) must accept the part before the options: it decides
//! what is user info, hosts and database, so a string the driver would read differently is
//! refused rather than guessed at. The options are filtered by name (see [`super::names`])
//! rather than parsed by the driver, because a shared string may carry options that other
//! tools know and this driver does not.

use std::collections::HashMap;

use mongodb::options::{ConnectionString, ServerAddress};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use ts_proto::public::{Connection, ReadPreference};

use super::names::{display, is_auth_properties, is_secret, strip_auth_properties};
use super::{MAX_TEXT_BYTES, invalid, text};
use crate::FoldersError;

/// Most `hosts` entries.
const MAX_HOSTS: usize = 100;
/// Longest `hosts` entry, in bytes.
const MAX_HOST_BYTES: usize = 1024;

/// Characters escaped when an `authMechanismProperties` entry is written back.
const PROPERTY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.').remove(b'/');

/// Why a connection string was refused (never with the string itself: it may hold a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadConnectionString {
    /// It does not start with `mongodb://` or `mongodb+srv://`.
    Scheme,
    /// The driver does not accept its user info, hosts or database.
    Unparseable,
}

impl BadConnectionString {
    fn why(self) -> &'static str {
        match self {
            BadConnectionString::Scheme => "must start with mongodb:// or mongodb+srv://",
            BadConnectionString::Unparseable => "is not a valid MongoDB connection string",
        }
    }
}

/// Removes secrets from a connection string: the password in the user info, secret query
/// options, and secret `authMechanismProperties` entries. Returns the cleaned string and the
/// names of what was removed, relative to the string (`connection_string.password`).
pub fn strip_connection_string(raw: &str) -> Result<(String, Vec<String>), BadConnectionString> {
    let mut removed = Vec::new();
    if raw.is_empty() {
        return Ok((String::new(), removed));
    }
    let (scheme, rest) = raw.split_once("://").ok_or(BadConnectionString::Scheme)?;
    if scheme != "mongodb" && scheme != "mongodb+srv" {
        return Err(BadConnectionString::Scheme);
    }
    // The driver's own split: options after the first '?', user info before the last '@'.
    let (before_options, options) = match rest.split_once('?') {
        Some((b, o)) => (b, Some(o)),
        None => (rest, None),
    };
    ConnectionString::parse(format!("{scheme}://{before_options}")).map_err(|_| BadConnectionString::Unparseable)?;
    let mut clean = format!("{scheme}://");
    match before_options.rsplit_once('@') {
        Some((user_info, hosts)) => {
            if let Some(user) = user_without_password(user_info) {
                removed.push("connection_string.password".to_owned());
                clean.push_str(&user);
            } else {
                clean.push_str(user_info);
            }
            if !clean.ends_with("://") {
                clean.push('@');
            }
            clean.push_str(hosts);
        }
        None => clean.push_str(before_options),
    }
    if let Some(options) = options {
        let kept = strip_query(options, &mut removed);
        if !kept.is_empty() {
            clean.push('?');
            clean.push_str(&kept);
        }
    }
    Ok((clean, removed))
}

/// The user name alone, percent-encoded, if `user_info` (as written in a URI) holds a
/// password: after a ':' written plainly or percent-encoded.
fn user_without_password(user_info: &str) -> Option<String> {
    if let Some((user, _)) = user_info.split_once(':') {
        return Some(user.to_owned());
    }
    let decoded = percent_decode_str(user_info).decode_utf8_lossy();
    let (user, _) = decoded.split_once(':')?;
    Some(utf8_percent_encode(user, NON_ALPHANUMERIC).to_string())
}

fn strip_query(options: &str, removed: &mut Vec<String>) -> String {
    let mut kept = Vec::new();
    for pair in options.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if is_secret(key) {
            removed.push(format!("connection_string.{}", display(key)));
        } else if is_auth_properties(key) {
            let decoded = percent_decode_str(value).decode_utf8_lossy();
            let (entries, dropped) = strip_auth_properties(&decoded);
            removed.extend(dropped.iter().map(|d| format!("connection_string.authMechanismProperties.{d}")));
            if dropped.is_empty() {
                kept.push(pair.to_owned());
            } else if !entries.is_empty() {
                let entries: Vec<String> = entries.iter().map(|e| encode_property(e)).collect();
                kept.push(format!("{key}={}", entries.join(",")));
            }
        } else {
            kept.push(pair.to_owned());
        }
    }
    kept.join("&")
}

fn encode_property(entry: &str) -> String {
    match entry.split_once(':') {
        Some((k, v)) => {
            format!("{}:{}", utf8_percent_encode(k, PROPERTY_ESCAPES), utf8_percent_encode(v, PROPERTY_ESCAPES))
        }
        None => utf8_percent_encode(entry, PROPERTY_ESCAPES).to_string(),
    }
}

/// A `host:port` entry with any user info removed (and reported under `field`); refused if
/// what is left is not a host the driver accepts, written with host-name characters only.
fn strip_host(field: &str, raw: &str, removed: &mut Vec<String>) -> Result<String, FoldersError> {
    let host = match raw.rsplit_once('@') {
        Some((user_info, host)) => {
            let part = if user_without_password(user_info).is_some() { "password" } else { "username" };
            removed.push(format!("{field}.{part}"));
            host
        }
        None => raw,
    };
    let host_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']' | '%');
    if !host.chars().all(host_chars) || ServerAddress::parse(host).is_err() {
        return Err(invalid(field, "must be a host name and port, such as db1.example.com:27017"));
    }
    Ok(host.to_owned())
}

/// A user name with anything after a ':' (a password written as `user:password`) removed.
fn strip_user(field: &str, user: &mut String, removed: &mut Vec<String>) {
    if let Some(i) = user.find(':') {
        user.truncate(i);
        removed.push(format!("{field}.password"));
    }
}

/// A value that is a URL: the password in its user info removed; a MongoDB connection string
/// is stripped in full. Reported under `field`.
fn strip_url(field: &str, value: &str, removed: &mut Vec<String>) -> Result<Option<String>, FoldersError> {
    if value.starts_with("mongodb://") || value.starts_with("mongodb+srv://") {
        let (clean, gone) = strip_connection_string(value).map_err(|e| invalid(field, e.why()))?;
        let changed = !gone.is_empty();
        removed.extend(gone.into_iter().map(|g| format!("{field}.{}", g.trim_start_matches("connection_string."))));
        return Ok(changed.then_some(clean));
    }
    let Some((scheme, rest)) = value.split_once("://") else { return Ok(None) };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some((user_info, host)) = rest[..authority_end].rsplit_once('@') else { return Ok(None) };
    let Some(user) = user_without_password(user_info) else { return Ok(None) };
    removed.push(format!("{field}.password"));
    let at = if user.is_empty() { "" } else { "@" };
    Ok(Some(format!("{scheme}://{user}{at}{host}{}", &rest[authority_end..])))
}

/// An option map: entries with secret names removed, `authMechanismProperties` filtered, URL
/// values stripped, and every key and value checked for size and key material.
fn strip_map(field: &str, map: &mut HashMap<String, String>, removed: &mut Vec<String>) -> Result<(), FoldersError> {
    let mut keys: Vec<String> = map.keys().cloned().collect();
    keys.sort();
    for k in keys {
        let entry = format!("{field}[{k:?}]");
        let value = &map[&k];
        text(field, &k, MAX_TEXT_BYTES)?; // not named by the key: the key may be the secret
        text(&entry, value, MAX_TEXT_BYTES)?;
        text(&entry, &percent_decode_str(value).decode_utf8_lossy(), MAX_TEXT_BYTES)?;
        let name = format!("{field}.{k}");
        if is_secret(&k) {
            map.remove(&k);
            removed.push(name);
        } else if is_auth_properties(&k) {
            let (entries, dropped) = strip_auth_properties(value);
            if !dropped.is_empty() {
                removed.extend(dropped.iter().map(|d| format!("{name}.{d}")));
                if entries.is_empty() {
                    map.remove(&k);
                } else {
                    let kept = entries.join(",");
                    map.insert(k, kept);
                }
            }
        } else if let Some(clean) = strip_url(&name, value, removed)? {
            map.insert(k, clean);
        }
    }
    Ok(())
}

/// Checks a connection and strips its secrets, adding what was removed to `removed`.
pub fn check_connection(c: &mut Connection, removed: &mut Vec<String>) -> Result<(), FoldersError> {
    let f = "content.connection";
    let cs = format!("{f}.connection_string");
    text(&cs, &c.connection_string, MAX_TEXT_BYTES)?;
    text(&cs, &percent_decode_str(&c.connection_string).decode_utf8_lossy(), MAX_TEXT_BYTES)?;
    let (clean, gone) = strip_connection_string(&c.connection_string).map_err(|e| invalid(&cs, e.why()))?;
    c.connection_string = clean;
    removed.extend(gone.into_iter().map(|g| format!("{f}.{g}")));
    if c.hosts.len() > MAX_HOSTS {
        return Err(invalid(&format!("{f}.hosts"), &format!("has more than {MAX_HOSTS} entries")));
    }
    for (i, h) in c.hosts.iter_mut().enumerate() {
        let field = format!("{f}.hosts[{i}]");
        text(&field, h, MAX_HOST_BYTES)?;
        *h = strip_host(&field, h, removed)?;
    }
    for (name, value) in [
        ("replica_set", &c.replica_set),
        ("auth_mechanism", &c.auth_mechanism),
        ("username", &c.username),
        ("auth_database", &c.auth_database),
        ("ssh_host", &c.ssh_host),
        ("ssh_username", &c.ssh_username),
    ] {
        text(&format!("{f}.{name}"), value, MAX_TEXT_BYTES)?;
    }
    if !c.ssh_host.is_empty() {
        c.ssh_host = strip_host(&format!("{f}.ssh_host"), &c.ssh_host, removed)?;
    }
    strip_user(&format!("{f}.username"), &mut c.username, removed);
    strip_user(&format!("{f}.ssh_username"), &mut c.ssh_username, removed);
    if ReadPreference::try_from(c.read_preference).is_err() {
        return Err(invalid(&format!("{f}.read_preference"), &format!("has unknown value {}", c.read_preference)));
    }
    strip_map(&format!("{f}.tls_options"), &mut c.tls_options, removed)?;
    strip_map(&format!("{f}.options"), &mut c.options, removed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> (String, Vec<String>) {
        strip_connection_string(s).unwrap()
    }

    #[test]
    fn user_info_passwords_are_cut_exactly() {
        assert_eq!(
            strip("mongodb://%3Apw@h/"),
            ("mongodb://h/".to_owned(), vec!["connection_string.password".to_owned()])
        );
        assert_eq!(strip_connection_string("mongodb://:pw@h/"), Err(BadConnectionString::Unparseable));
        assert_eq!(strip("mongodb://u:pw@h1,h2:27018/db?tls=true").0, "mongodb://u@h1,h2:27018/db?tls=true");
        assert_eq!(strip("mongodb://u%3Apw@h").0, "mongodb://u@h");
        assert_eq!(strip("mongodb://us%40er:pw@h").0, "mongodb://us%40er@h");
        assert_eq!(strip("mongodb://us%40er@h"), ("mongodb://us%40er@h".to_owned(), vec![]));
        assert_eq!(strip(""), (String::new(), vec![]));
        assert_eq!(strip_connection_string("mongodb:/h"), Err(BadConnectionString::Scheme));
        assert_eq!(strip_connection_string("mongodbx://h"), Err(BadConnectionString::Scheme));
        assert_eq!(strip_connection_string("mongodb://h:0x/"), Err(BadConnectionString::Unparseable));
    }

    #[test]
    fn secret_options_and_properties_are_cut_exactly() {
        assert_eq!(
            strip("mongodb://h/?pass%77ord=x&tls=true&PWD=y"),
            (
                "mongodb://h/?tls=true".to_owned(),
                vec!["connection_string.password".to_owned(), "connection_string.PWD".to_owned()]
            )
        );
        let (s, r) = strip(
            "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=SERVICE_NAME:my%20svc,AWS%5FSESSION_TOKEN:abc",
        );
        assert_eq!(s, "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=SERVICE_NAME:my%20svc");
        assert_eq!(r, ["connection_string.authMechanismProperties.AWS_SESSION_TOKEN"]);
        assert_eq!(strip("mongodb://h/?authMechanismProperties=AWS_SESSION_TOKEN:abc").0, "mongodb://h/");
        let kept = "mongodb://h/?authMechanismProperties=SERVICE_NAME%3Aa,SERVICE_REALM:B";
        assert_eq!(strip(kept), (kept.to_owned(), vec![]));
    }

    fn connection(c: Connection) -> Result<(Connection, Vec<String>), tonic::Status> {
        let mut c = c;
        let mut removed = Vec::new();
        check_connection(&mut c, &mut removed).map_err(tonic::Status::from)?;
        Ok((c, removed))
    }

    fn refusal(c: Connection) -> String {
        let err = connection(c).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        err.message().to_owned()
    }

    #[test]
    fn hosts_lose_user_info_and_must_be_hosts() {
        let (c, removed) = connection(Connection {
            hosts: vec!["reader@db1:27017".into(), "u:p@db2".into()],
            ssh_host: "tunnel@bastion".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.hosts, c.ssh_host), (vec!["db1:27017".to_owned(), "db2".to_owned()], "bastion".to_owned()));
        assert_eq!(
            removed,
            [
                "content.connection.hosts[0].username",
                "content.connection.hosts[1].password",
                "content.connection.ssh_host.username"
            ]
        );
        let many = Connection { hosts: vec!["h".into(); MAX_HOSTS + 1], ..Default::default() };
        assert!(refusal(many).starts_with("content.connection.hosts has more than 100"));
        assert!(connection(Connection { hosts: vec!["h".into(); MAX_HOSTS], ..Default::default() }).is_ok());
        let long = Connection { hosts: vec!["a".repeat(MAX_HOST_BYTES + 1)], ..Default::default() };
        assert!(refusal(long).contains("longer than 1024 bytes"));
        let path = Connection { hosts: vec!["db1/admin".into()], ..Default::default() };
        assert!(refusal(path).starts_with("content.connection.hosts[0] must be a host"));
        let port = Connection { ssh_host: "bastion:ssh".into(), ..Default::default() };
        assert!(refusal(port).starts_with("content.connection.ssh_host must be a host"));
        let pref = Connection { read_preference: 42, ..Default::default() };
        assert!(refusal(pref).starts_with("content.connection.read_preference"));
    }

    #[test]
    fn option_maps_are_stripped_in_order_and_checked() {
        let (c, removed) = connection(Connection {
            options: [
                ("sshPassword".to_owned(), "a".to_owned()),
                ("authMechanismProperties".to_owned(), "SERVICE_NAME:x,AWS_SESSION_TOKEN:y".to_owned()),
                ("proxy".to_owned(), "socks5://u:p@proxy:1080/x?y".to_owned()),
                ("anonymous".to_owned(), "http://:p@proxy".to_owned()),
                ("plain".to_owned(), "http://u@proxy/a@b".to_owned()),
                ("uri".to_owned(), "mongodb://u:p@h/?password=x&tls=true".to_owned()),
            ]
            .into(),
            tls_options: [("tlsCAFile".to_owned(), "/ca.pem".to_owned())].into(),
            ..Default::default()
        })
        .unwrap();
        let o = &c.options;
        assert_eq!(o["authMechanismProperties"], "SERVICE_NAME:x");
        assert_eq!(o["proxy"], "socks5://u@proxy:1080/x?y");
        assert_eq!(o["anonymous"], "http://proxy");
        assert_eq!(o["plain"], "http://u@proxy/a@b");
        assert_eq!(o["uri"], "mongodb://u@h/?tls=true");
        assert!(!o.contains_key("sshPassword"));
        assert_eq!(
            removed,
            [
                "content.connection.options.anonymous.password",
                "content.connection.options.authMechanismProperties.AWS_SESSION_TOKEN",
                "content.connection.options.proxy.password",
                "content.connection.options.sshPassword",
                "content.connection.options.uri.password",
                "content.connection.options.uri.password",
            ]
        );
        let only_secret = [("authMechanismProperties".to_owned(), "AWS_SESSION_TOKEN:y".to_owned())].into();
        let (c, removed) = connection(Connection { options: only_secret, ..Default::default() }).unwrap();
        assert_eq!((c.options.len(), removed.len()), (0, 1));
        let unchanged = [("authMechanismProperties".to_owned(), "SERVICE_NAME:x".to_owned())].into();
        let (c, removed) = connection(Connection { options: unchanged, ..Default::default() }).unwrap();
        assert_eq!((c.options["authMechanismProperties"].as_str(), removed.len()), ("SERVICE_NAME:x", 0));
        let bad = [("uri".to_owned(), "mongodb://u:p@x@h".to_owned())].into();
        assert!(
            refusal(Connection { options: bad, ..Default::default() }).starts_with("content.connection.options.uri")
        );
    }

    #[test]
    fn key_material_in_map_keys_and_encoded_values_is_refused() {
        let der = "MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC";
        let encoded = der.replace('+', "%2B").replace('/', "%2F");
        let as_key = [(der.to_owned(), "x".to_owned())].into();
        let message = refusal(Connection { tls_options: as_key, ..Default::default() });
        assert_eq!(message, "content.connection.tls_options contains key material (base64 DER), which is never shared");
        let as_value = [("note".to_owned(), encoded.clone())].into();
        let message = refusal(Connection { options: as_value, ..Default::default() });
        assert_eq!(
            message,
            "content.connection.options[\"note\"] contains key material (base64 DER), which is never shared"
        );
        let in_uri = Connection { connection_string: format!("mongodb://h/?appName={encoded}"), ..Default::default() };
        assert!(refusal(in_uri).starts_with("content.connection.connection_string contains key material"));
    }
}
