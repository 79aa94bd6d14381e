//! `InvitationService`: each handler reads the caller and its request, calls the domain, and
//! audits the outcome.

use crate::error::InvitationsError;
use tonic::{Request, Response, Status};
use ts_contract::ids::{FolderId, RequestId};
use ts_proto::public::invitation_service_server::InvitationService;
use ts_proto::public::*;

use super::{Audit, InvitationsApi, caller, invitation_id, invitee_email, listed, message, requested_access};

#[tonic::async_trait]
impl InvitationService for InvitationsApi {
    async fn create_invitation(
        &self,
        request: Request<CreateInvitationRequest>,
    ) -> Result<Response<CreateInvitationResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let folder_id = FolderId::parse("folder_id", &req.folder_id);
        let result = async {
            // Only a manager learns whether the rest of the request is well-formed.
            let manager = self.invitations.manager(folder_id.clone()?, &user).await?;
            let (invitee, access) = (invitee_email(&req.invitee_email)?, requested_access(req.access)?);
            let request = RequestId::parse_optional("request_id", &req.request_id)
                .map_err(|e| InvitationsError::invalid(e.into()))?;
            // Its own task: a client that goes away mid-way cannot leave an invitation that
            // was stored but never mailed.
            let (invitations, user) = (self.invitations.clone(), user.clone());
            tokio::spawn(async move { invitations.invite(&user, &manager, invitee, access, request.as_ref()).await })
                .await
                .map_err(|_| InvitationsError::CreateInterrupted)?
        }
        .await;
        let view = self.audited(&user, folder_id.as_ref().ok(), "invitation.create", Audit::Always, result).await?;
        Ok(Response::new(CreateInvitationResponse { invitation: Some(message(view)) }))
    }

    async fn list_my_invitations(
        &self,
        request: Request<ListMyInvitationsRequest>,
    ) -> Result<Response<ListMyInvitationsResponse>, Status> {
        let user = caller(&request)?;
        let page = self.page(&request.get_ref().page)?;
        let (invitations, page) = listed(self.invitations.list_mine(&user, page).await?);
        Ok(Response::new(ListMyInvitationsResponse { invitations, page }))
    }

    async fn list_folder_invitations(
        &self,
        request: Request<ListFolderInvitationsRequest>,
    ) -> Result<Response<ListFolderInvitationsResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let folder_id = FolderId::parse("folder_id", &req.folder_id);
        let result = async {
            let manager = self.invitations.manager(folder_id.clone()?, &user).await?;
            self.invitations.list_folder(&manager, self.page(&req.page)?).await
        }
        .await;
        let found =
            self.audited(&user, folder_id.as_ref().ok(), "invitation.list_folder", Audit::Failures, result).await?;
        let (invitations, page) = listed(found);
        Ok(Response::new(ListFolderInvitationsResponse { invitations, page }))
    }

    async fn accept_invitation(
        &self,
        request: Request<AcceptInvitationRequest>,
    ) -> Result<Response<AcceptInvitationResponse>, Status> {
        let user = caller(&request)?;
        let raw_id = &request.get_ref().invitation_id;
        let accept = |id| self.invitations.accept(&user, id);
        let accepted = self.on_invitation(&user, raw_id, "invitation.accept", accept, |a| &a.folder_id).await?;
        Ok(Response::new(AcceptInvitationResponse {
            folder_id: accepted.folder_id.into(),
            access: accepted.access as i32,
        }))
    }

    async fn decline_invitation(
        &self,
        request: Request<DeclineInvitationRequest>,
    ) -> Result<Response<DeclineInvitationResponse>, Status> {
        let user = caller(&request)?;
        let mut folder_id = None;
        let result = async {
            let id = invitation_id(&request.get_ref().invitation_id)?;
            let invitation = self.invitations.addressed_to(&user, &id).await?;
            folder_id = Some(invitation.folder_id().clone());
            self.invitations.decline(&invitation).await
        }
        .await;
        self.audited(&user, folder_id.as_ref(), "invitation.decline", Audit::Always, result).await?;
        Ok(Response::new(DeclineInvitationResponse {}))
    }

    async fn revoke_invitation(
        &self,
        request: Request<RevokeInvitationRequest>,
    ) -> Result<Response<RevokeInvitationResponse>, Status> {
        let user = caller(&request)?;
        let raw_id = &request.get_ref().invitation_id;
        let revoke = |id| self.invitations.revoke(&user, id);
        self.on_invitation(&user, raw_id, "invitation.revoke", revoke, |folder_id| folder_id).await?;
        Ok(Response::new(RevokeInvitationResponse {}))
    }

    async fn resend_invitation(
        &self,
        request: Request<ResendInvitationRequest>,
    ) -> Result<Response<ResendInvitationResponse>, Status> {
        let user = caller(&request)?;
        let raw_id = &request.get_ref().invitation_id;
        let resend = |id| self.invitations.resend(&user, id);
        let view = self.on_invitation(&user, raw_id, "invitation.resend", resend, |v| &v.invitation.folder_id).await?;
        Ok(Response::new(ResendInvitationResponse { invitation: Some(message(view)) }))
    }
}
