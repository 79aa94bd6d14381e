//! What the CLI prints: a line or a table for people, one JSON document for scripts, and
//! errors with the server's reason and the field it names.

use std::io::IsTerminal;

use serde_json::{Value, json};
use ts_client::proto;

/// The output mode of one run.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON for scripts.
    pub json: bool,
}

impl Out {
    /// Prints `value` as JSON, or `human` for people.
    pub fn show(&self, value: Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// Prints rows as a JSON array, or as aligned columns under `headers`.
    pub fn table(&self, headers: &[&str], rows: Vec<(Value, Vec<String>)>) {
        if self.json {
            println!("{}", Value::Array(rows.into_iter().map(|(v, _)| v).collect()));
            return;
        }
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for (_, cells) in &rows {
            for (w, c) in widths.iter_mut().zip(cells) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<String>| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        };
        println!("{}", line(headers.iter().map(|h| h.to_uppercase()).collect()));
        for (_, cells) in rows {
            println!("{}", line(cells));
        }
    }
}

/// Progress of a long listing on stderr, when stderr is a terminal.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    count: usize,
    shown: bool,
}

impl Progress {
    /// Progress of fetching `what`.
    pub fn new(what: &'static str) -> Self {
        Progress { what, count: 0, shown: std::io::stderr().is_terminal() }
    }

    /// One more entry fetched.
    pub fn tick(&mut self) {
        self.count += 1;
        if self.shown && self.count.is_multiple_of(100) {
            eprint!("\rfetched {} {}…", self.count, self.what);
        }
    }

    /// The listing is complete.
    pub fn done(&self) {
        if self.shown && self.count >= 100 {
            eprintln!("\rfetched {} {}.  ", self.count, self.what);
        }
    }
}

/// An error for people: the server's message, its reason and the fields it names.
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(ts_client::Error::Api(api)) = e.downcast_ref::<ts_client::Error>() {
        let mut s = format!("{} ({:?}", api.message, api.code);
        if !api.reason_text.is_empty() {
            s.push_str(&format!(", {}", api.reason_text));
        }
        s.push(')');
        for v in &api.violations {
            s.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
        if let Some(wait) = api.retry_after {
            s.push_str(&format!("\n  retry in {} s", wait.as_secs().max(1)));
        }
        return s;
    }
    format!("{e:#}")
}

/// A timestamp as RFC 3339 (UTC), or empty.
pub fn time(t: &Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    ::time::OffsetDateTime::from_unix_timestamp(t.seconds)
        .ok()
        .and_then(|d| d.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// An access level as people write it.
pub fn level(raw: i32) -> &'static str {
    match proto::AccessLevel::try_from(raw) {
        Ok(proto::AccessLevel::View) => "view",
        Ok(proto::AccessLevel::Edit) => "edit",
        Ok(proto::AccessLevel::Manage) => "manage",
        _ => "none",
    }
}

/// An item kind as people write it.
pub fn kind(raw: i32) -> &'static str {
    match proto::ItemKind::try_from(raw) {
        Ok(proto::ItemKind::Connection) => "connection",
        Ok(proto::ItemKind::Query) => "query",
        Ok(proto::ItemKind::Aggregation) => "aggregation",
        Ok(proto::ItemKind::SqlQuery) => "sql-query",
        Ok(proto::ItemKind::Script) => "script",
        Ok(proto::ItemKind::Generic) => "generic",
        _ => "unknown",
    }
}

/// A user as JSON.
pub fn user(u: &proto::User) -> Value {
    json!({ "id": u.id, "email": u.email, "license_id": u.license_id, "email_verified": u.email_verified, "sharing_allowed": u.sharing_allowed })
}

/// A folder as JSON and as a table row.
pub fn folder(f: &proto::Folder) -> (Value, Vec<String>) {
    let v = json!({ "id": f.id, "name": f.name, "my_access": level(f.my_access), "created_by_email": f.created_by_email,
        "create_time": time(&f.create_time), "update_time": time(&f.update_time) });
    (v, vec![f.id.clone(), f.name.clone(), level(f.my_access).into(), f.created_by_email.clone()])
}

