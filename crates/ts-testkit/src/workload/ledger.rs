//! The ledger: what the workload knows it wrote (acknowledged: the call answered OK, after any
//! retries) and what it may have written (attempts whose outcome was not known), so that a
//! read and the audit can tell a lost or corrupted write from a race.
//!
//! Memberships are `(folder id, user index)`; a missing entry means "certainly not a member".
//! Each entry has an `epoch` bumped when a change of it starts and when it ends: a read that
//! fails NOT_FOUND while the epoch moved raced a change (benign); with the epoch unchanged and
//! the membership certain it is a contradiction.

use std::collections::{BTreeMap, BTreeSet};

/// One value of an item's user-typed fields (all plaintext, each with a random marker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ItemValue {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The query's filter (the item's content is always a query).
    pub filter: String,
}

/// An acknowledged item.
#[derive(Debug, Clone)]
pub(super) struct ItemRec {
    /// Its folder.
    pub folder: String,
    /// The user who created it: its only writer.
    pub owner: usize,
    /// Every value ever sent for it, in order: the create's, then each update's.
    pub history: Vec<ItemValue>,
    /// Index in `history` of the last acknowledged value: the current value is one of
    /// `history[floor..]` (later entries are attempts whose outcome is not known).
    pub floor: usize,
    /// The version after the last acknowledged write; `None` after an update whose outcome is
    /// not known (the next update reads it back first).
    pub version: Option<u64>,
    /// An update (or its read-back) is running.
    pub busy: bool,
    /// Acknowledged updates.
    pub updates_acked: u64,
}

impl ItemRec {
    /// The index in `history[from..]` of `value`, the latest first.
    pub fn position(&self, from: usize, value: &ItemValue) -> Option<usize> {
        (from..self.history.len()).rev().find(|&i| &self.history[i] == value)
    }
}

/// An acknowledged folder.
#[derive(Debug, Clone)]
pub(super) struct FolderRec {
    /// The user who created it; it manages it and is never removed or lowered.
    pub owner: usize,
}

/// What the workload expects of one user's membership of one folder.
#[derive(Debug, Clone, Default)]
pub(super) struct MemberRec {
    /// `Some(true)`: must be a member; `Some(false)`: must not; `None`: not known (a change
    /// whose outcome was not known).
    pub present: Option<bool>,
    /// Acceptable access levels (as `AccessLevel` numbers) when present.
    pub access: BTreeSet<i32>,
    /// Bumped at the start and the end of every change.
    pub epoch: u64,
    /// A change (invite, accept, access change, removal) is running.
    pub busy: bool,
    /// The ledger sequence number of the last removal attempted, if any.
    pub last_removal_seq: Option<u64>,
    /// An acknowledged pending invitation of this user to this folder.
    pub invited: Option<String>,
    /// An invitation create whose outcome was not known: one may be pending.
    pub invite_unknown: bool,
    /// The folder's creator (never changed by the workload).
    pub owner: bool,
}

impl MemberRec {
    /// Certainly a member, and nothing is changing that right now.
    pub fn readable(&self) -> bool {
        self.owner || (self.present == Some(true) && !self.busy)
    }
}

/// Where an invitation the workload knows of stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InvState {
    /// Created (acknowledged, or seen listed), not yet accepted.
    Pending,
    /// An accept is running.
    Accepting,
    /// Accepted (acknowledged).
    Accepted,
    /// An accept whose outcome was not known.
    Unknown,
    /// The service refused to accept it (counted as unexpected); not tried again.
    Refused,
}

/// An invitation the workload created or saw.
#[derive(Debug, Clone)]
pub(super) struct InvitationRec {
    /// Its folder.
    pub folder: String,
    /// The invitee (user index).
    pub invitee: usize,
    /// The access it grants (an `AccessLevel` number).
    pub access: i32,
    /// Where it stands.
    pub state: InvState,
    /// The ledger sequence number of the first accept attempt.
    pub accept_seq: Option<u64>,
}

/// A create whose outcome was not known: sent again later with the same `request_id`.
#[derive(Debug, Clone)]
pub(super) struct PendingCreate {
    /// The creating user.
    pub owner: usize,
    /// The AIP-155 request id.
    pub request_id: String,
    /// The item's folder and value, or `None` for a folder create.
    pub item: Option<(String, ItemValue)>,
    /// The folder's name, for a folder create.
    pub folder_name: String,
    /// Someone is sending it right now.
    pub busy: bool,
}

