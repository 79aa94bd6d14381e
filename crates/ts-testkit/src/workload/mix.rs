//! The mix: one logical operation per step, chosen by weight (mostly reads, like a real
//! team), acting as a random user, recorded in the ledger and classified in the stats.
//!
//! | op | weight | what |
//! |----|--------|------|
//! | ListFolders | 14 | the user's folders; the ones it created must be listed |
//! | ListItems | 18 | a folder the user is certainly in; acknowledged items listed, no two of one name |
//! | GetItem | 28 | an item of such a folder; its fields must be an acknowledged or attempted value |
//! | ListMembers | 5 | a folder the user created; memberships as the ledger expects, unknown ones resolved |
//! | CreateItem | 10 | in a folder the user created, with a fresh `request_id` (or a pending one re-sent) |
//! | UpdateItem | 12 | an item the user created (its only writer), by `expected_version` |
//! | CreateFolder | 1 | at most 3 per user, with a `request_id` |
//! | CreateInvitation | 4 | another workload user into a folder the user created, VIEW or EDIT |
//! | AcceptInvitation | 4 | ListMyInvitations, then accept one the ledger knows |
//! | UpdateMemberAccess | 2 | VIEW ↔ EDIT of an invited member |
//! | RemoveMember | 2 | an invited member |
//!
//! Only folder creators manage (invitations never grant MANAGE, creators are never lowered
//! or removed), so no change can hit the last manager, and every write to an item comes from
//! its creator, one at a time. An operation that has no candidate (nothing to accept, say)
//! is a ListFolders instead.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use tonic::Code;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_content::Content;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::{
    AcceptInvitationRequest, AccessLevel, CreateFolderRequest, CreateInvitationRequest, CreateItemRequest,
    GetItemRequest, Item, ItemContent, ListFoldersRequest, ListItemsRequest, ListMembersRequest,
    ListMyInvitationsRequest, PageRequest, RemoveMemberRequest, UpdateItemRequest, UpdateMemberAccessRequest,
};

use super::call::{Failure, NO_ABORTED, RETRY};
use super::ledger::{InvState, InvitationRec, ItemRec, ItemValue, Ledger, PendingCreate};
use super::stats::{Stats, Verdict};
use super::{Rng, Workload, lock, marker};

/// Items the workload puts in one folder at most (the service allows 10,000).
const MAX_ITEMS_PER_FOLDER: usize = 150;
/// Folders one user creates at most (its home folder included).
const MAX_FOLDERS_PER_USER: usize = 3;

/// The operations of the mix.
#[derive(Debug, Clone, Copy)]
enum Op {
    ListFolders,
    ListItems,
    GetItem,
    ListMembers,
    CreateItem,
    UpdateItem,
    CreateFolder,
    Invite,
    Accept,
    ChangeAccess,
    RemoveMember,
}

/// The weights (they add up to 100).
const MIX: &[(Op, u64)] = &[
    (Op::ListFolders, 14),
    (Op::ListItems, 18),
    (Op::GetItem, 28),
    (Op::ListMembers, 5),
    (Op::CreateItem, 10),
    (Op::UpdateItem, 12),
    (Op::CreateFolder, 1),
    (Op::Invite, 4),
    (Op::Accept, 4),
    (Op::ChangeAccess, 2),
    (Op::RemoveMember, 2),
];

fn choose(rng: &mut Rng) -> Op {
    let total: u64 = MIX.iter().map(|(_, w)| w).sum();
    let mut x = rng.next() % total.max(1);
    for (op, w) in MIX {
        if x < *w {
            return *op;
        }
        x -= w;
    }
    Op::ListFolders
}

/// A page as large as the RPCs allow.
fn big_page() -> Option<PageRequest> {
    Some(PageRequest { page_size: 500, page_token: String::new() })
}

/// A query item's content.
fn query(filter: &str) -> ItemContent {
    crate::fixtures::query_content(filter)
}

/// An item's fields and version as answered.
pub(super) fn value_of(item: Option<&Item>) -> Option<(ItemValue, u64)> {
    let item = item?;
    let summary = item.summary.as_ref()?;
    let filter = match item.content.as_ref()?.content.as_ref()? {
        Content::Query(q) => q.filter.clone(),
        _ => return None,
    };
    Some((ItemValue { name: summary.name.clone(), description: item.description.clone(), filter }, summary.version))
}

impl Workload {
    /// A create that failed after its retries: still pending (its outcome is not known) when
    /// the failure was transient, forgotten otherwise (nothing was made).
    fn create_failed(&self, request_id: &str, f: &Failure) {
        self.with(|l| {
            if f.transient {
                l.pending.iter_mut().filter(|p| p.request_id == request_id).for_each(|p| p.busy = false);
            } else {
                l.pending.retain(|p| p.request_id != request_id);
            }
        });
    }