/// A member as JSON and as a table row.
pub fn member(m: &proto::Member) -> (Value, Vec<String>) {
    let v =
        json!({ "user_id": m.user_id, "email": m.email, "access": level(m.access), "join_time": time(&m.join_time) });
    (v, vec![m.user_id.clone(), m.email.clone(), level(m.access).into()])
}

/// An item summary as JSON and as a table row.
pub fn summary(s: &proto::ItemSummary) -> (Value, Vec<String>) {
    let v = json!({ "id": s.id, "folder_id": s.folder_id, "kind": kind(s.kind), "name": s.name, "version": s.version,
        "shared_by_email": s.shared_by_email, "updated_by_email": s.updated_by_email,
        "create_time": time(&s.create_time), "update_time": time(&s.update_time) });
    (v, vec![s.id.clone(), kind(s.kind).into(), s.name.clone(), s.version.to_string(), s.updated_by_email.clone()])
}

/// An item with its content as JSON.
pub fn item(i: &proto::Item) -> Value {
    let summary = i.summary.as_ref().map(|s| summary(s).0).unwrap_or(Value::Null);
    json!({ "summary": summary, "description": i.description, "content": content(i.content.as_ref()) })
}

fn content(c: Option<&proto::ItemContent>) -> Value {
    use proto::item_content::Content;
    match c.and_then(|c| c.content.as_ref()) {
        Some(Content::Connection(c)) => json!({ "connection": {
            "connection_string": c.connection_string, "hosts": c.hosts, "replica_set": c.replica_set,
            "auth_mechanism": c.auth_mechanism, "username": c.username, "auth_database": c.auth_database, "tls": c.tls,
            "tls_options": c.tls_options, "ssh_host": c.ssh_host, "ssh_username": c.ssh_username,
            "read_preference": c.read_preference, "options": c.options } }),
        Some(Content::Query(q)) => {
            json!({ "query": { "database": q.database, "collection": q.collection, "filter": q.filter,
            "projection": q.projection, "sort": q.sort, "limit": q.limit } })
        }
        Some(Content::Aggregation(a)) => {
            json!({ "aggregation": { "database": a.database, "collection": a.collection, "pipeline": a.pipeline } })
        }
        Some(Content::SqlQuery(q)) => json!({ "sql_query": { "database": q.database, "sql": q.sql } }),
        Some(Content::Script(s)) => json!({ "script": { "language": s.language, "body": s.body } }),
        Some(Content::Generic(g)) => json!({ "generic": { "text": g.text } }),
        None => Value::Null,
    }
}

/// An invitation as JSON and as a table row.
pub fn invitation(i: &proto::Invitation) -> (Value, Vec<String>) {
    let state = proto::InvitationState::try_from(i.state)
        .map(|s| s.as_str_name().trim_start_matches("INVITATION_STATE_").to_lowercase())
        .unwrap_or_default();
    let v = json!({ "id": i.id, "folder_id": i.folder_id, "folder_name": i.folder_name, "invitee_email": i.invitee_email,
        "inviter_email": i.inviter_email, "access": level(i.access), "state": state,
        "create_time": time(&i.create_time), "expire_time": time(&i.expire_time) });
    (
        v,
        vec![
            i.id.clone(),
            i.folder_name.clone(),
            i.invitee_email.clone(),
            i.inviter_email.clone(),
            level(i.access).into(),
            state,
        ],
    )
}

/// An audit event as JSON and as a table row.
pub fn event(e: &proto::AuditEvent) -> (Value, Vec<String>) {
    let v = json!({ "id": e.id, "time": time(&e.time), "actor_email": e.actor_email, "folder_id": e.folder_id,
        "action": e.action, "status_code": e.status_code, "request_id": e.request_id, "license_id": e.license_id });
    (v, vec![time(&e.time), e.actor_email.clone(), e.action.clone(), e.status_code.clone()])
}
