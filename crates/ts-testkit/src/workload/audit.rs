//! The consistency audit, after a run (nothing in flight).
//!
//! First the unknown outcomes are settled: every create whose outcome is not known is sent
//! again with its `request_id` (AIP-155: it returns what the first attempt made, or makes it
//! now), every item whose last update's outcome is not known is read back, every membership
//! whose last change's outcome is not known is looked up (ListMembers).
//!
//! (a) Through the API, as each user: every folder the user is expected in is listed by
//! ListFolders, none it was removed from; every acknowledged item is readable (GetItem
//! decrypts with the folder's data key; a failure is "unreadable") and holds its last
//! acknowledged value or a later attempted one; ListItems lists every acknowledged item and
//! no two of one name (names carry unique markers: a duplicated create); every membership is
//! as expected (present with an acceptable access, or absent after a removal).
//!
//! (b) In the database (the services' stored documents, read as plain BSON; field names from
//! crates/ts-folders/src/store/*.rs and crates/ts-invitations/src/store.rs):
//! - `folders` {`_id`, `managers`, `items`, `created_by_email`}: the workload's folders (in
//!   the ledger, or created by a workload user);
//! - `members` {`folder_id`, `user_id`, `access` (AccessLevel number)};
//! - `items` {`folder_id`};
//! - `invitations` {`folder_id`, `invitee_email`, `state` ("pending", "accepted", …)}.
//!
//! Checked: every folder has a member with MANAGE; no accepted invitation's invitee lacks a
//! membership of its folder (unless the workload attempted to remove that member after the
//! accept); and the counters equal what they count. The counters the stores keep are the
//! folder's `managers` (MANAGE members, set by every membership transaction) and `items`
//! (items held, kept by the item-slot transactions for the per-folder cap). Invitations keep
//! no counts: the pending caps are counted from the documents inside a transaction, and
//! `invitation_counters.touch` is a conflict marker, not a count (not checked).
//!
//! Violations name ids only, never tokens or item plaintext.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use bson::{Bson, Document, doc};
use futures::TryStreamExt;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::{AccessLevel, GetItemRequest, ListFoldersRequest, ListItemsRequest, PageRequest};

use super::Workload;
use super::call::RETRY;
use super::ledger::MemberRec;
use super::mix::{listing_problems, value_of};
use super::stats::{Stats, Verdict};

/// What the audit found.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Every inconsistency, readable, naming ids only; empty when consistent.
    pub violations: Vec<String>,
    /// Acknowledged items read back.
    pub items_checked: u64,
    /// Folders checked (listings, members, database counters).
    pub folders_checked: u64,
    /// Memberships checked against the ledger.
    pub memberships_checked: u64,
    /// Invitation documents checked in the database.
    pub invitations_checked: u64,
}

impl Audit {
    /// No violation.
    pub fn is_consistent(&self) -> bool {
        self.violations.is_empty()
    }
}

impl Workload {
    /// The consistency audit (module doc): settles unknown outcomes, then checks the ledger
    /// through the API as each user and in the database. Returns the violations (empty when
    /// consistent) and what was checked; an error only when the database cannot be read.
    pub async fn audit(&self) -> anyhow::Result<Audit> {
        let mut audit = Audit::default();
        let mut stats = Stats::new();
        self.settle(&mut stats, &mut audit).await;
        self.audit_api(&mut stats, &mut audit).await;
        self.audit_database(&mut audit).await?;
        Ok(audit)
    }

