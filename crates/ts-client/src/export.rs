//! A person's data export (`PrivacyService/ExportMyData`) as one JSON document: the account,
//! then one array per part (memberships, invitations, items, sessions, audit events), then the
//! summary. Each message is written in the proto3 JSON mapping with the proto's own field names
//! (which every proto3 JSON parser accepts), every field present: enums by name, 64-bit
//! integers as strings, timestamps in RFC 3339. The file holds personal data: it is written
//! readable by its owner only (mode 0600), through a temporary file in the same directory that
//! is renamed over the target, so an interrupted export never leaves a partial document.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::Error;
use crate::proto::{self, export_my_data_response::Part, item_content::Content};

/// One part of an export, as it streams: exactly one of the account (first), a membership,
/// an invitation, an item, a session, an audit event, or the summary (last).
pub type ExportPart = Part;

/// An export being assembled part by part ([`ExportDocument::push`]), then written as one JSON
/// document ([`ExportDocument::write`]); [`crate::Client::export_my_data_to`] does both.
#[derive(Debug, Clone, Default)]
pub struct ExportDocument {
    account: Option<Value>,
    memberships: Vec<Value>,
    invitations: Vec<Value>,
    items: Vec<Value>,
    sessions: Vec<Value>,
    audit_events: Vec<Value>,
    summary: Option<proto::ExportSummary>,
}

impl ExportDocument {
    /// An empty export.
    pub fn new() -> Self {
        ExportDocument::default()
    }

    /// Adds one part.
    pub fn push(&mut self, part: &ExportPart) {
        match part {
            Part::Account(a) => self.account = Some(account(a)),
            Part::Membership(m) => self.memberships.push(membership(m)),
            Part::Invitation(i) => self.invitations.push(exported_invitation(i)),
            Part::Item(i) => self.items.push(exported_item(i)),
            Part::Session(s) => self.sessions.push(session(s)),
            Part::AuditEvent(e) => self.audit_events.push(audit_event(e)),
            Part::Summary(s) => self.summary = Some(*s),
        }
    }

    /// The summary, once it arrived (it is the last part).
    pub fn summary(&self) -> Option<&proto::ExportSummary> {
        self.summary.as_ref()
    }

    /// Whether the export is whole: the account, the summary, and as many parts of each kind as
    /// the summary counts. An error names what is missing.
    pub fn check_complete(&self) -> Result<&proto::ExportSummary, Error> {
        let summary = self.summary.as_ref().ok_or(Error::Incomplete("the export's summary"))?;
        if self.account.is_none() {
            return Err(Error::Incomplete("the export's account"));
        }
        let counted = [
            (summary.memberships, self.memberships.len()),
            (summary.invitations, self.invitations.len()),
            (summary.items, self.items.len()),
            (summary.sessions, self.sessions.len()),
            (summary.audit_events, self.audit_events.len()),
        ];
        if counted.iter().any(|&(want, got)| usize::try_from(want).ok() != Some(got)) {
            return Err(Error::Incomplete("every part the export's summary counts"));
        }
        Ok(summary)
    }

    /// The document: `{"account": {…}, "memberships": […], "invitations": […], "items": […],
    /// "sessions": […], "audit_events": […], "summary": {…}}`.
    pub fn to_json(&self) -> Value {
        json!({
            "account": self.account.clone().unwrap_or(Value::Null),
            "memberships": self.memberships,
            "invitations": self.invitations,
            "items": self.items,
            "sessions": self.sessions,
            "audit_events": self.audit_events,
            "summary": self.summary.as_ref().map_or(Value::Null, summary),
        })
    }

    /// Writes the document to `path` (pretty-printed; mode 0600 on Unix; a temporary file in
    /// the same directory renamed over it). Refuses an export that is not whole
    /// ([`ExportDocument::check_complete`]).
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        self.check_complete()?;
        let mut bytes =
            serde_json::to_vec_pretty(&self.to_json()).map_err(|e| Error::Store(format!("{}: {e}", path.display())))?;
        bytes.push(b'\n');
        crate::session::write_private(path, &bytes)
    }
}

