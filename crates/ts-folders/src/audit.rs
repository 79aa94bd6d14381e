//! The audit trail: every mutation and every failure of a folders RPC, events that other
//! services record here, and the listings that read them (a folder's trail, a user's own
//! errors, a license's events).

use std::time::Duration;

use ts_contract::audit::bounded;
use ts_contract::clock::bson_date;
use ts_contract::ids::{FolderId, UserId};

use crate::paging::{EventCursor, Page, PageAsk};
use crate::store::{AuditEventDoc, EventScope};
use crate::{Folders, FoldersError};

/// An action of this service, as the trail names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AuditAction {
    /// CreateFolder.
    #[serde(rename = "folder.create")]
    FolderCreate,
    /// ListFolders.
    #[serde(rename = "folder.list")]
    FolderList,
    /// GetFolder.
    #[serde(rename = "folder.get")]
    FolderGet,
    /// RenameFolder.
    #[serde(rename = "folder.rename")]
    FolderRename,
    /// DeleteFolder.
    #[serde(rename = "folder.delete")]
    FolderDelete,
    /// LeaveFolder.
    #[serde(rename = "folder.leave")]
    FolderLeave,
    /// ListMembers.
    #[serde(rename = "member.list")]
    MemberList,
    /// UpdateMemberAccess.
    #[serde(rename = "member.update_access")]
    MemberUpdateAccess,
    /// RemoveMember.
    #[serde(rename = "member.remove")]
    MemberRemove,
    /// CreateItem.
    #[serde(rename = "item.create")]
    ItemCreate,
    /// GetItem.
    #[serde(rename = "item.get")]
    ItemGet,
    /// ListItems.
    #[serde(rename = "item.list")]
    ItemList,
    /// UpdateItem.
    #[serde(rename = "item.update")]
    ItemUpdate,
    /// DeleteItem.
    #[serde(rename = "item.delete")]
    ItemDelete,
    /// MoveItem.
    #[serde(rename = "item.move")]
    ItemMove,
    /// ListFolderAudit.
    #[serde(rename = "audit.list_folder")]
    AuditListFolder,
    /// ListMyErrors.
    #[serde(rename = "audit.list_my_errors")]
    AuditListMyErrors,
    /// The operator's RotateFolderKey.
    #[serde(rename = "operator.rotate_folder_key")]
    OperatorRotateFolderKey,
    /// The operator's ReencryptFolder.
    #[serde(rename = "operator.reencrypt_folder")]
    OperatorReencryptFolder,
}

impl AuditAction {
    /// Every action, for tests and tools.
    pub const ALL: [AuditAction; 19] = [
        AuditAction::FolderCreate,
        AuditAction::FolderList,
        AuditAction::FolderGet,
        AuditAction::FolderRename,
        AuditAction::FolderDelete,
        AuditAction::FolderLeave,
        AuditAction::MemberList,
        AuditAction::MemberUpdateAccess,
        AuditAction::MemberRemove,
        AuditAction::ItemCreate,
        AuditAction::ItemGet,
        AuditAction::ItemList,
        AuditAction::ItemUpdate,
        AuditAction::ItemDelete,
        AuditAction::ItemMove,
        AuditAction::AuditListFolder,
        AuditAction::AuditListMyErrors,
        AuditAction::OperatorRotateFolderKey,
        AuditAction::OperatorReencryptFolder,
    ];

    /// The name stored in the trail, such as `item.create`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::FolderCreate => "folder.create",
            AuditAction::FolderList => "folder.list",
            AuditAction::FolderGet => "folder.get",
            AuditAction::FolderRename => "folder.rename",
            AuditAction::FolderDelete => "folder.delete",
            AuditAction::FolderLeave => "folder.leave",
            AuditAction::MemberList => "member.list",
            AuditAction::MemberUpdateAccess => "member.update_access",
            AuditAction::MemberRemove => "member.remove",
            AuditAction::ItemCreate => "item.create",
            AuditAction::ItemGet => "item.get",
            AuditAction::ItemList => "item.list",
            AuditAction::ItemUpdate => "item.update",
            AuditAction::ItemDelete => "item.delete",
            AuditAction::ItemMove => "item.move",
            AuditAction::AuditListFolder => "audit.list_folder",
            AuditAction::AuditListMyErrors => "audit.list_my_errors",
            AuditAction::OperatorRotateFolderKey => "operator.rotate_folder_key",
            AuditAction::OperatorReencryptFolder => "operator.reencrypt_folder",
        }
    }

    /// Whether a success is recorded too (failures always are).
    pub fn mutating(self) -> bool {
        !matches!(
            self,
            AuditAction::FolderList
                | AuditAction::FolderGet
                | AuditAction::MemberList
                | AuditAction::ItemGet
                | AuditAction::ItemList
                | AuditAction::AuditListFolder
                | AuditAction::AuditListMyErrors
        )
    }
}

