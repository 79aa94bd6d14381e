//! The public services, each RPC translated to the internal service that owns it. An RPC
//! marked `required` needs a valid access token; `sharing` also needs a user who may share
//! right now; `inviting` also charges the invitation send limits; `anonymous` ones are
//! sign-in calls.

use tonic::{Request, Response, Status};
use ts_proto::public::audit_service_server::AuditService;
use ts_proto::public::auth_service_server::AuthService;
use ts_proto::public::folder_service_server::FolderService;
use ts_proto::public::invitation_service_server::InvitationService;
use ts_proto::public::item_service_server::ItemService;
use ts_proto::public::license_admin_service_server::LicenseAdminService;
use ts_proto::public::member_service_server::MemberService;
use ts_proto::public::*;

use crate::Gateway;
use crate::downstream::forward;

/// Implements a public service trait by forwarding every RPC to the same RPC on `client`.
macro_rules! translate {
    ($service:ident via $client:ident { $($who:ident $method:ident($req:ident) -> $resp:ident;)* }) => {
        #[tonic::async_trait]
        impl $service for Gateway {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    let user = self.authn.$who(&request).await?;
                    let mut client = self.$client.clone();
                    forward(request, user, self.downstream_timeout, |r| async move { client.$method(r).await }).await
                }
            )*
        }
    };
}

translate!(AuthService via auth {
    anonymous start_email_verification(StartEmailVerificationRequest) -> StartEmailVerificationResponse;
    anonymous complete_email_verification(CompleteEmailVerificationRequest) -> CompleteEmailVerificationResponse;
    anonymous sign_in_with_sso(SignInWithSsoRequest) -> SignInWithSsoResponse;
    anonymous refresh_session(RefreshSessionRequest) -> RefreshSessionResponse;
    required sign_out(SignOutRequest) -> SignOutResponse;
    required get_me(GetMeRequest) -> GetMeResponse;
});

translate!(LicenseAdminService via license {
    required list_license_emails(ListLicenseEmailsRequest) -> ListLicenseEmailsResponse;
    required set_license_sharing_blocked(SetLicenseSharingBlockedRequest) -> SetLicenseSharingBlockedResponse;
    required get_license_sharing_state(GetLicenseSharingStateRequest) -> GetLicenseSharingStateResponse;
});

translate!(FolderService via folders {
    sharing create_folder(CreateFolderRequest) -> CreateFolderResponse;
    sharing list_folders(ListFoldersRequest) -> ListFoldersResponse;
    sharing get_folder(GetFolderRequest) -> GetFolderResponse;
    sharing rename_folder(RenameFolderRequest) -> RenameFolderResponse;
    sharing delete_folder(DeleteFolderRequest) -> DeleteFolderResponse;
    sharing leave_folder(LeaveFolderRequest) -> LeaveFolderResponse;
});

translate!(MemberService via members {
    sharing list_members(ListMembersRequest) -> ListMembersResponse;
    sharing update_member_access(UpdateMemberAccessRequest) -> UpdateMemberAccessResponse;
    sharing remove_member(RemoveMemberRequest) -> RemoveMemberResponse;
});

translate!(ItemService via items {
    sharing create_item(CreateItemRequest) -> CreateItemResponse;
    sharing get_item(GetItemRequest) -> GetItemResponse;
    sharing list_items(ListItemsRequest) -> ListItemsResponse;
    sharing update_item(UpdateItemRequest) -> UpdateItemResponse;
    sharing delete_item(DeleteItemRequest) -> DeleteItemResponse;
    sharing move_item(MoveItemRequest) -> MoveItemResponse;
});

translate!(AuditService via audit {
    sharing list_folder_audit(ListFolderAuditRequest) -> ListFolderAuditResponse;
    sharing list_my_errors(ListMyErrorsRequest) -> ListMyErrorsResponse;
});

translate!(InvitationService via invitations {
    inviting create_invitation(CreateInvitationRequest) -> CreateInvitationResponse;
    sharing list_my_invitations(ListMyInvitationsRequest) -> ListMyInvitationsResponse;
    sharing list_folder_invitations(ListFolderInvitationsRequest) -> ListFolderInvitationsResponse;
    sharing accept_invitation(AcceptInvitationRequest) -> AcceptInvitationResponse;
    sharing decline_invitation(DeclineInvitationRequest) -> DeclineInvitationResponse;
    sharing revoke_invitation(RevokeInvitationRequest) -> RevokeInvitationResponse;
    inviting resend_invitation(ResendInvitationRequest) -> ResendInvitationResponse;
});
