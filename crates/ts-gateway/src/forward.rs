//! The public services, each RPC translated to the internal service that owns it. An RPC
//! marked `required` needs a valid access token; `sharing` also needs a user who may share
//! right now; `inviting` also charges the invitation send limits (given back when the
//! invitation is refused downstream); `anonymous` ones are
//! sign-in calls. Folders checks "may share" itself (and audits refusals with the folder),
//! so its services are only `required` here: asking auth twice per call would be waste.
//! Every request's shape is checked (`validate::Check`) once the caller is known and before
//! anything is charged or forwarded.

use tonic::{Request, Response, Status};
use ts_proto::public::audit_service_server::AuditService;
use ts_proto::public::auth_service_server::AuthService;
use ts_proto::public::folder_service_server::FolderService;
use ts_proto::public::invitation_service_server::InvitationService;
use ts_proto::public::item_service_server::ItemService;
use ts_proto::public::license_admin_service_server::LicenseAdminService;
use ts_proto::public::member_service_server::MemberService;
use ts_proto::public::privacy_service_server::PrivacyService;
use ts_proto::public::*;

use crate::Gateway;
use crate::authn::Caller;
use crate::downstream::forward;
use crate::validate::Check;

/// Implements a public service trait by forwarding every RPC to the same RPC on `client`.
macro_rules! translate {
    ($service:ident via $client:ident { $($who:ident $method:ident($req:ident) -> $resp:ident;)* }) => {
        #[tonic::async_trait]
        impl $service for Gateway {
            $(
                async fn $method(&self, request: Request<$req>) -> Result<Response<$resp>, Status> {
                    // Every error a client sees names its reason (google.rpc.ErrorInfo).
                    async {
                        let caller: Caller = self.authn.$who(&request, || request.get_ref().check()).await?.into();
                        let session = caller.user.as_ref().map(|u| u.session_id.as_str().to_owned());
                        let mut client = self.$client.clone();
                        let call = |r| async move { client.$method(r).await };
                        let answer = forward(request, caller.user, self.downstream_timeout, &self.trusted_proxies, call).await;
                        if stringify!($method) == "sign_out" && answer.is_ok() && let Some(sid) = &session {
                            // This gateway's own "live" answer for the session ends with it,
                            // even while Redis cannot carry the revocation.
                            self.authn.forget_live(sid);
                        }
                        if let Some(charge) = caller.charge {
                            self.authn.settle(charge, &answer).await;
                        }
                        answer
                    }
                    .await
                    .map_err(ts_contract::status::ensure_reason)
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
    required list_license_audit(ListLicenseAuditRequest) -> ListLicenseAuditResponse;
});

translate!(FolderService via folders {
    required create_folder(CreateFolderRequest) -> CreateFolderResponse;
    required list_folders(ListFoldersRequest) -> ListFoldersResponse;
    required get_folder(GetFolderRequest) -> GetFolderResponse;
    required rename_folder(RenameFolderRequest) -> RenameFolderResponse;
    required delete_folder(DeleteFolderRequest) -> DeleteFolderResponse;
    required leave_folder(LeaveFolderRequest) -> LeaveFolderResponse;
});

translate!(MemberService via members {
    required list_members(ListMembersRequest) -> ListMembersResponse;
    required update_member_access(UpdateMemberAccessRequest) -> UpdateMemberAccessResponse;
    required remove_member(RemoveMemberRequest) -> RemoveMemberResponse;
});

translate!(ItemService via items {
    required create_item(CreateItemRequest) -> CreateItemResponse;
    required get_item(GetItemRequest) -> GetItemResponse;
    required list_items(ListItemsRequest) -> ListItemsResponse;
    required update_item(UpdateItemRequest) -> UpdateItemResponse;
    required delete_item(DeleteItemRequest) -> DeleteItemResponse;
    required move_item(MoveItemRequest) -> MoveItemResponse;
});

translate!(AuditService via audit {
    required list_folder_audit(ListFolderAuditRequest) -> ListFolderAuditResponse;
    required list_my_errors(ListMyErrorsRequest) -> ListMyErrorsResponse;
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

/// How long an export or an erasure may take (a large account's parts come from folders and
/// invitations in turn).
pub const PRIVACY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The export's parts as they arrive from auth, each failure made public.
type ExportParts = tonic::codegen::BoxStream<ExportMyDataResponse>;

#[tonic::async_trait]
impl PrivacyService for Gateway {
    async fn export_my_data(&self, request: Request<ExportMyDataRequest>) -> Result<Response<ExportParts>, Status> {
        use futures::StreamExt;
        async {
            let user = self.authn.required(&request, || request.get_ref().check()).await?;
            let mut client = self.privacy.clone();
            let call = |r| async move { client.export_my_data(r).await };
            let parts = forward(request, user, PRIVACY_TIMEOUT, &self.trusted_proxies, call).await?.into_inner();
            let public = parts
                .map(|part| part.map_err(|s| ts_contract::status::ensure_reason(crate::downstream::public_status(s))));
            Ok(Response::new(Box::pin(public) as ExportParts))
        }
        .await
        .map_err(ts_contract::status::ensure_reason)
    }

    async fn delete_my_account(
        &self,
        request: Request<DeleteMyAccountRequest>,
    ) -> Result<Response<DeleteMyAccountResponse>, Status> {
        async {
            let user = self.authn.required(&request, || request.get_ref().check()).await?;
            let session = user.as_ref().map(|u| u.session_id.as_str().to_owned());
            let mut client = self.privacy.clone();
            let call = |r| async move { client.delete_my_account(r).await };
            // An erasure asks folders and invitations in turn: the downstream deadline is
            // too short for a large account.
            let answer = forward(request, user, PRIVACY_TIMEOUT, &self.trusted_proxies, call).await;
            if answer.is_ok()
                && let Some(sid) = &session
            {
                // The session ended with the account, even while Redis cannot say so.
                self.authn.forget_live(sid);
            }
            answer
        }
        .await
        .map_err(ts_contract::status::ensure_reason)
    }
}