    /// Settles what a fault left unknown.
    async fn settle(&self, stats: &mut Stats, audit: &mut Audit) {
        let pending = self.with(|l| {
            l.pending.iter_mut().for_each(|p| p.busy = true);
            l.pending.clone()
        });
        for p in pending {
            let verdict = match &p.item {
                Some((folder, value)) => self.send_item_create(p.owner, &p.request_id, folder, value, stats).await,
                None => self.send_folder_create(p.owner, &p.request_id, &p.folder_name, stats).await,
            };
            if !matches!(verdict, Verdict::Ok) {
                audit.violations.push(format!("a create of user {} could not be settled: {}", p.owner, show(&verdict)));
            }
        }
        let unknown: Vec<(String, String, usize)> = self.with(|l| {
            l.items
                .iter()
                .filter(|(_, i)| i.version.is_none())
                .map(|(id, i)| (id.clone(), i.folder.clone(), i.owner))
                .collect()
        });
        for (id, folder, owner) in unknown {
            if let Err(verdict) = self.read_back(owner, &id, &folder, stats).await {
                audit.violations.push(format!("item {id} in folder {folder}: {}", show(&verdict)));
            }
        }
        let folders: BTreeSet<String> =
            self.with(|l| l.members.iter().filter(|(_, m)| m.present.is_none()).map(|((f, _), _)| f.clone()).collect());
        for folder in folders {
            let Some(owner) = self.with(|l| l.folders.get(&folder).map(|f| f.owner)) else { continue };
            match self.members_of(owner, &folder, stats).await {
                Ok((listed, _)) => self.with(|l| {
                    for (u, user) in self.users.iter().enumerate() {
                        if let Some(m) = l.members.get_mut(&(folder.clone(), u)).filter(|m| m.present.is_none()) {
                            let access = listed.get(&user.user_id).copied();
                            m.present = Some(access.is_some());
                            m.access = access.into_iter().collect();
                        }
                    }
                }),
                Err(f) => audit.violations.push(format!("members of folder {folder} could not be listed: {f}")),
            }
        }
    }

    /// (a): through the API.
    async fn audit_api(&self, stats: &mut Stats, audit: &mut Audit) {
        let members: BTreeMap<(String, usize), MemberRec> = self.with(|l| l.members.clone());
        for (u, _) in self.users.iter().enumerate() {
            let req = ListFoldersRequest { page: Some(PageRequest { page_size: 200, page_token: String::new() }) };
            let reply =
                match self
                    .call(Some(u), RETRY, &req, stats, |ch, r| async move {
                        FolderServiceClient::new(ch).list_folders(r).await
                    })
                    .await
                {
                    Ok(reply) => reply,
                    Err(f) => {
                        audit.violations.push(format!("user {u} cannot list its folders: {f}"));
                        continue;
                    }
                };
            let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
            let listed: BTreeSet<&str> = reply.folders.iter().map(|f| f.id.as_str()).collect();
            for ((folder, _), m) in members.iter().filter(|((_, v), _)| *v == u) {
                match m.present {
                    Some(true) if complete && !listed.contains(folder.as_str()) => {
                        audit.violations.push(format!("user {u} does not see folder {folder} it is a member of"))
                    }
                    Some(false) if listed.contains(folder.as_str()) => {
                        audit.violations.push(format!("user {u} still sees folder {folder} it was removed from"))
                    }
                    _ => {}
                }
            }
        }
        let folders: Vec<(String, usize)> =
            self.with(|l| l.folders.iter().map(|(id, f)| (id.clone(), f.owner)).collect());
        for (folder, owner) in folders {
            audit.folders_checked += 1;
            let items: Vec<(String, usize)> = self.with(|l| {
                l.items.iter().filter(|(_, i)| i.folder == folder).map(|(id, i)| (id.clone(), i.floor)).collect()
            });
            let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
            let req = ListItemsRequest {
                folder_id: folder.clone(),
                page: Some(PageRequest { page_size: 500, page_token: String::new() }),
            };
            match self
                .call(
                    Some(owner),
                    RETRY,
                    &req,
                    stats,
                    |ch, r| async move { ItemServiceClient::new(ch).list_items(r).await },
                )
                .await
            {
                Ok(reply) => {
                    let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
                    if let Some(problem) = listing_problems(&folder, &reply.items, &ids, complete) {
                        audit.violations.push(problem);
                    }
                }
                Err(f) => audit.violations.push(format!("folder {folder}: items cannot be listed: {f}")),
            }
            for (id, floor) in items {
                audit.items_checked += 1;
                let req = GetItemRequest { folder_id: folder.clone(), item_id: id.clone() };
                let reply = self
                    .call(Some(owner), RETRY, &req, stats, |ch, r| async move {
                        ItemServiceClient::new(ch).get_item(r).await
                    })
                    .await;
                match reply.map(|r| value_of(r.item.as_ref())) {
                    Err(f) => audit.violations.push(format!("item {id} in folder {folder} is unreadable: {f}")),
                    Ok(None) => {
                        audit.violations.push(format!("item {id} in folder {folder} is no longer a query item"))
                    }
                    Ok(Some((value, version))) => {
                        if !self.with(|l| l.items.get(&id).and_then(|i| i.position(floor, &value)).is_some()) {
                            audit.violations.push(format!(
                                "item {id} in folder {folder} (version {version}) holds no acknowledged or later attempted value"
                            ));
                        }
                    }
                }
            }
            match self.members_of(owner, &folder, stats).await {
                Ok((listed, complete)) => {
                    for (u, user) in self.users.iter().enumerate() {
                        let access = listed.get(&user.user_id).copied();
                        let Some(m) = members.get(&(folder.clone(), u)) else {
                            if access.is_some() {
                                audit.violations.push(format!("user {u} is a member of folder {folder} uninvited"));
                            }
                            continue;
                        };
                        audit.memberships_checked += 1;
                        match (m.present, access) {
                            (Some(true), None) if complete => {
                                audit.violations.push(format!("user {u} is missing from folder {folder}"))
                            }
                            (Some(true), Some(a)) if !m.access.contains(&a) => audit.violations.push(format!(
                                "user {u} has access {a} in folder {folder}, expected one of {:?}",
                                m.access
                            )),
                            (Some(false), Some(_)) => {
                                audit.violations.push(format!("user {u} is still in folder {folder} after its removal"))
                            }
                            _ => {}
                        }
                    }
                }
                Err(f) => audit.violations.push(format!("members of folder {folder} cannot be listed: {f}")),
            }
        }
    }