/// The summary as JSON.
fn summary(s: &proto::ExportSummary) -> Value {
    json!({
        "export_time": time(s.export_time.as_ref()),
        "memberships": s.memberships,
        "invitations": s.invitations,
        "items": s.items,
        "sessions": s.sessions,
        "audit_events": s.audit_events,
    })
}

fn time(t: Option<&prost_types::Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

/// An enum value by its proto name; a value this SDK does not know as its number (as proto3
/// JSON writes unknown enum values).
fn enum_name<E: TryFrom<i32>>(raw: i32, name: impl Fn(&E) -> &'static str) -> Value {
    E::try_from(raw).map_or(json!(raw), |e| json!(name(&e)))
}

fn access(raw: i32) -> Value {
    enum_name(raw, proto::AccessLevel::as_str_name)
}

fn string_map(m: &std::collections::HashMap<String, String>) -> Value {
    json!(m.iter().collect::<BTreeMap<_, _>>())
}

fn user(u: &proto::User) -> Value {
    json!({
        "id": u.id,
        "email": u.email,
        "license_id": u.license_id,
        "email_verified": u.email_verified,
        "sharing_allowed": u.sharing_allowed,
    })
}

fn account(a: &proto::ExportedAccount) -> Value {
    json!({
        "user": a.user.as_ref().map_or(Value::Null, user),
        "create_time": time(a.create_time.as_ref()),
        "verify_time": time(a.verify_time.as_ref()),
        "unverified_reason": a.unverified_reason,
        "license_lists_email": a.license_lists_email,
        "license_admin": a.license_admin,
    })
}

fn membership(m: &proto::ExportedMembership) -> Value {
    json!({
        "folder_id": m.folder_id,
        "folder_name": m.folder_name,
        "access": access(m.access),
        "join_time": time(m.join_time.as_ref()),
        "created_by_caller": m.created_by_caller,
    })
}

fn invitation(i: &proto::Invitation) -> Value {
    json!({
        "id": i.id,
        "folder_id": i.folder_id,
        "folder_name": i.folder_name,
        "invitee_email": i.invitee_email,
        "inviter_email": i.inviter_email,
        "access": access(i.access),
        "state": enum_name(i.state, proto::InvitationState::as_str_name),
        "create_time": time(i.create_time.as_ref()),
        "expire_time": time(i.expire_time.as_ref()),
    })
}

fn exported_invitation(i: &proto::ExportedInvitation) -> Value {
    json!({
        "invitation": i.invitation.as_ref().map_or(Value::Null, invitation),
        "direction": enum_name(i.direction, proto::InvitationDirection::as_str_name),
    })
}

fn item_summary(s: &proto::ItemSummary) -> Value {
    json!({
        "id": s.id,
        "folder_id": s.folder_id,
        "kind": enum_name(s.kind, proto::ItemKind::as_str_name),
        "name": s.name,
        "version": s.version.to_string(),
        "shared_by_email": s.shared_by_email,
        "updated_by_email": s.updated_by_email,
        "create_time": time(s.create_time.as_ref()),
        "update_time": time(s.update_time.as_ref()),
    })
}

fn content(c: Option<&proto::ItemContent>) -> Value {
    let Some(c) = c else { return Value::Null };
    let Some(content) = c.content.as_ref() else { return json!({}) };
    match content {
        Content::Connection(c) => json!({ "connection": {
            "connection_string": c.connection_string,
            "hosts": c.hosts,
            "replica_set": c.replica_set,
            "auth_mechanism": c.auth_mechanism,
            "username": c.username,
            "auth_database": c.auth_database,
            "tls": c.tls,
            "tls_options": string_map(&c.tls_options),
            "ssh_host": c.ssh_host,
            "ssh_username": c.ssh_username,
            "read_preference": enum_name(c.read_preference, proto::ReadPreference::as_str_name),
            "options": string_map(&c.options),
        } }),
        Content::Query(q) => json!({ "query": {
            "database": q.database,
            "collection": q.collection,
            "filter": q.filter,
            "projection": q.projection,
            "sort": q.sort,
            "limit": q.limit,
        } }),
        Content::Aggregation(a) => json!({ "aggregation": {
            "database": a.database,
            "collection": a.collection,
            "pipeline": a.pipeline,
        } }),
        Content::SqlQuery(q) => json!({ "sql_query": { "database": q.database, "sql": q.sql } }),
        Content::Script(s) => json!({ "script": { "language": s.language, "body": s.body } }),
        Content::Generic(g) => json!({ "generic": { "text": g.text } }),
    }
}

fn exported_item(i: &proto::ExportedItem) -> Value {
    let item = i.item.as_ref().map_or(Value::Null, |item| {
        let mut m = Map::new();
        m.insert("summary".into(), item.summary.as_ref().map_or(Value::Null, item_summary));
        m.insert("description".into(), json!(item.description));
        m.insert("content".into(), content(item.content.as_ref()));
        Value::Object(m)
    });
    json!({
        "item": item,
        "shared_by_caller": i.shared_by_caller,
        "last_edited_by_caller": i.last_edited_by_caller,
    })
}

fn session(s: &proto::ExportedSession) -> Value {
    json!({
        "session_id": s.session_id,
        "create_time": time(s.create_time.as_ref()),
        "expire_time": time(s.expire_time.as_ref()),
        "revoked": s.revoked,
        "current": s.current,
        "revoke_time": time(s.revoke_time.as_ref()),
    })
}

fn audit_event(e: &proto::AuditEvent) -> Value {
    json!({
        "id": e.id,
        "time": time(e.time.as_ref()),
        "actor_email": e.actor_email,
        "folder_id": e.folder_id,
        "action": e.action,
        "status_code": e.status_code,
        "request_id": e.request_id,
        "license_id": e.license_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<ExportPart> {
        let at = Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 });
        vec![
            Part::Account(proto::ExportedAccount {
                user: Some(proto::User { id: "u1".into(), email: "a@example.com".into(), ..Default::default() }),
                create_time: at,
                ..Default::default()
            }),
            Part::Membership(proto::ExportedMembership {
                folder_id: "f1".into(),
                access: proto::AccessLevel::Manage as i32,
                ..Default::default()
            }),
            Part::Item(proto::ExportedItem {
                item: Some(proto::Item {
                    summary: Some(proto::ItemSummary { version: 3, kind: 99, ..Default::default() }),
                    content: Some(proto::ItemContent {
                        content: Some(Content::Generic(proto::Generic { text: "hello".into() })),
                    }),
                    ..Default::default()
                }),
                shared_by_caller: true,
                ..Default::default()
            }),
            Part::Summary(proto::ExportSummary { export_time: at, memberships: 1, items: 1, ..Default::default() }),
        ]
    }

    #[test]
    fn an_export_is_one_document_in_the_proto3_json_mapping() {
        let mut doc = ExportDocument::new();
        for p in &parts() {
            doc.push(p);
        }
        assert!(doc.check_complete().is_ok());
        let v = doc.to_json();
        assert_eq!(v["account"]["user"]["email"], "a@example.com");
        assert_eq!(v["account"]["create_time"], "2023-11-14T22:13:20Z");
        assert_eq!(v["memberships"][0]["access"], "ACCESS_LEVEL_MANAGE");
        assert_eq!(v["items"][0]["item"]["summary"]["version"], "3");
        assert_eq!(v["items"][0]["item"]["summary"]["kind"], 99);
        assert_eq!(v["items"][0]["item"]["content"]["generic"]["text"], "hello");
        assert_eq!(v["sessions"], json!([]));
        assert_eq!(v["summary"]["items"], 1);
    }

    #[test]
    fn an_export_that_is_not_whole_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("export.json");
        let mut doc = ExportDocument::new();
        let all = parts();
        for p in &all[..all.len() - 1] {
            doc.push(p);
        }
        assert!(doc.write(&path).is_err());
        assert!(!path.exists());
        // The summary counts a membership that never came.
        doc.push(&Part::Summary(proto::ExportSummary { memberships: 2, items: 1, ..Default::default() }));
        assert!(doc.write(&path).is_err());
        doc.push(&all[all.len() - 1]);
        doc.write(&path).unwrap();
        let read: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(read["summary"]["memberships"], 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
