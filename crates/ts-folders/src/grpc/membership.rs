//! `FolderMembershipService`, what invitations (and the gateway) ask of folders: a user's
//! membership, and adding the member an accepted invitation makes.

use tonic::{Request, Response, Status};
use ts_contract::ids::{FolderId, InvitationId, UserId};
use ts_proto::internal::folder_membership_service_server::FolderMembershipService;
use ts_proto::internal::{
    AddMemberRefusal, AddMemberRequest, AddMemberResponse, GetMembershipRequest, GetMembershipResponse,
    GetMembershipsRequest, GetMembershipsResponse,
};
use ts_proto::public::AccessLevel;

use super::{FoldersApi, own_task};
use crate::members::Invited;
use crate::store::Added;
use crate::validate::check_email;

/// Most pairs one GetMemberships looks up.
const MAX_LOOKUPS: usize = 500;

#[tonic::async_trait]
impl FolderMembershipService for FoldersApi {
    async fn get_membership(
        &self,
        request: Request<GetMembershipRequest>,
    ) -> Result<Response<GetMembershipResponse>, Status> {
        let req = request.into_inner();
        let folder_id = FolderId::parse("folder_id", &req.folder_id)?;
        let user_id = UserId::parse("user_id", &req.user_id)?;
        let m = self.folders.membership(&folder_id, &user_id).await?;
        Ok(Response::new(GetMembershipResponse {
            access: m.access as i32,
            folder_name: m.folder_name,
            folder_exists: m.folder_exists,
            manage_epoch: m.manage_epoch,
        }))
    }

    async fn get_memberships(
        &self,
        request: Request<GetMembershipsRequest>,
    ) -> Result<Response<GetMembershipsResponse>, Status> {
        let lookups = request.into_inner().lookups;
        if lookups.len() > MAX_LOOKUPS {
            return Err(Status::invalid_argument(format!("lookups: at most {MAX_LOOKUPS} at once")));
        }
        let pairs = lookups
            .iter()
            .map(|l| {
                Ok((FolderId::parse("lookups.folder_id", &l.folder_id)?, UserId::parse("lookups.user_id", &l.user_id)?))
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let memberships = self
            .folders
            .memberships(&pairs)
            .await?
            .into_iter()
            .map(|m| GetMembershipResponse {
                access: m.access as i32,
                folder_name: m.folder_name,
                folder_exists: m.folder_exists,
                manage_epoch: String::new(),
            })
            .collect();
        Ok(Response::new(GetMembershipsResponse { memberships }))
    }

    async fn add_member(&self, request: Request<AddMemberRequest>) -> Result<Response<AddMemberResponse>, Status> {
        let req = request.into_inner();
        let access = ts_contract::status::access_level("access", req.access)?;
        let folder_id = FolderId::parse("folder_id", &req.folder_id)?;
        let user_id = UserId::parse("user_id", &req.user_id)?;
        let invitation_id = InvitationId::parse("invitation_id", &req.invitation_id)?;
        let inviter = match req.inviter_user_id.as_str() {
            "" => None,
            raw => Some(UserId::parse("inviter_user_id", raw)?),
        };
        let email = check_email("email", &req.email)?;
        let invited = Invited {
            folder_id,
            user_id,
            email,
            access,
            invitation_id,
            inviter,
            inviter_epoch: req.inviter_manage_epoch,
        };
        // Its own task: the membership always reaches its check against an erasure that
        // raced it, whoever hangs up.
        let folders = self.folders.clone();
        let added = own_task("add_member", async move { folders.add_invited(invited).await }).await?;
        let (created, refusal, access) = match added {
            Added::Created(l) => (true, AddMemberRefusal::Unspecified, l),
            Added::Existing(l) => (false, AddMemberRefusal::Unspecified, l),
            Added::Refused(r) => (false, r, AccessLevel::Unspecified),
        };
        Ok(Response::new(AddMemberResponse { created, refusal: refusal as i32, access: access as i32 }))
    }
}