    /// (b): in the database.
    async fn audit_database(&self, audit: &mut Audit) -> anyhow::Result<()> {
        let client = mongodb::Client::with_uri_str(&self.target.mongo_uri).await.context("connecting to MongoDB")?;
        let db = client.database(&self.target.database);
        let (folders, members, items, invitations) = (
            db.collection::<Document>("folders"),
            db.collection::<Document>("members"),
            db.collection::<Document>("items"),
            db.collection::<Document>("invitations"),
        );
        let emails: Vec<String> = self.users.iter().map(|u| u.email.clone()).collect();
        let by_email: BTreeMap<&str, usize> = emails.iter().enumerate().map(|(i, e)| (e.as_str(), i)).collect();
        let known: Vec<String> = self.with(|l| l.folders.keys().cloned().collect());
        // Every folder of the database (each test has its own): the probes' folders beside
        // the workload's, whose writes met the faults too.
        let filter = doc! {};
        let found: Vec<Document> =
            folders.find(filter).await?.try_collect::<Vec<Document>>().await.context("reading folders")?;
        let mut ids = Vec::new();
        let manage_level = AccessLevel::Manage as i32;
        for folder in &found {
            let Ok(id) = folder.get_str("_id") else { continue };
            ids.push(id.to_owned());
            audit.folders_checked += 1;
            let manage = members.count_documents(doc! { "folder_id": id, "access": manage_level }).await?;
            if manage == 0 {
                audit.violations.push(format!("folder {id} has no member with MANAGE"));
            }
            let managers = number(folder.get("managers"));
            if managers != manage as i64 {
                audit.violations.push(format!("folder {id}: counter managers = {managers}, MANAGE members = {manage}"));
            }
            let held = items.count_documents(doc! { "folder_id": id }).await?;
            let counted = number(folder.get("items"));
            if counted != held as i64 {
                audit.violations.push(format!("folder {id}: counter items = {counted}, items = {held}"));
            }
        }
        for id in known.iter().filter(|id| !ids.contains(id)) {
            audit.violations.push(format!("acknowledged folder {id} is not in the database"));
        }
        // Every acknowledged item is stored (not only served from some replica's memory), in
        // its folder, at least at the version its last acknowledged write returned. The mix
        // never deletes or moves items.
        let acked: Vec<(String, String, Option<u64>)> =
            self.with(|l| l.items.iter().map(|(id, i)| (id.clone(), i.folder.clone(), i.version)).collect());
        let item_ids: Vec<String> = acked.iter().map(|(id, _, _)| id.clone()).collect();
        let stored: Vec<Document> = items
            .find(doc! { "_id": { "$in": item_ids } })
            .projection(doc! { "folder_id": 1, "version": 1 })
            .await?
            .try_collect()
            .await
            .context("reading items")?;
        let stored: BTreeMap<&str, &Document> =
            stored.iter().filter_map(|d| Some((d.get_str("_id").ok()?, d))).collect();
        for (id, folder, version) in &acked {
            match stored.get(id.as_str()) {
                None => audit.violations.push(format!("acknowledged item {id} is not in the database")),
                Some(d) if d.get_str("folder_id").ok() != Some(folder.as_str()) => {
                    audit.violations.push(format!("acknowledged item {id} is stored outside its folder {folder}"))
                }
                Some(d) if version.is_some_and(|v| number(d.get("version")) < v as i64) => audit.violations.push(
                    format!("item {id} is stored at version {}, older than acknowledged", number(d.get("version"))),
                ),
                Some(_) => {}
            }
        }
        type Removals = BTreeMap<(String, usize), Option<u64>>;
        let (removals, accepts): (Removals, BTreeMap<String, Option<u64>>) = self.with(|l| {
            (
                l.members.iter().map(|(k, m)| (k.clone(), m.last_removal_seq)).collect(),
                l.invitations.iter().map(|(id, i)| (id.clone(), i.accept_seq)).collect(),
            )
        });
        let mut cursor = invitations.find(doc! { "folder_id": { "$in": ids.clone() } }).await?;
        while let Some(invitation) = cursor.try_next().await? {
            audit.invitations_checked += 1;
            if invitation.get_str("state").ok() != Some("accepted") {
                continue;
            }
            let (Ok(id), Ok(folder), Ok(email)) =
                (invitation.get_str("_id"), invitation.get_str("folder_id"), invitation.get_str("invitee_email"))
            else {
                continue;
            };
            let Some(&u) = by_email.get(email) else { continue };
            let removal = removals.get(&(folder.to_owned(), u)).copied().flatten();
            let excused = match (removal, accepts.get(id).copied().flatten()) {
                (None, _) => false,
                (Some(removed), Some(accepted)) => removed > accepted,
                (Some(_), None) => true,
            };
            if excused {
                continue;
            }
            let member = doc! { "folder_id": folder, "user_id": self.users[u].user_id.as_str() };
            if members.count_documents(member).await? == 0 {
                audit
                    .violations
                    .push(format!("invitation {id} of folder {folder} is accepted but user {u} is not a member"));
            }
        }
        Ok(())
    }
}

/// An integer field as stored (absent: 0, as the store reads it).
fn number(value: Option<&Bson>) -> i64 {
    match value {
        Some(Bson::Int32(n)) => i64::from(*n),
        Some(Bson::Int64(n)) => *n,
        Some(Bson::Double(d)) => *d as i64,
        _ => 0,
    }
}

/// A verdict for a violation's text.
fn show(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Ok => "ok".into(),
        Verdict::Failed(f) | Verdict::Raced(f) => f.to_string(),
        Verdict::Contradiction(text) => text.clone(),
    }
}
