//! Item content and connection strings (`ts_folders::validate::check_item`), the one place
//! where a password pasted into a shared connection must be caught. Only the public entry
//! points `check_item` and `check_name` are called, so the scrubber's internals may change.

use std::collections::HashMap;

use prost::Message;
use ts_folders::validate::{check_item, check_name};
use ts_proto::public::item_content::Content;
use ts_proto::public::{Connection, CreateItemRequest, ItemContent, ItemKind};

/// What `check_item` refuses anywhere in an item (upper-cased): PEM blocks and key files.
const KEY_MARKERS: &[&str] = &["-----BEGIN", "PRIVATE KEY", "PUTTY-USER-KEY-FILE", "OPENSSH PRIVATE"];

fn kind_of(content: &ItemContent) -> Option<ItemKind> {
    Some(match content.content.as_ref()? {
        Content::Connection(_) => ItemKind::Connection,
        Content::Query(_) => ItemKind::Query,
        Content::Aggregation(_) => ItemKind::Aggregation,
        Content::SqlQuery(_) => ItemKind::SqlQuery,
        Content::Script(_) => ItemKind::Script,
        Content::Generic(_) => ItemKind::Generic,
    })
}

/// Any item: checking never panics, and an accepted item is a fixed point: its sanitized
/// content decodes, has the kind reported, carries no key material, and is accepted again
/// unchanged with nothing more removed. Returns the sanitized content, if accepted.
pub fn check_fields(name: &str, description: &str, content: Option<ItemContent>) -> Option<ItemContent> {
    let _ = check_name("name", name);
    let item = check_item(name, description, content).ok()?;
    let clean = ItemContent::decode(item.content.as_slice()).expect("sanitized content decodes");
    assert_eq!(kind_of(&clean), Some(item.kind), "the kind follows the content");
    assert_eq!(check_name("name", &item.name).ok().as_ref(), Some(&item.name), "a checked name is checked again");
    // Debug quotes and escapes every string, so a marker found in it lies inside one field.
    let shown = format!("{:?} {:?} {clean:?}", item.name, item.description).to_ascii_uppercase();
    for marker in KEY_MARKERS {
        assert!(!shown.contains(marker), "accepted an item carrying {marker}");
    }
    let again = check_item(&item.name, &item.description, Some(clean.clone())).expect("a sanitized item is accepted");
    assert_eq!(again.content, item.content, "sanitizing is idempotent");
    assert!(again.removed.is_empty(), "sanitizing again removed {:?}", again.removed);
    Some(clean)
}

/// A create-item request from arbitrary bytes, checked as the folders service checks it.
pub fn request_bytes(bytes: &[u8]) {
    if let Ok(req) = CreateItemRequest::decode(bytes) {
        check_fields(&req.name, &req.description, req.content);
    }
}

/// The connection string an accepted connection item was reduced to.
fn clean_connection_string(content: &ItemContent) -> &str {
    match &content.content {
        Some(Content::Connection(c)) => &c.connection_string,
        _ => panic!("a connection item became another kind"),
    }
}

/// A connection item holding just `connection_string`.
pub fn connection(connection_string: &str) -> ItemContent {
    let c = Connection { connection_string: connection_string.to_owned(), ..Default::default() };
    ItemContent { content: Some(Content::Connection(c)) }
}

/// The password of a `scheme://user:password@hosts...` string, read independently of the
/// scrubber, if it is unambiguous: the user info ends at the last `@` before the first `/`,
/// `?` or `#`, and the password occurs nowhere else in the string.
pub fn userinfo_password(s: &str) -> Option<&str> {
    let (_, rest) = s.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (password.len() >= 4 && s.matches(password).count() == 1).then_some(password)
}

/// Arbitrary text as a connection string: the item properties hold, and an unambiguous
/// password in its user info never survives.
pub fn connection_string(s: &str) {
    let Some(clean) = check_fields("connection", "", Some(connection(s))) else { return };
    if let Some(password) = userinfo_password(s) {
        let kept = clean_connection_string(&clean);
        assert!(!kept.contains(password), "password {password:?} survived in {kept:?}");
    }
}

/// A well-formed MongoDB connection string with `password` planted in its user info, in the
/// secret query option `option`, and in the `password` and `sshPassword` options: the item is
/// accepted, the password is gone from everything stored, and its removal is reported.
pub fn planted_password(user: &str, password: &str, hosts: &[String], db: &str, option: &str) {
    let s = format!("mongodb://{user}:{password}@{}/{db}?replicaSet=rs0&{option}={password}&tls=true", hosts.join(","));
    let options = HashMap::from([
        ("password".to_owned(), password.to_owned()),
        ("sshPassword".to_owned(), password.to_owned()),
        ("appName".to_owned(), "teamshare".to_owned()),
    ]);
    let c = Connection { connection_string: s.clone(), options, username: user.to_owned(), ..Default::default() };
    let content = ItemContent { content: Some(Content::Connection(c)) };
    let item = check_item("orders", "", Some(content)).expect("a connection with a password is accepted, stripped");
    let clean = ItemContent::decode(item.content.as_slice()).expect("sanitized content decodes");
    assert!(!format!("{clean:?}").contains(password), "password {password:?} survived in {clean:?} from {s:?}");
    assert!(item.removed.len() >= 4, "removal of {s:?} reported as {:?}", item.removed);
}

/// The fuzz target: `data` as a create-item request, and as a connection string.
pub fn fuzz(data: &[u8]) {
    request_bytes(data);
    if let Ok(s) = std::str::from_utf8(data) {
        connection_string(s);
    }
}