    /// `f` on the ledger (never held across an await).
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        f(&mut lock(&self.ledger))
    }

    /// One operation of the mix, recorded in `stats`.
    pub(super) async fn step(&self, rng: &mut Rng, stats: &mut Stats) {
        let op = choose(rng);
        let actor = rng.below(self.users.len());
        let started = Instant::now();
        let done = match op {
            Op::ListFolders => None,
            Op::ListItems => self.list_items(actor, rng, stats).await.map(|v| ("ListItems", v)),
            Op::GetItem => self.get_item(actor, rng, stats).await.map(|v| ("GetItem", v)),
            Op::ListMembers => self.list_members(actor, rng, stats).await.map(|v| ("ListMembers", v)),
            Op::CreateItem => self.create_item(actor, rng, stats).await.map(|v| ("CreateItem", v)),
            Op::UpdateItem => self.update_item(actor, rng, stats).await.map(|v| ("UpdateItem", v)),
            Op::CreateFolder => self.create_folder(actor, stats).await.map(|v| ("CreateFolder", v)),
            Op::Invite => self.invite(actor, rng, stats).await.map(|v| ("CreateInvitation", v)),
            Op::Accept => Some(self.accept(actor, rng, stats).await),
            Op::ChangeAccess => self.change_access(actor, rng, stats).await.map(|v| ("UpdateMemberAccess", v)),
            Op::RemoveMember => self.remove_member(actor, rng, stats).await.map(|v| ("RemoveMember", v)),
        };
        let (name, verdict) = match done {
            Some(done) => done,
            None => ("ListFolders", self.list_folders(actor, stats).await),
        };
        stats.record(name, started.elapsed(), verdict);
    }

    /// New item fields for `actor`, each with its own marker (remembered as secrets).
    fn new_value(&self, actor: usize) -> ItemValue {
        let (a, b, c) = (marker(), marker(), marker());
        let value = ItemValue {
            name: format!("w{actor} orders {a}"),
            description: format!("for the review {b}"),
            filter: format!("{{\"marker\": \"{c}\"}}"),
        };
        self.remember("item field", [value.name.clone(), value.description.clone(), value.filter.clone(), a, b, c]);
        value
    }

    /// A read refused: benign when the membership changed meanwhile.
    fn read_failure(&self, folder: &str, actor: usize, epoch: u64, f: Failure) -> Verdict {
        let (now, _) = self.with(|l| l.read_snapshot(folder, actor));
        if matches!(f.code, Code::NotFound | Code::PermissionDenied) && now != epoch {
            Verdict::Raced(f)
        } else {
            Verdict::Failed(f)
        }
    }

    async fn list_folders(&self, actor: usize, stats: &mut Stats) -> Verdict {
        let owned = self.with(|l| l.owned_folders(actor));
        let req = ListFoldersRequest { page: Some(PageRequest { page_size: 200, page_token: String::new() }) };
        let reply =
            match self
                .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                    FolderServiceClient::new(ch).list_folders(r).await
                })
                .await
            {
                Ok(reply) => reply,
                Err(f) => return Verdict::Failed(f),
            };
        let listed: BTreeSet<&str> = reply.folders.iter().map(|f| f.id.as_str()).collect();
        let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
        let missing: Vec<&String> = owned.iter().filter(|id| !listed.contains(id.as_str())).collect();
        if complete && !missing.is_empty() {
            return Verdict::Contradiction(format!("user {actor} does not see folders it created: {missing:?}"));
        }
        Verdict::Ok
    }

    async fn list_items(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let folder = rng.pick(&self.with(|l| l.readable_folders(actor)))?;
        let (epoch, _) = self.with(|l| l.read_snapshot(&folder, actor));
        let acked: Vec<String> =
            self.with(|l| l.items.iter().filter(|(_, i)| i.folder == folder).map(|(id, _)| id.clone()).collect());
        let req = ListItemsRequest { folder_id: folder.clone(), page: big_page() };
        let reply = match self
            .call(
                Some(actor),
                RETRY,
                &req,
                stats,
                |ch, r| async move { ItemServiceClient::new(ch).list_items(r).await },
            )
            .await
        {
            Ok(reply) => reply,
            Err(f) => return Some(self.read_failure(&folder, actor, epoch, f)),
        };
        let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
        Some(match listing_problems(&folder, &reply.items, &acked, complete) {
            None => Verdict::Ok,
            Some(problem) => Verdict::Contradiction(problem),
        })
    }

    async fn get_item(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let candidates: Vec<(String, String, usize)> = self.with(|l| {
            let folders: BTreeSet<String> = l.readable_folders(actor).into_iter().collect();
            l.items
                .iter()
                .filter(|(_, i)| folders.contains(&i.folder))
                .map(|(id, i)| (id.clone(), i.folder.clone(), i.floor))
                .collect()
        });
        let (item_id, folder, floor) = rng.pick(&candidates)?;
        let (epoch, _) = self.with(|l| l.read_snapshot(&folder, actor));
        let req = GetItemRequest { folder_id: folder.clone(), item_id: item_id.clone() };
        let reply = match self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move { ItemServiceClient::new(ch).get_item(r).await })
            .await
        {
            Ok(reply) => reply,
            Err(f) => return Some(self.read_failure(&folder, actor, epoch, f)),
        };
        let Some((value, version)) = value_of(reply.item.as_ref()) else {
            return Some(Verdict::Contradiction(format!("GetItem of item {item_id} answered no query item")));
        };
        // Acceptable: the value acknowledged when the read started, or any sent since.
        let known = self.with(|l| l.items.get(&item_id).and_then(|i| i.position(floor, &value)).is_some());
        Some(if known {
            Verdict::Ok
        } else {
            Verdict::Contradiction(format!(
                "item {item_id} in folder {folder} (version {version}) holds no acknowledged or later attempted value"
            ))
        })
    }

    /// The members of `folder` as `as_user` sees them: user id → access, and whether the
    /// page was the last.
    pub(super) async fn members_of(
        &self,
        as_user: usize,
        folder: &str,
        stats: &mut Stats,
    ) -> Result<(BTreeMap<String, i32>, bool), Failure> {
        let req = ListMembersRequest { folder_id: folder.to_owned(), page: big_page() };
        let reply = self
            .call(Some(as_user), RETRY, &req, stats, |ch, r| async move {
                MemberServiceClient::new(ch).list_members(r).await
            })
            .await?;
        let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
        Ok((reply.members.into_iter().map(|m| (m.user_id, m.access)).collect(), complete))
    }

    async fn list_members(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let folder = rng.pick(&self.with(|l| l.owned_folders(actor)))?;
        let n = self.users.len();
        let before: Vec<Option<(u64, bool)>> =
            self.with(|l| (0..n).map(|u| l.members.get(&(folder.clone(), u)).map(|m| (m.epoch, m.busy))).collect());
        let (listed, complete) = match self.members_of(actor, &folder, stats).await {
            Ok(found) => found,
            Err(f) => return Some(Verdict::Failed(f)),
        };
        if !complete {
            return Some(Verdict::Ok);
        }
        let problems = self.with(|l| {
            let mut problems = Vec::new();
            for (u, snapshot) in before.iter().enumerate() {
                let key = (folder.clone(), u);
                let access = listed.get(&self.users[u].user_id).copied();
                let Some(m) = l.members.get_mut(&key) else {
                    if snapshot.is_none() && access.is_some() {
                        problems.push(format!("user {u} is a member of folder {folder} without any invitation"));
                    }
                    continue;
                };
                // Only what nothing changed during the call.
                if m.busy || *snapshot != Some((m.epoch, false)) {
                    continue;
                }
                match (m.present, access) {
                    (Some(true), None) => problems.push(format!("user {u} is missing from folder {folder}")),
                    (Some(true), Some(a)) if !m.access.contains(&a) => {
                        problems.push(format!("user {u} has access {a} in folder {folder}, expected {:?}", m.access))
                    }
                    (Some(true), Some(a)) => m.access = BTreeSet::from([a]),
                    (Some(false), Some(_)) => {
                        problems.push(format!("user {u} is still a member of folder {folder} after its removal"))
                    }
                    (Some(false), None) => {}
                    (None, found) => {
                        m.present = Some(found.is_some());
                        m.access = found.into_iter().collect();
                    }
                }
            }
            problems
        });
        Some(if problems.is_empty() { Verdict::Ok } else { Verdict::Contradiction(problems.join("; ")) })
    }

    async fn create_item(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        // A create whose outcome is not known is sent again first, with its request_id.
        let pending = self.with(|l| {
            let p = l.pending.iter_mut().find(|p| p.owner == actor && !p.busy && p.item.is_some())?;
            p.busy = true;
            Some(p.clone())
        });
        let (request_id, folder, value) = match pending.and_then(|p| p.item.map(|(f, v)| (p.request_id, f, v))) {
            Some(resend) => resend,
            None => {
                let folders: Vec<String> = self.with(|l| {
                    let owned = l.owned_folders(actor);
                    owned.into_iter().filter(|f| l.items_in(f) < MAX_ITEMS_PER_FOLDER).collect()
                });
                let folder = rng.pick(&folders)?;
                let value = self.new_value(actor);
                let request_id = uuid::Uuid::new_v4().to_string();
                self.with(|l| {
                    l.pending.push(PendingCreate {
                        owner: actor,
                        request_id: request_id.clone(),
                        item: Some((folder.clone(), value.clone())),
                        folder_name: String::new(),
                        busy: true,
                    })
                });
                (request_id, folder, value)
            }
        };
        Some(self.send_item_create(actor, &request_id, &folder, &value, stats).await)
    }

    /// Sends a (pending) item create and settles it in the ledger.
    pub(super) async fn send_item_create(
        &self,
        actor: usize,
        request_id: &str,
        folder: &str,
        value: &ItemValue,
        stats: &mut Stats,
    ) -> Verdict {
        let req = CreateItemRequest {
            folder_id: folder.to_owned(),
            name: value.name.clone(),
            description: value.description.clone(),
            content: Some(query(&value.filter)),
            request_id: request_id.to_owned(),
        };
        let result =
            self.call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                ItemServiceClient::new(ch).create_item(r).await
            })
            .await;
        let reply = match result {
            Ok(reply) => reply,
            Err(f) => {
                self.create_failed(request_id, &f);
                return Verdict::Failed(f);
            }
        };
        let id = reply.item.as_ref().and_then(|i| i.summary.as_ref()).map(|s| s.id.clone()).unwrap_or_default();
        let answered = value_of(reply.item.as_ref());
        self.with(|l| {
            l.pending.retain(|p| p.request_id != request_id);
            if let (false, Some((_, version))) = (id.is_empty(), &answered) {
                l.items.entry(id.clone()).or_insert_with(|| ItemRec {
                    folder: folder.to_owned(),
                    owner: actor,
                    history: vec![value.clone()],
                    floor: 0,
                    version: Some(*version),
                    busy: false,
                    updates_acked: 0,
                });
            }
        });
        match answered {
            Some((answered, _)) if !id.is_empty() && &answered == value => Verdict::Ok,
            _ => {
                Verdict::Contradiction(format!("CreateItem in folder {folder} answered item {id:?} unlike the request"))
            }
        }
    }

    async fn update_item(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let (id, folder, version) = self.with(|l| {
            let mine: Vec<String> =
                l.items.iter().filter(|(_, i)| i.owner == actor && !i.busy).map(|(id, _)| id.clone()).collect();
            let id = rng.pick(&mine)?;
            let rec = l.items.get_mut(&id)?;
            rec.busy = true;
            Some((id, rec.folder.clone(), rec.version))
        })?;
        let verdict = self.update_claimed(actor, &id, &folder, version, stats).await;
        self.with(|l| {
            if let Some(rec) = l.items.get_mut(&id) {
                rec.busy = false;
            }
        });
        Some(verdict)
    }

    /// Updates a claimed item: reads its version back first if the last outcome was unknown.
    async fn update_claimed(
        &self,
        actor: usize,
        id: &str,
        folder: &str,
        version: Option<u64>,
        stats: &mut Stats,
    ) -> Verdict {
        let version = match version {
            Some(v) => v,
            None => match self.read_back(actor, id, folder, stats).await {
                Ok(v) => v,
                Err(verdict) => return verdict,
            },
        };
        let value = self.new_value(actor);
        let Some(index) = self.with(|l| {
            let rec = l.items.get_mut(id)?;
            rec.history.push(value.clone());
            Some(rec.history.len() - 1)
        }) else {
            return Verdict::Contradiction(format!("item {id} left the ledger"));
        };
        let req = UpdateItemRequest {
            folder_id: folder.to_owned(),
            item_id: id.to_owned(),
            expected_version: version,
            name: value.name.clone(),
            description: value.description.clone(),
            content: Some(query(&value.filter)),
        };
        let result = self
            .call(Some(actor), NO_ABORTED, &req, stats, |ch, r| async move {
                ItemServiceClient::new(ch).update_item(r).await
            })
            .await;
        match result {
            Ok(reply) => {
                let answered = value_of(reply.item.as_ref());
                self.with(|l| {
                    if let Some(rec) = l.items.get_mut(id) {
                        rec.floor = index;
                        rec.version = answered.as_ref().map(|(_, v)| *v);
                        rec.updates_acked += 1;
                    }
                });
                match answered {
                    Some((answered, v)) if answered == value && v > version => Verdict::Ok,
                    _ => Verdict::Contradiction(format!("UpdateItem of item {id} answered other fields or version")),
                }
            }
            // A retried update whose first attempt was applied answers ABORTED: read it back.
            Err(f) if f.code == Code::Aborted && f.ambiguous => match self.read_back(actor, id, folder, stats).await {
                Ok(_) if self.with(|l| l.items.get(id).is_some_and(|r| r.floor == index)) => {
                    self.with(|l| {
                        if let Some(r) = l.items.get_mut(id) {
                            r.updates_acked += 1;
                        }
                    });
                    Verdict::Ok
                }
                Ok(now) => Verdict::Contradiction(format!(
                    "UpdateItem of item {id} at version {version} answered ABORTED but was not applied (now {now})"
                )),
                Err(verdict) => verdict,
            },
            Err(f) if f.code == Code::Aborted => Verdict::Contradiction(format!(
                "UpdateItem of item {id} at version {version} answered ABORTED ({}) though its creator is its only writer",
                f.reason
            )),
            Err(f) => {
                if f.ambiguous {
                    self.with(|l| {
                        if let Some(r) = l.items.get_mut(id) {
                            r.version = None;
                        }
                    });
                }
                Verdict::Failed(f)
            }
        }
    }

    /// Reads an item back: sets its floor to the value found and returns its version.
    pub(super) async fn read_back(
        &self,
        actor: usize,
        id: &str,
        folder: &str,
        stats: &mut Stats,
    ) -> Result<u64, Verdict> {
        let req = GetItemRequest { folder_id: folder.to_owned(), item_id: id.to_owned() };
        let reply = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move { ItemServiceClient::new(ch).get_item(r).await })
            .await
            .map_err(Verdict::Failed)?;
        let (value, version) = value_of(reply.item.as_ref())
            .ok_or_else(|| Verdict::Contradiction(format!("GetItem of item {id} answered no query item")))?;
        let found = self.with(|l| {
            let rec = l.items.get_mut(id)?;
            let at = rec.position(rec.floor, &value)?;
            rec.floor = at;
            rec.version = Some(version);
            Some(())
        });
        found.map(|()| version).ok_or_else(|| {
            Verdict::Contradiction(format!(
                "item {id} in folder {folder} (version {version}) holds no acknowledged or later attempted value"
            ))
        })
    }

    async fn create_folder(&self, actor: usize, stats: &mut Stats) -> Option<Verdict> {
        let (request_id, name) = self.with(|l| {
            if let Some(p) = l.pending.iter_mut().find(|p| p.owner == actor && !p.busy && p.item.is_none()) {
                p.busy = true;
                return Some((p.request_id.clone(), p.folder_name.clone()));
            }
            let pending = l.pending.iter().filter(|p| p.owner == actor && p.item.is_none()).count();
            let made = l.owned_folders(actor).len() + pending;
            if made >= MAX_FOLDERS_PER_USER {
                return None;
            }
            let (request_id, name) = (uuid::Uuid::new_v4().to_string(), format!("w{actor} team {}", marker()));
            let pending = PendingCreate {
                owner: actor,
                request_id: request_id.clone(),
                item: None,
                folder_name: name.clone(),
                busy: true,
            };
            l.pending.push(pending);
            Some((request_id, name))
        })?;
        self.remember("folder name", [name.clone()]);
        Some(self.send_folder_create(actor, &request_id, &name, stats).await)
    }

    /// Sends a (pending) folder create and settles it in the ledger.
    pub(super) async fn send_folder_create(
        &self,
        actor: usize,
        request_id: &str,
        name: &str,
        stats: &mut Stats,
    ) -> Verdict {
        let req = CreateFolderRequest { name: name.to_owned(), request_id: request_id.to_owned() };
        let result = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                FolderServiceClient::new(ch).create_folder(r).await
            })
            .await;
        let folder = match result {
            Ok(reply) => reply.folder,
            Err(f) => {
                self.create_failed(request_id, &f);
                return Verdict::Failed(f);
            }
        };
        self.with(|l| {
            l.pending.retain(|p| p.request_id != request_id);
            if let Some(f) = folder.as_ref().filter(|f| !f.id.is_empty())
                && !l.folders.contains_key(&f.id)
            {
                l.add_folder(&f.id, actor);
            }
        });
        match folder {
            Some(f) if !f.id.is_empty() && f.name == name && f.my_access == AccessLevel::Manage as i32 => Verdict::Ok,
            other => Verdict::Contradiction(format!(
                "CreateFolder answered folder {:?} unlike the request",
                other.map(|f| f.id).unwrap_or_default()
            )),
        }
    }

    async fn invite(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let n = self.users.len();
        let (folder, invitee) = self.with(|l| {
            let mut free = Vec::new();
            for f in l.owned_folders(actor) {
                for v in (0..n).filter(|v| *v != actor) {
                    let ok = match l.members.get(&(f.clone(), v)) {
                        None => true,
                        Some(m) => m.present == Some(false) && !m.busy && m.invited.is_none(),
                    };
                    if ok {
                        free.push((f.clone(), v));
                    }
                }
            }
            let (f, v) = rng.pick(&free)?;
            let m = l.members.entry((f.clone(), v)).or_default();
            m.present = Some(false);
            m.busy = true;
            Some((f, v))
        })?;
        // Below the gateway's send rate, so that RATE_LIMITED stays rare.
        if !lock(&self.users[actor].invite_bucket).take() {
            self.release(&folder, invitee, false);
            return None;
        }
        let access = if rng.below(2) == 0 { AccessLevel::View } else { AccessLevel::Edit };
        let verdict = self.send_invitation(actor, &folder, invitee, access, stats).await;
        self.release(&folder, invitee, false);
        Some(verdict)
    }

    /// Ends a claim of a membership (bumping its epoch when it was a change).
    fn release(&self, folder: &str, user: usize, changed: bool) {
        self.with(|l| {
            if let Some(m) = l.members.get_mut(&(folder.to_owned(), user)) {
                m.busy = false;
                if changed {
                    m.epoch += 1;
                }
            }
        });
    }

    /// Invites `invitee` (membership claimed) to `folder`; the invitation id on success.
    pub(super) async fn send_invitation(
        &self,
        actor: usize,
        folder: &str,
        invitee: usize,
        access: AccessLevel,
        stats: &mut Stats,
    ) -> Verdict {
        let email = self.users[invitee].email.clone();
        let req = CreateInvitationRequest {
            folder_id: folder.to_owned(),
            invitee_email: email.clone(),
            access: access as i32,
            request_id: uuid::Uuid::new_v4().to_string(),
        };
        let result = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                InvitationServiceClient::new(ch).create_invitation(r).await
            })
            .await;
        let key = (folder.to_owned(), invitee);
        let invitation = match result {
            Ok(reply) => reply.invitation.unwrap_or_default(),
            Err(f) => {
                if f.ambiguous {
                    self.with(|l| {
                        if let Some(m) = l.members.get_mut(&key) {
                            m.invite_unknown = true;
                        }
                    });
                }
                return Verdict::Failed(f);
            }
        };
        if invitation.id.is_empty() || invitation.folder_id != folder || invitation.invitee_email != email {
            return Verdict::Contradiction(format!("CreateInvitation to folder {folder} answered {:?}", invitation.id));
        }
        self.with(|l| {
            let rec = InvitationRec {
                folder: folder.to_owned(),
                invitee,
                access: access as i32,
                state: InvState::Pending,
                accept_seq: None,
            };
            l.invitations.insert(invitation.id.clone(), rec);
            if let Some(m) = l.members.get_mut(&key) {
                m.invited = Some(invitation.id.clone());
                m.invite_unknown = false;
            }
        });
        Verdict::Ok
    }

    /// ListMyInvitations, then AcceptInvitation of one the ledger knows (one logical op).
    async fn accept(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> (&'static str, Verdict) {
        const LIST: &str = "ListMyInvitations";
        let expected: Vec<(String, u64)> = self.with(|l| {
            l.invitations
                .iter()
                .filter(|(_, i)| i.invitee == actor && i.state == InvState::Pending)
                .filter_map(|(id, i)| {
                    let m = l.members.get(&(i.folder.clone(), actor))?;
                    (!m.busy && m.invited.as_deref() == Some(id.as_str())).then(|| (id.clone(), m.epoch))
                })
                .collect()
        });
        let req = ListMyInvitationsRequest { page: Some(PageRequest { page_size: 20, page_token: String::new() }) };
        let reply = match self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                InvitationServiceClient::new(ch).list_my_invitations(r).await
            })
            .await
        {
            Ok(reply) => reply,
            Err(f) => return (LIST, Verdict::Failed(f)),
        };
        let complete = reply.page.as_ref().is_none_or(|p| p.next_page_token.is_empty());
        let listed: BTreeSet<String> = reply.invitations.iter().map(|i| i.id.clone()).collect();
        let (missing, candidates) = self.with(|l| {
            // Invitations made by a create whose answer was lost join the ledger here.
            for i in &reply.invitations {
                if l.folders.contains_key(&i.folder_id) && !l.invitations.contains_key(&i.id) {
                    let rec = InvitationRec {
                        folder: i.folder_id.clone(),
                        invitee: actor,
                        access: i.access,
                        state: InvState::Pending,
                        accept_seq: None,
                    };
                    l.invitations.insert(i.id.clone(), rec);
                    if let Some(m) = l.members.get_mut(&(i.folder_id.clone(), actor))
                        && m.present == Some(false)
                        && !m.busy
                        && m.invited.is_none()
                    {
                        m.invited = Some(i.id.clone());
                    }
                }
            }
            let missing: Vec<String> = expected
                .iter()
                .filter(|(id, epoch)| {
                    !listed.contains(id)
                        && l.invitations.get(id).is_some_and(|i| {
                            i.state == InvState::Pending
                                && l.members.get(&(i.folder.clone(), actor)).is_some_and(|m| m.epoch == *epoch)
                        })
                })
                .map(|(id, _)| id.clone())
                .collect();
            let candidates: Vec<String> = listed
                .iter()
                .filter(|id| {
                    l.invitations.get(*id).is_some_and(|i| {
                        i.state == InvState::Pending
                            && l.members
                                .get(&(i.folder.clone(), actor))
                                .is_some_and(|m| m.present == Some(false) && !m.busy)
                    })
                })
                .cloned()
                .collect();
            (missing, candidates)
        });
        if complete && !missing.is_empty() {
            return (LIST, Verdict::Contradiction(format!("user {actor} is not shown its invitations {missing:?}")));
        }
        let Some(id) = rng.pick(&candidates) else { return (LIST, Verdict::Ok) };
        ("AcceptInvitation", self.accept_claiming(actor, &id, stats).await)
    }

    /// Claims the membership an invitation makes and accepts it.
    pub(super) async fn accept_claiming(&self, actor: usize, id: &str, stats: &mut Stats) -> Verdict {
        let claimed = self.with(|l| {
            let seq = l.next_seq();
            let inv = l.invitations.get_mut(id)?;
            if inv.state != InvState::Pending {
                return None;
            }
            inv.state = InvState::Accepting;
            if inv.accept_seq.is_none() {
                inv.accept_seq = Some(seq);
            }
            let folder = inv.folder.clone();
            let m = l.members.entry((folder.clone(), actor)).or_default();
            if m.busy {
                return None;
            }
            m.busy = true;
            m.epoch += 1;
            Some(folder)
        });
        let Some(folder) = claimed else {
            self.with(|l| {
                if let Some(i) = l.invitations.get_mut(id).filter(|i| i.state == InvState::Accepting) {
                    i.state = InvState::Pending;
                }
            });
            return Verdict::Ok;
        };
        let verdict = self.send_accept(actor, id, &folder, stats).await;
        self.release(&folder, actor, true);
        verdict
    }

    async fn send_accept(&self, actor: usize, id: &str, folder: &str, stats: &mut Stats) -> Verdict {
        let req = AcceptInvitationRequest { invitation_id: id.to_owned() };
        let result = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                InvitationServiceClient::new(ch).accept_invitation(r).await
            })
            .await;
        let key = (folder.to_owned(), actor);
        let access = self.with(|l| l.invitations.get(id).map(|i| i.access).unwrap_or_default());
        let settle = |state: InvState, present: Option<bool>, granted: Option<i32>| {
            self.with(|l| {
                if let Some(i) = l.invitations.get_mut(id) {
                    i.state = state;
                }
                if let Some(m) = l.members.get_mut(&key) {
                    if present.is_some() || state == InvState::Unknown {
                        m.present = present;
                        m.access = granted.into_iter().collect();
                        m.invited = None;
                    } else {
                        m.invited = None;
                    }
                }
            })
        };
        match result {
            Ok(reply) => {
                settle(InvState::Accepted, Some(true), Some(reply.access));
                if reply.folder_id != folder || reply.access != access {
                    return Verdict::Contradiction(format!("AcceptInvitation {id} answered another folder or access"));
                }
                Verdict::Ok
            }
            Err(f) if f.transient => {
                settle(InvState::Unknown, None, Some(access));
                Verdict::Failed(f)
            }
            // Refused after an attempt that may have taken effect: read the membership back.
            Err(f) if f.ambiguous => {
                let owner = self.with(|l| l.folders.get(folder).map(|x| x.owner));
                let found = match owner {
                    Some(owner) => self.members_of(owner, folder, stats).await.ok(),
                    None => None,
                };
                match found.and_then(|(m, _)| m.get(&self.users[actor].user_id).copied()) {
                    Some(a) => {
                        settle(InvState::Accepted, Some(true), Some(a));
                        Verdict::Ok
                    }
                    None => {
                        settle(InvState::Unknown, None, Some(access));
                        Verdict::Failed(f)
                    }
                }
            }
            Err(f) => {
                settle(InvState::Refused, None, None);
                Verdict::Failed(f)
            }
        }
    }

    /// Claims a membership of a folder `actor` created, held by someone else, certainly.
    fn claim_member(&self, actor: usize, rng: &mut Rng, removal: bool) -> Option<(String, usize, BTreeSet<i32>)> {
        self.with(|l| {
            let owned: BTreeSet<String> = l.owned_folders(actor).into_iter().collect();
            let members: Vec<(String, usize)> = l
                .members
                .iter()
                .filter(|((f, _), m)| owned.contains(f) && !m.owner && m.present == Some(true) && !m.busy)
                .map(|(k, _)| k.clone())
                .collect();
            let key = rng.pick(&members)?;
            let seq = l.next_seq();
            let m = l.members.get_mut(&key)?;
            m.busy = true;
            m.epoch += 1;
            if removal {
                m.last_removal_seq = Some(seq);
            }
            Some((key.0, key.1, m.access.clone()))
        })
    }

    async fn change_access(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let (folder, member, old) = self.claim_member(actor, rng, false)?;
        let edit = AccessLevel::Edit as i32;
        let new = (if old == BTreeSet::from([edit]) { AccessLevel::View } else { AccessLevel::Edit }) as i32;
        let req = UpdateMemberAccessRequest {
            folder_id: folder.clone(),
            user_id: self.users[member].user_id.clone(),
            access: new,
        };
        let result = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                MemberServiceClient::new(ch).update_member_access(r).await
            })
            .await;
        let key = (folder.clone(), member);
        let verdict = match result {
            Ok(reply) => {
                let got = reply.member.map(|m| m.access).unwrap_or_default();
                self.with(|l| {
                    l.access_changes_acked += 1;
                    if let Some(m) = l.members.get_mut(&key) {
                        m.access = BTreeSet::from([got]);
                    }
                });
                if got == new {
                    Verdict::Ok
                } else {
                    Verdict::Contradiction(format!("UpdateMemberAccess in folder {folder} answered access {got}"))
                }
            }
            Err(f) => {
                if f.ambiguous {
                    self.with(|l| {
                        if let Some(m) = l.members.get_mut(&key) {
                            m.access.insert(new);
                        }
                    });
                }
                Verdict::Failed(f)
            }
        };
        self.release(&folder, member, true);
        Some(verdict)
    }

    async fn remove_member(&self, actor: usize, rng: &mut Rng, stats: &mut Stats) -> Option<Verdict> {
        let (folder, member, _) = self.claim_member(actor, rng, true)?;
        let req = RemoveMemberRequest { folder_id: folder.clone(), user_id: self.users[member].user_id.clone() };
        let result = self
            .call(Some(actor), RETRY, &req, stats, |ch, r| async move {
                MemberServiceClient::new(ch).remove_member(r).await
            })
            .await;
        let key = (folder.clone(), member);
        let gone = |l: &mut Ledger| {
            l.removals_acked += 1;
            if let Some(m) = l.members.get_mut(&key) {
                m.present = Some(false);
                m.access.clear();
                m.invited = None;
            }
        };
        let verdict = match result {
            Ok(_) => {
                self.with(gone);
                Verdict::Ok
            }
            // "MEMBER_NOT_FOUND, also for a retry of a removal that was done".
            Err(f) if f.ambiguous && f.is("MEMBER_NOT_FOUND") => {
                self.with(gone);
                Verdict::Ok
            }
            Err(f) => {
                if f.ambiguous {
                    self.with(|l| {
                        if let Some(m) = l.members.get_mut(&key) {
                            m.present = None;
                        }
                    });
                }
                Verdict::Failed(f)
            }
        };
        self.release(&folder, member, true);
        Some(verdict)
    }

    /// Setup: `actor`'s home folder (must succeed).
    pub(super) async fn setup_folder(&self, actor: usize, stats: &mut Stats) -> anyhow::Result<()> {
        let (request_id, name) = (uuid::Uuid::new_v4().to_string(), format!("w{actor} home {}", marker()));
        self.remember("folder name", [name.clone()]);
        match self.send_folder_create(actor, &request_id, &name, stats).await {
            Verdict::Ok => Ok(()),
            other => anyhow::bail!("CreateFolder: {other:?}"),
        }
    }

    /// Setup: `owner` invites `member` into its home folder at EDIT, `member` accepts.
    pub(super) async fn setup_share(&self, owner: usize, member: usize, stats: &mut Stats) -> anyhow::Result<()> {
        let folder = self.with(|l| l.owned_folders(owner).into_iter().next());
        let folder = folder.ok_or_else(|| anyhow::anyhow!("user {owner} has no folder"))?;
        self.with(|l| {
            let m = l.members.entry((folder.clone(), member)).or_default();
            m.present = Some(false);
            m.busy = true;
        });
        let verdict = self.send_invitation(owner, &folder, member, AccessLevel::Edit, stats).await;
        self.release(&folder, member, false);
        if !matches!(verdict, Verdict::Ok) {
            anyhow::bail!("CreateInvitation: {verdict:?}");
        }
        let id = self.with(|l| l.members.get(&(folder.clone(), member)).and_then(|m| m.invited.clone()));
        let id = id.ok_or_else(|| anyhow::anyhow!("no invitation recorded"))?;
        match self.accept_claiming(member, &id, stats).await {
            Verdict::Ok => Ok(()),
            other => anyhow::bail!("AcceptInvitation: {other:?}"),
        }
    }
}

/// What is wrong with a listing of `folder`'s items: an acknowledged item missing (when the
/// listing is complete), or two items of one name (names carry unique markers: a duplicated
/// create). Names ids only.
pub(super) fn listing_problems(
    folder: &str,
    items: &[ts_proto::public::ItemSummary],
    acked: &[String],
    complete: bool,
) -> Option<String> {
    let mut problems = Vec::new();
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for i in items {
        names.entry(i.name.as_str()).or_default().push(i.id.as_str());
    }
    for ids in names.values().filter(|ids| ids.len() > 1) {
        problems.push(format!("folder {folder} lists items {ids:?} of one name (a duplicated create)"));
    }
    if complete {
        let listed: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let missing: Vec<&String> = acked.iter().filter(|id| !listed.contains(id.as_str())).collect();
        if !missing.is_empty() {
            problems.push(format!("folder {folder} does not list acknowledged items {missing:?}"));
        }
    }
    if problems.is_empty() { None } else { Some(problems.join("; ")) }
}
