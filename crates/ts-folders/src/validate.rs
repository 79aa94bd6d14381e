//! Item validation at the boundary: sizes, kinds, enum values, and the rule that connections
//! never carry secrets (passwords are stripped and reported; PEM blocks and key material are
//! refused, naming the field).

use std::collections::HashMap;

use prost::Message;
use tonic::Status;
use ts_proto::public::item_content::Content;
use ts_proto::public::{Connection, ItemContent, ItemKind, ReadPreference};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest ordinary text field, in bytes.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Longest body (query filter, pipeline, SQL, script, generic text), in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Connection-string and option names whose values are secrets.
const SECRET_OPTIONS: &[&str] = &[
    "password",
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "sshpassword",
    "sshpassphrase",
    "tlscertificatekeyfilepassword",
    "sslpemkeypassword",
    "awssessiontoken",
    "aws_session_token",
    "privatekey",
    "private_key",
];

/// A checked item, ready to seal.
#[derive(Debug)]
pub struct CheckedItem {
    /// Kind, from the content.
    pub kind: ItemKind,
    /// Trimmed name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The sanitized content, protobuf-encoded.
    pub content: Vec<u8>,
    /// Fields removed because they carried secrets.
    pub removed: Vec<String>,
}

fn invalid(field: &str, why: &str) -> Status {
    Status::invalid_argument(format!("{field} {why}"))
}

/// Checks a display name (folder or item).
pub fn check_name(field: &str, raw: &str) -> Result<String, Status> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(field, &format!("is longer than {MAX_NAME_CHARS} characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(field, "contains control characters"));
    }
    no_key_material(field, name)?;
    Ok(name.to_owned())
}

fn no_key_material(field: &str, value: &str) -> Result<(), Status> {
    let upper = value.to_ascii_uppercase();
    let found = upper.contains("-----BEGIN")
        || upper.contains("PRIVATE KEY")
        || upper.contains("PUTTY-USER-KEY-FILE")
        || upper.contains("OPENSSH PRIVATE");
    if found {
        return Err(invalid(field, "contains a PEM block or key material, which is never shared"));
    }
    Ok(())
}

fn text(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(invalid(field, &format!("is longer than {max} bytes")));
    }
    no_key_material(field, value)
}

fn is_secret_option(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_OPTIONS.contains(&n.as_str())
}

/// Removes secrets from a connection string: the password in the user info, and secret
/// query options. Returns the cleaned string and the names of what was removed.
pub fn strip_connection_string(raw: &str) -> (String, Vec<String>) {
    let mut removed = Vec::new();
    let Some((scheme, rest)) = raw.split_once("://") else { return (raw.to_owned(), removed) };
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], &before_query[i..]),
        None => (before_query, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _password)) => {
                removed.push("connection_string.password".to_owned());
                format!("{user}@{hosts}")
            }
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .filter(|kv| {
                let key = kv.split_once('=').map_or(*kv, |(k, _)| k);
                let secret = is_secret_option(key)
                    || (key.eq_ignore_ascii_case("authMechanismProperties")
                        && kv.to_ascii_uppercase().contains("AWS_SESSION_TOKEN"));
                if secret {
                    removed.push(format!("connection_string.{key}"));
                }
                !secret
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(&q);
    }
    (out, removed)
}

fn strip_map(field: &str, map: &mut HashMap<String, String>, removed: &mut Vec<String>) -> Result<(), Status> {
    let secret: Vec<String> = map.keys().filter(|k| is_secret_option(k)).cloned().collect();
    for k in secret {
        map.remove(&k);
        removed.push(format!("{field}.{k}"));
    }
    for (k, v) in map.iter() {
        text(&format!("{field}[{k:?}]"), k, MAX_TEXT_BYTES)?;
        text(&format!("{field}[{k:?}]"), v, MAX_TEXT_BYTES)?;
    }
    Ok(())
}

