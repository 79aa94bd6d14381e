//! `MemberService`: list members, change a member's access, remove a member.

use tonic::{Request, Response, Status};
use ts_contract::ids::UserId;
use ts_proto::public::member_service_server::MemberService;
use ts_proto::public::*;

use super::{FoldersApi, page, timestamp};
use crate::audit::AuditAction;
use crate::paging::PageAsk;
use crate::store::MemberDoc;

fn member_message(m: MemberDoc) -> Member {
    Member { access: m.level() as i32, user_id: m.user_id.into(), email: m.email, join_time: timestamp(m.joined_at) }
}

#[tonic::async_trait]
impl MemberService for FoldersApi {
    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let req = request.get_ref();
        let ask = PageAsk::from_request(&req.page);
        let listed = self
            .in_folder(&request, AuditAction::MemberList, &req.folder_id, AccessLevel::View, |_, at| async move {
                Ok(self.folders.list_members(&at.folder_id, &ask).await?)
            })
            .await?;
        let members = listed.items.into_iter().map(member_message).collect();
        Ok(Response::new(ListMembersResponse { members, page: page(listed.next_token) }))
    }

    async fn update_member_access(
        &self,
        request: Request<UpdateMemberAccessRequest>,
    ) -> Result<Response<UpdateMemberAccessResponse>, Status> {
        let req = request.get_ref();
        let action = AuditAction::MemberUpdateAccess;
        let member = self
            .in_folder(&request, action, &req.folder_id, AccessLevel::Manage, |_, at| async move {
                let level = ts_contract::status::access_level("access", req.access)?;
                let user_id = UserId::parse("user_id", &req.user_id)?;
                Ok(self.folders.update_access(&at.folder_id, &user_id, level).await?)
            })
            .await?;
        Ok(Response::new(UpdateMemberAccessResponse { member: Some(member_message(member)) }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let req = request.get_ref();
        self.in_folder(&request, AuditAction::MemberRemove, &req.folder_id, AccessLevel::Manage, |_, at| async move {
            let user_id = UserId::parse("user_id", &req.user_id)?;
            Ok(self.folders.remove_member(&at.folder_id, &user_id).await?)
        })
        .await?;
        Ok(Response::new(RemoveMemberResponse {}))
    }
}
