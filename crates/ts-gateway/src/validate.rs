//! The shape of every public request, checked at the edge before anything is charged,
//! forwarded, cached or audited: ids in their exact format, page tokens bounded, and an
//! invitation's email and access level (so that a malformed invitation never spends the
//! sender's rate-limit budget). Each service checks again what it owns; this is the line
//! no oversized or malformed id crosses.

use tonic::Status;
use ts_contract::email::Email;
use ts_contract::ids;
use ts_proto::public::*;

/// A public request whose fields can be checked without any store.
pub trait Check {
    /// INVALID_ARGUMENT naming the first malformed field.
    fn check(&self) -> Result<(), Status>;
}

fn id(field: &str, raw: &str) -> Result<(), Status> {
    ids::require_uuid(field, raw).map(drop)
}

fn license(field: &str, raw: &str) -> Result<(), Status> {
    ids::require_license_id(field, raw).map(drop)
}

fn page(field: &str, raw: &Option<PageRequest>) -> Result<(), Status> {
    match raw {
        Some(p) => ids::check_page_token(&format!("{field}.page_token"), &p.page_token),
        None => Ok(()),
    }
}

fn email(field: &str, raw: &str) -> Result<(), Status> {
    Email::parse(raw).map(drop).map_err(|why| Status::invalid_argument(format!("{field} {why}")))
}

fn level(field: &str, raw: &i32) -> Result<(), Status> {
    ts_contract::status::access_level(field, *raw).map(drop)
}

/// `Check` for each request type: the listed fields, each with its rule.
macro_rules! checks {
    ($($ty:ident { $($rule:ident $field:ident),* })*) => {
        $(
            impl Check for $ty {
                fn check(&self) -> Result<(), Status> {
                    $( $rule(stringify!($field), &self.$field)?; )*
                    Ok(())
                }
            }
        )*
    };
}

checks! {
    StartEmailVerificationRequest {}
    CompleteEmailVerificationRequest {}
    SignInWithSsoRequest {}
    RefreshSessionRequest {}
    SignOutRequest {}
    GetMeRequest {}

    ListLicenseEmailsRequest { license license_id, page page }
    ListLicenseAuditRequest { license license_id, page page }
    SetLicenseSharingBlockedRequest { license license_id }
    GetLicenseSharingStateRequest { license license_id }

    CreateFolderRequest {}
    ListFoldersRequest { page page }
    GetFolderRequest { id folder_id }
    RenameFolderRequest { id folder_id }
    DeleteFolderRequest { id folder_id }
    LeaveFolderRequest { id folder_id }

    ListMembersRequest { id folder_id, page page }
    UpdateMemberAccessRequest { id folder_id, id user_id }
    RemoveMemberRequest { id folder_id, id user_id }

    CreateItemRequest { id folder_id }
    GetItemRequest { id folder_id, id item_id }
    ListItemsRequest { id folder_id, page page }
    UpdateItemRequest { id folder_id, id item_id }
    DeleteItemRequest { id folder_id, id item_id }
    MoveItemRequest { id folder_id, id item_id, id target_folder_id }

    ListFolderAuditRequest { id folder_id, page page }
    ListMyErrorsRequest { page page }

    CreateInvitationRequest { id folder_id, email invitee_email, level access }
    ListMyInvitationsRequest { page page }
    ListFolderInvitationsRequest { id folder_id, page page }
    AcceptInvitationRequest { id invitation_id }
    DeclineInvitationRequest { id invitation_id }
    RevokeInvitationRequest { id invitation_id }
    ResendInvitationRequest { id invitation_id }

    ExportMyDataRequest {}
    DeleteMyAccountRequest { email confirm_email }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0b8c5f7e-1a2b-4c3d-9e8f-001122334455";

    #[test]
    fn malformed_ids_are_refused_naming_the_field() {
        let e = GetItemRequest { folder_id: GOOD.into(), item_id: "x".repeat(3 << 20) }.check().unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("item_id "), "{}", e.message());
        assert!(e.message().len() < 100);
        let e = MoveItemRequest {
            folder_id: GOOD.into(),
            item_id: GOOD.into(),
            target_folder_id: GOOD.to_uppercase(),
            ..Default::default()
        }
        .check()
        .unwrap_err();
        assert!(e.message().starts_with("target_folder_id "));
        assert!(GetItemRequest { folder_id: GOOD.into(), item_id: GOOD.into() }.check().is_ok());
    }

    #[test]
    fn page_tokens_and_license_ids_are_bounded() {
        let page = Some(PageRequest { page_size: 10, page_token: "t".repeat(ids::MAX_PAGE_TOKEN + 1) });
        let e = ListItemsRequest { folder_id: GOOD.into(), page }.check().unwrap_err();
        assert!(e.message().starts_with("page.page_token "));
        assert!(ListFoldersRequest { page: None }.check().is_ok());
        let e = GetLicenseSharingStateRequest { license_id: "a b".into() }.check().unwrap_err();
        assert!(e.message().starts_with("license_id "));
    }

    #[test]
    fn an_invitation_is_checked_whole() {
        let ok = CreateInvitationRequest {
            folder_id: GOOD.into(),
            invitee_email: "bob@example.com".into(),
            access: AccessLevel::Edit as i32,
            ..Default::default()
        };
        assert!(ok.check().is_ok());
        let e = CreateInvitationRequest { invitee_email: "not-an-email".into(), ..ok.clone() }.check().unwrap_err();
        assert!(e.message().starts_with("invitee_email "));
        let e = CreateInvitationRequest { access: 0, ..ok.clone() }.check().unwrap_err();
        assert!(e.message().starts_with("access "));
        let e = CreateInvitationRequest { access: 42, ..ok }.check().unwrap_err();
        assert!(e.message().starts_with("access "));
    }
}