impl std::fmt::Display for AuditAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event's parts, as the recording side knows them; each is bounded when stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditEntry<'a> {
    /// Who acted: their email, or `operator`.
    pub actor_email: &'a str,
    /// Their user id, or empty.
    pub actor_user_id: &'a str,
    /// The folder concerned, or empty.
    pub folder_id: &'a str,
    /// The license concerned, or empty.
    pub license_id: &'a str,
    /// Action name.
    pub action: &'a str,
    /// gRPC code name of the outcome.
    pub status_code: &'a str,
    /// The request id.
    pub request_id: &'a str,
}

/// Folders keeps the trail itself: its own calls' events are written here directly.
impl ts_runtime::audit::Trail for Folders {
    async fn record(&self, event: ts_contract::audit::Event) {
        let request_id = ts_runtime::server::current_request_id().map(|r| r.0).unwrap_or_default();
        self.record_audit(AuditEntry {
            actor_email: &event.actor_email,
            actor_user_id: &event.actor_user_id,
            folder_id: &event.folder_id,
            license_id: &event.license_id,
            action: &event.action,
            status_code: ts_contract::status::code_name(event.code),
            request_id: &request_id,
        })
        .await;
    }
}

/// How long an audit event is kept.
fn retention(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * 86_400)
}

/// Audit listings: 100 events by default, at most 500.
const PAGE: (u32, u32) = (100, 500);

impl Folders {
    /// Appends an event; a failure to write it is logged, never hidden from operators.
    pub(crate) async fn record_audit(&self, e: AuditEntry<'_>) {
        let now = self.now();
        let event = AuditEventDoc {
            // Time-ordered: events of one instant (a stopped test clock) still list newest first.
            id: uuid::Uuid::now_v7().to_string(),
            time: bson_date(now),
            actor_email: bounded(e.actor_email),
            actor_user_id: bounded(e.actor_user_id),
            folder_id: bounded(e.folder_id),
            license_id: bounded(e.license_id),
            action: bounded(e.action),
            status_code: bounded(e.status_code),
            request_id: bounded(e.request_id),
            expires_at: Some(bson_date(now + retention(self.audit_retention_days))),
        };
        if let Err(err) = self.store.insert_event(&event).await {
            tracing::error!(error = %err, action = e.action, code = e.status_code, "cannot write audit event");
            return;
        }
        // An erased account's event (one that raced its erasure) names its pseudonym only.
        self.pseudonymise_if_erased(&event).await;
    }

    /// Records an event that another service reports.
    pub(crate) async fn ingest_audit(&self, e: AuditEntry<'_>) -> Result<(), FoldersError> {
        if e.action.is_empty() || e.status_code.is_empty() {
            return Err(FoldersError::AuditFieldsRequired);
        }
        self.record_audit(e).await;
        Ok(())
    }

    /// A folder's trail, newest first (the caller was checked for MANAGE).
    pub(crate) async fn folder_events(
        &self,
        folder_id: &FolderId,
        ask: &PageAsk,
    ) -> Result<Page<AuditEventDoc>, FoldersError> {
        self.events(EventScope::Folder(folder_id), ask).await
    }

    /// A user's own failed actions, newest first.
    pub(crate) async fn my_errors(
        &self,
        user_id: &UserId,
        email: &str,
        ask: &PageAsk,
    ) -> Result<Page<AuditEventDoc>, FoldersError> {
        self.events(EventScope::Errors { user_id, email }, ask).await
    }

    /// A license's events, newest first (auth checked that its caller is an admin of it).
    pub(crate) async fn license_events(
        &self,
        license_id: &str,
        ask: &PageAsk,
    ) -> Result<Page<AuditEventDoc>, FoldersError> {
        if license_id.is_empty() {
            return Err(FoldersError::LicenseIdRequired);
        }
        self.events(EventScope::License(license_id), ask).await
    }

    async fn events(&self, scope: EventScope<'_>, ask: &PageAsk) -> Result<Page<AuditEventDoc>, FoldersError> {
        let after = ask.token().map(EventCursor::decode).transpose()?;
        let (events, more) = self.store.event_page(scope, after.as_ref(), ask.size(PAGE.0, PAGE.1)).await?;
        let next_token = match (more, events.last()) {
            (true, Some(last)) => EventCursor { time: last.time, id: last.id.clone() }.encode(),
            _ => String::new(),
        };
        Ok(Page { items: events, next_token })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_events_are_kept_for_their_retention_in_days() {
        assert_eq!(retention(365), Duration::from_secs(365 * 24 * 3600));
        assert_eq!(retention(1), Duration::from_secs(86_400));
    }

    #[test]
    fn actions_keep_their_stored_names() {
        for action in AuditAction::ALL {
            let stored = bson::to_bson(&action).unwrap();
            assert_eq!(stored, bson::Bson::String(action.as_str().to_owned()), "{action:?}");
            assert_eq!(bson::from_bson::<AuditAction>(stored).unwrap(), action);
        }
        assert_eq!(AuditAction::ItemCreate.as_str(), "item.create");
        assert_eq!(AuditAction::OperatorReencryptFolder.as_str(), "operator.reencrypt_folder");
        assert!(AuditAction::FolderLeave.mutating() && !AuditAction::ItemGet.mutating());
    }
}
