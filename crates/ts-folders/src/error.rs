//! `FoldersError`: every way a folders operation can be refused or fail, each carrying the
//! message its caller sees. The gRPC edge (`grpc/mod.rs`) holds the one mapping to
//! `tonic::Status`, so that the domain never picks a status code.

use ts_contract::ids::IdError;
use ts_crypto::CryptoError;
use ts_proto::internal::SharingDenial;
use ts_proto::public::AccessLevel;

use crate::items::MAX_ITEMS_PER_FOLDER;
use crate::privacy::Blocker;

/// A keyvault refusal that folders passes on to its caller as it came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyvaultRefusal {
    /// No such key (version).
    NotFound,
    /// Keyvault refused the request's form.
    InvalidArgument,
    /// Keyvault cannot do it in its current state.
    FailedPrecondition,
}

/// Why a folders operation did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum FoldersError {
    /// A request id that is not in its format (INVALID_ARGUMENT).
    #[error(transparent)]
    Id(#[from] IdError),
    /// A request field that failed validation; the message names the field, never its
    /// value (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A folder-scoped RPC without a folder id (INVALID_ARGUMENT).
    #[error("folder_id is required")]
    FolderIdRequired,
    /// A page token this RPC did not make (INVALID_ARGUMENT).
    #[error("page.page_token is not valid here; use the next_page_token of the previous page")]
    PageToken,
    /// A page token whose position does not read (INVALID_ARGUMENT).
    #[error("page.page_token is not valid here")]
    PagePosition,
    /// An `expected_version` no item can have (INVALID_ARGUMENT).
    #[error("expected_version is out of range")]
    ExpectedVersionRange,
    /// An update whose content is of another kind than the item (INVALID_ARGUMENT).
    #[error("content cannot change the item's kind")]
    KindChange,
    /// A move into the folder the item is in (INVALID_ARGUMENT).
    #[error("target_folder_id must differ from folder_id")]
    SameTarget,
    /// An ingested event without its action or outcome (INVALID_ARGUMENT).
    #[error("action and status_code are required")]
    AuditFieldsRequired,
    /// A license audit listing without a license (INVALID_ARGUMENT).
    #[error("license_id is required")]
    LicenseIdRequired,
    /// No such folder, or the caller is not a member (NOT_FOUND).
    #[error("folder not found")]
    FolderNotFound,
    /// A move into a folder that does not exist for the caller (NOT_FOUND).
    #[error("target folder not found")]
    TargetFolderNotFound,
    /// No such item in the folder (NOT_FOUND).
    #[error("item not found")]
    ItemNotFound,
    /// No such member of the folder (NOT_FOUND).
    #[error("member not found")]
    MemberNotFound,
    /// The caller's access is below what the RPC needs (PERMISSION_DENIED).
    #[error("this needs {} access; you have {}", level_name(*.need), level_name(*.have))]
    Access {
        /// The least access the RPC needs.
        need: AccessLevel,
        /// The caller's access.
        have: AccessLevel,
    },
    /// The change would leave the folder without a MANAGE member (FAILED_PRECONDITION).
    #[error("a folder must keep at least one MANAGE member; give someone else MANAGE first")]
    LastManager,
    /// An erasure that would leave folders with members but no manager: the user is their
    /// last MANAGE member (FAILED_PRECONDITION, LAST_MANAGER, a PreconditionFailure naming
    /// each folder).
    #[error("the user is the last MANAGE member of {} folder(s) with other members", .0.len())]
    LastManagerOf(Vec<Blocker>),
    /// The caller's account was erased (UNAUTHENTICATED, UNKNOWN_USER): a write that raced
    /// its erasure was undone.
    #[error("the account was erased")]
    Erased,
    /// An erasure kept finding a folder's members changed under it (ABORTED).
    #[error("the folder's members kept changing during the erasure; run it again")]
    MembersKeptChanging,
    /// Auth says the caller may not share right now (`ts_contract::status::sharing_refusal`).
    #[error("sharing refused: {0:?}")]
    SharingRefused(SharingDenial),
    /// A change that takes access away is saved, but its new generation could not be written
    /// to Redis, so other replicas may not see it yet (UNAVAILABLE: the same request again
    /// is safe and makes it visible).
    #[error("the change is saved but may not be seen everywhere yet; retry the same request")]
    NotYetEverywhere,
    /// Auth could not be asked whether the caller may share (UNAVAILABLE).
    #[error("cannot check sharing permission right now; retry later")]
    SharingUnknown,
    /// The item is no longer at the version the caller read (ABORTED).
    #[error("the item changed: expected_version is {expected} but the item is at version {current}; read it again")]
    Stale {
        /// The version the caller named.
        expected: u64,
        /// The item's version when it was read.
        current: i64,
    },
    /// The folder holds as many items as it may (RESOURCE_EXHAUSTED).
    #[error("a folder holds at most {MAX_ITEMS_PER_FOLDER} items")]
    FolderFull,
    /// A `request_id` used before by the caller for another request (ALREADY_EXISTS).
    #[error("request_id was already used for a different request; choose a new one")]
    RequestIdReused,
    /// A create with this `request_id` has not finished, or what it made is no longer the
    /// caller's (ABORTED).
    #[error("a create with this request_id is in progress or was undone; retry, or use a new request_id")]
    RequestInProgress,
    /// A re-encryption pass kept racing writers (ABORTED).
    #[error("items kept changing during re-encryption; run the pass again")]
    KeptChanging,
    /// Keyvault's own answer, passed on with its code and message.
    #[error("{message}")]
    Keyvault {
        /// Its code.
        refusal: KeyvaultRefusal,
        /// Its message.
        message: String,
    },
    /// Keyvault is unreachable or too slow (UNAVAILABLE).
    #[error("data keys are unavailable; retry later")]
    KeysUnavailable,
    /// Keyvault failed otherwise; its answer is logged (INTERNAL).
    #[error("data keys cannot be read")]
    KeysUnreadable,
    /// Keyvault answered with bytes that are not a key (INTERNAL).
    #[error("keyvault returned a malformed key")]
    MalformedKey,
    /// A stored folder or item lacks a part it must have, such as "a key version" (INTERNAL).
    #[error("stored {what} without {part}")]
    Incomplete {
        /// `folder` or `item`.
        what: &'static str,
        /// The missing part.
        part: &'static str,
    },
    /// Sealing failed (INTERNAL).
    #[error("cannot seal {what}: {source}")]
    Seal {
        /// The field, or `page token`.
        what: String,
        /// Why.
        source: CryptoError,
    },
    /// A stored field does not open under its key (DATA_LOSS); the cause is logged.
    #[error("item {item_id}: field {field} cannot be decrypted")]
    Undecryptable {
        /// The item (or folder) id.
        item_id: String,
        /// The field.
        field: String,
    },
    /// Stored content opens but does not decode (DATA_LOSS).
    #[error("item {0}: stored content cannot be decoded")]
    Undecodable(String),
    /// MongoDB failed (UNAVAILABLE); the cause is logged where it becomes a status.
    #[error("folder store is unavailable; retry later")]
    Store(#[from] mongodb::error::Error),
}

impl FoldersError {
    /// An INVALID_ARGUMENT refusal of `field`: `"{field} {why}"`.
    pub fn invalid(field: &str, why: &str) -> Self {
        FoldersError::Invalid(format!("{field} {why}"))
    }
}

/// An access level as messages name it.
pub fn level_name(level: AccessLevel) -> &'static str {
    match level {
        AccessLevel::View => "VIEW",
        AccessLevel::Edit => "EDIT",
        AccessLevel::Manage => "MANAGE",
        AccessLevel::Unspecified => "no",
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, Status};

    use super::FoldersError;

    #[test]
    fn an_unreadable_stored_document_is_data_loss_and_an_outage_is_unavailable() {
        let (unreadable, outage) = ts_stores::testing::store_failures();
        assert_eq!(Status::from(FoldersError::Store(unreadable)).code(), Code::DataLoss);
        let down = Status::from(FoldersError::Store(outage));
        assert_eq!(down.code(), Code::Unavailable);
        assert!(!down.message().contains("refused"), "the cause stays in the logs");
    }

    #[test]
    fn a_refused_erasure_names_each_folder_and_an_erased_account_is_unknown() {
        use ts_contract::ids::FolderId;
        use ts_contract::status::reason_of;

        use crate::privacy::Blocker;

        let (f1, f2) = (FolderId::new(), FolderId::new());
        let blocking = vec![
            Blocker { folder_id: f1.clone(), folder_name: "Ops".into(), other_members: 2 },
            Blocker { folder_id: f2.clone(), folder_name: "Dev".into(), other_members: 1 },
        ];
        let refused = Status::from(FoldersError::LastManagerOf(blocking));
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason_of(&refused).as_deref(), Some("LAST_MANAGER"));
        assert!(refused.message().contains(&format!("folders/{f1}")), "{}", refused.message());
        assert!(refused.message().contains(&format!("folders/{f2}")), "{}", refused.message());

        let erased = Status::from(FoldersError::Erased);
        assert_eq!(erased.code(), Code::Unauthenticated);
        assert_eq!(reason_of(&erased).as_deref(), Some("UNKNOWN_USER"));
        assert_eq!(erased.message(), "the account was erased");
        assert_eq!(Status::from(FoldersError::MembersKeptChanging).code(), Code::Aborted);
    }
}