fn check_connection(c: &mut Connection, removed: &mut Vec<String>) -> Result<(), Status> {
    let f = "content.connection";
    text(&format!("{f}.connection_string"), &c.connection_string, MAX_TEXT_BYTES)?;
    let (clean, gone) = strip_connection_string(&c.connection_string);
    c.connection_string = clean;
    removed.extend(gone.into_iter().map(|g| format!("{f}.{g}")));
    if c.hosts.len() > 100 {
        return Err(invalid(&format!("{f}.hosts"), "has more than 100 entries"));
    }
    for h in &c.hosts {
        text(&format!("{f}.hosts"), h, 1024)?;
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
    if ReadPreference::try_from(c.read_preference).is_err() {
        return Err(invalid(&format!("{f}.read_preference"), &format!("has unknown value {}", c.read_preference)));
    }
    strip_map(&format!("{f}.tls_options"), &mut c.tls_options, removed)?;
    strip_map(&format!("{f}.options"), &mut c.options, removed)?;
    Ok(())
}

/// Checks and sanitizes an item for storage.
pub fn check_item(name: &str, description: &str, content: Option<ItemContent>) -> Result<CheckedItem, Status> {
    let name = check_name("name", name)?;
    text("description", description, MAX_TEXT_BYTES)?;
    let mut content = content.ok_or_else(|| invalid("content", "is required"))?;
    let mut removed = Vec::new();
    let kind = match content.content.as_mut() {
        None => {
            return Err(invalid(
                "content",
                "must set one of connection, query, aggregation, sql_query, script or generic",
            ));
        }
        Some(Content::Connection(c)) => {
            check_connection(c, &mut removed)?;
            ItemKind::Connection
        }
        Some(Content::Query(q)) => {
            for (n, v) in [
                ("database", &q.database),
                ("collection", &q.collection),
                ("projection", &q.projection),
                ("sort", &q.sort),
            ] {
                text(&format!("content.query.{n}"), v, MAX_TEXT_BYTES)?;
            }
            text("content.query.filter", &q.filter, MAX_BODY_BYTES)?;
            ItemKind::Query
        }
        Some(Content::Aggregation(a)) => {
            text("content.aggregation.database", &a.database, MAX_TEXT_BYTES)?;
            text("content.aggregation.collection", &a.collection, MAX_TEXT_BYTES)?;
            text("content.aggregation.pipeline", &a.pipeline, MAX_BODY_BYTES)?;
            ItemKind::Aggregation
        }
        Some(Content::SqlQuery(s)) => {
            text("content.sql_query.database", &s.database, MAX_TEXT_BYTES)?;
            text("content.sql_query.sql", &s.sql, MAX_BODY_BYTES)?;
            ItemKind::SqlQuery
        }
        Some(Content::Script(s)) => {
            text("content.script.language", &s.language, 64)?;
            text("content.script.body", &s.body, MAX_BODY_BYTES)?;
            ItemKind::Script
        }
        Some(Content::Generic(g)) => {
            text("content.generic.text", &g.text, MAX_BODY_BYTES)?;
            ItemKind::Generic
        }
    };
    Ok(CheckedItem { kind, name, description: description.to_owned(), content: content.encode_to_vec(), removed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_secret_options_are_stripped() {
        let (s, r) =
            strip_connection_string("mongodb://alice:s3cr3t@db1:27017,db2/admin?replicaSet=rs0&password=x&tls=true");
        assert_eq!(s, "mongodb://alice@db1:27017,db2/admin?replicaSet=rs0&tls=true");
        assert_eq!(r, ["connection_string.password", "connection_string.password"]);
        let (s, r) = strip_connection_string(
            "mongodb+srv://bob@cluster0.example.net/?authMechanismProperties=AWS_SESSION_TOKEN:abc",
        );
        assert_eq!(s, "mongodb+srv://bob@cluster0.example.net/");
        assert_eq!(r.len(), 1);
        let (s, r) = strip_connection_string("mongodb://db1/");
        assert_eq!((s.as_str(), r.len()), ("mongodb://db1/", 0));
    }

    #[test]
    fn key_material_is_refused_by_field() {
        let mut c = Connection { username: "-----BEGIN RSA PRIVATE KEY-----".into(), ..Default::default() };
        let err = check_connection(&mut c, &mut Vec::new()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().starts_with("content.connection.username"), "{}", err.message());
        let mut c = Connection { read_preference: 42, ..Default::default() };
        assert!(check_connection(&mut c, &mut Vec::new()).unwrap_err().message().contains("read_preference"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "  ").is_err());
        assert!(check_name("name", &"x".repeat(201)).is_err());
        assert!(check_name("name", "tab\there").is_err());
        assert_eq!(check_name("name", " Orders ").unwrap(), "Orders");
    }
}