/// The ledger's state, behind the workload's mutex.
#[derive(Debug, Default)]
pub(super) struct Ledger {
    /// Sequence numbers for ordering attempts.
    pub seq: u64,
    /// Acknowledged folders by id.
    pub folders: BTreeMap<String, FolderRec>,
    /// Acknowledged items by id.
    pub items: BTreeMap<String, ItemRec>,
    /// Memberships by (folder id, user index).
    pub members: BTreeMap<(String, usize), MemberRec>,
    /// Invitations by id.
    pub invitations: BTreeMap<String, InvitationRec>,
    /// Creates whose outcome is not known yet.
    pub pending: Vec<PendingCreate>,
    /// Acknowledged membership removals.
    pub removals_acked: u64,
    /// Acknowledged access changes.
    pub access_changes_acked: u64,
}

impl Ledger {
    /// The next sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Records an acknowledged folder of `owner`.
    pub fn add_folder(&mut self, id: &str, owner: usize) {
        self.folders.insert(id.to_owned(), FolderRec { owner });
        let rec = MemberRec {
            present: Some(true),
            access: BTreeSet::from([ts_proto::public::AccessLevel::Manage as i32]),
            owner: true,
            ..MemberRec::default()
        };
        self.members.insert((id.to_owned(), owner), rec);
    }

    /// Folders `user` created (acknowledged).
    pub fn owned_folders(&self, user: usize) -> Vec<String> {
        self.folders.iter().filter(|(_, f)| f.owner == user).map(|(id, _)| id.clone()).collect()
    }

    /// Folders `user` may read right now for certain.
    pub fn readable_folders(&self, user: usize) -> Vec<String> {
        self.members.iter().filter(|((_, u), m)| *u == user && m.readable()).map(|((f, _), _)| f.clone()).collect()
    }

    /// The membership epoch of (`folder`, `user`) and whether it is certainly readable.
    pub fn read_snapshot(&self, folder: &str, user: usize) -> (u64, bool) {
        match self.members.get(&(folder.to_owned(), user)) {
            Some(m) => (m.epoch, m.readable()),
            None => (0, false),
        }
    }

    /// Items in `folder`.
    pub fn items_in(&self, folder: &str) -> usize {
        self.items.values().filter(|i| i.folder == folder).count()
    }

    /// The summary a caller sees.
    pub fn summary(&self) -> LedgerSummary {
        let mut s = LedgerSummary {
            folders: self.folders.len() as u64,
            items: self.items.len() as u64,
            item_updates_acknowledged: self.items.values().map(|i| i.updates_acked).sum(),
            items_with_unknown_version: self.items.values().filter(|i| i.version.is_none()).count() as u64,
            access_changes_acknowledged: self.access_changes_acked,
            removals_acknowledged: self.removals_acked,
            unresolved_creates: self.pending.len() as u64,
            ..LedgerSummary::default()
        };
        for m in self.members.values() {
            if m.invite_unknown {
                s.invitations_unknown += 1;
            }
            match m.present {
                Some(true) => s.memberships_present += 1,
                Some(false) if m.last_removal_seq.is_some() => s.memberships_removed += 1,
                Some(false) => {}
                None => s.memberships_uncertain += 1,
            }
        }
        for i in self.invitations.values() {
            s.invitations += 1;
            if i.state == InvState::Accepted {
                s.invitations_accepted += 1;
            }
        }
        s
    }
}

/// Counts of what the ledger holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Acknowledged folders (each user's home folder included).
    pub folders: u64,
    /// Acknowledged items.
    pub items: u64,
    /// Acknowledged item updates.
    pub item_updates_acknowledged: u64,
    /// Items whose last update's outcome is not known yet.
    pub items_with_unknown_version: u64,
    /// Memberships expected present (folder creators included).
    pub memberships_present: u64,
    /// Memberships expected absent after an acknowledged removal.
    pub memberships_removed: u64,
    /// Memberships whose last change's outcome is not known.
    pub memberships_uncertain: u64,
    /// Acknowledged access changes.
    pub access_changes_acknowledged: u64,
    /// Acknowledged removals.
    pub removals_acknowledged: u64,
    /// Invitations known (acknowledged creates, and ones found listed for their invitee).
    pub invitations: u64,
    /// Invitations whose accept was acknowledged.
    pub invitations_accepted: u64,
    /// Creates (items, folders) whose outcome is not known yet.
    pub unresolved_creates: u64,
    /// Invitation creates whose outcome was not known (one may be pending).
    pub invitations_unknown: u64,
}
