//! `MemberService` (list, change access, remove) and the internal `FolderMembershipService`
//! that invitations uses (look up, add idempotently).

use bson::{Document, doc};
use tonic::{Request, Response, Status};
use ts_contract::email::Email;
use ts_contract::ids;
use ts_proto::internal::folder_membership_service_server::FolderMembershipService;
use ts_proto::internal::{
    AddMemberRefusal, AddMemberRequest, AddMemberResponse, GetMembershipRequest, GetMembershipResponse,
};
use ts_proto::public::member_service_server::MemberService;
use ts_proto::public::*;

use crate::context::Call;
use crate::membership::{Added, level_of};
use crate::paging::{open_plain, page_size, plain_token, token};
use crate::{FoldersApi, find_page, store_error, timestamp};

fn member_message(m: &Document) -> Member {
    Member {
        user_id: m.get_str("user_id").unwrap_or_default().to_owned(),
        email: m.get_str("email").unwrap_or_default().to_owned(),
        access: level_of(m) as i32,
        join_time: timestamp(m, "joined_at"),
    }
}

impl FoldersApi {
    async fn list_members_page(&self, call: &Call, req: ListMembersRequest) -> Result<ListMembersResponse, Status> {
        self.require(call, &req.folder_id, AccessLevel::View).await?;
        let size = page_size(&req.page, 100, 500);
        let mut filter = doc! { "folder_id": &req.folder_id };
        if let Some(t) = token(&req.page) {
            let p = open_plain(t, 2)?;
            filter.insert(
                "$or",
                vec![doc! { "email": { "$gt": &p[0] } }, doc! { "email": &p[0], "user_id": { "$gt": &p[1] } }],
            );
        }
        let (docs, more) = find_page(&self.members(), filter, doc! { "email": 1, "user_id": 1 }, size).await?;
        let members: Vec<Member> = docs.iter().map(member_message).collect();
        let next = match (more, members.last()) {
            (true, Some(last)) => plain_token(&[last.email.clone(), last.user_id.clone()]),
            _ => String::new(),
        };
        Ok(ListMembersResponse { members, page: Some(PageResponse { next_page_token: next }) })
    }

    async fn update_access(&self, call: &Call, req: UpdateMemberAccessRequest) -> Result<Member, Status> {
        self.require(call, &req.folder_id, AccessLevel::Manage).await?;
        let new = ts_contract::status::access_level("access", req.access)?;
        let user_id = ids::require_uuid("user_id", &req.user_id)?;
        let result = self.set_access(&req.folder_id, user_id, new).await;
        // Forgotten whatever the outcome: a refused change leaves nothing stale either.
        self.forget_members(&req.folder_id, std::slice::from_ref(&req.user_id)).await;
        Ok(member_message(&result?))
    }

    async fn remove(&self, call: &Call, req: RemoveMemberRequest) -> Result<(), Status> {
        self.require(call, &req.folder_id, AccessLevel::Manage).await?;
        let user_id = ids::require_uuid("user_id", &req.user_id)?;
        self.remove_member_txn(&req.folder_id, user_id).await
    }
}

#[tonic::async_trait]
impl MemberService for FoldersApi {
    async fn list_members(
        &self,
        request: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        Ok(Response::new(
            self.handle(
                &request,
                "member.list",
                &id,
                false,
                |call| async move { self.list_members_page(&call, req).await },
            )
            .await?,
        ))
    }

    async fn update_member_access(
        &self,
        request: Request<UpdateMemberAccessRequest>,
    ) -> Result<Response<UpdateMemberAccessResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        let member =
            self.handle(&request, "member.update_access", &id, true, |call| async move {
                self.update_access(&call, req).await
            })
            .await?;
        Ok(Response::new(UpdateMemberAccessResponse { member: Some(member) }))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<RemoveMemberResponse>, Status> {
        let req = request.get_ref().clone();
        let id = req.folder_id.clone();
        self.handle(&request, "member.remove", &id, true, |call| async move { self.remove(&call, req).await }).await?;
        Ok(Response::new(RemoveMemberResponse {}))
    }
}

#[tonic::async_trait]
impl FolderMembershipService for FoldersApi {
    async fn get_membership(
        &self,
        request: Request<GetMembershipRequest>,
    ) -> Result<Response<GetMembershipResponse>, Status> {
        let req = request.into_inner();
        ids::require_uuid("folder_id", &req.folder_id)?;
        ids::require_uuid("user_id", &req.user_id)?;
        let access = self.access(&req.folder_id, &req.user_id).await?;
        // Only a manager's epoch is asked for (to stamp an invitation): read it fresh.
        let manage_epoch = match access {
            AccessLevel::Manage => self
                .members()
                .find_one(doc! { "folder_id": &req.folder_id, "user_id": &req.user_id })
                .await
                .map_err(store_error)?
                .and_then(|m| m.get_str("manage_epoch").ok().map(str::to_owned))
                .unwrap_or_default(),
            _ => String::new(),
        };
        let (folder_name, folder_exists) = match access {
            AccessLevel::Unspecified => (
                String::new(),
                self.folders().find_one(doc! { "_id": &req.folder_id }).await.map_err(store_error)?.is_some(),
            ),
            _ => (self.folder_message(&self.load_folder(&req.folder_id).await?, access).await?.name, true),
        };
        Ok(Response::new(GetMembershipResponse { access: access as i32, folder_name, folder_exists, manage_epoch }))
    }

    async fn add_member(&self, request: Request<AddMemberRequest>) -> Result<Response<AddMemberResponse>, Status> {
        let req = request.into_inner();
        let level = ts_contract::status::access_level("access", req.access)?;
        ids::require_uuid("folder_id", &req.folder_id)?;
        ids::require_uuid("user_id", &req.user_id)?;
        ids::require_uuid("invitation_id", &req.invitation_id)?;
        if !req.inviter_user_id.is_empty() {
            ids::require_uuid("inviter_user_id", &req.inviter_user_id)?;
        }
        let email = Email::parse(&req.email).map_err(|why| Status::invalid_argument(format!("email {why}")))?;
        let mut member = doc! {
            "_id": format!("{}:{}", req.folder_id, req.user_id), "folder_id": &req.folder_id,
            "user_id": &req.user_id, "email": email.as_str(), "access": level as i32,
            "joined_at": bson::DateTime::now(), "invitation_id": &req.invitation_id,
        };
        if level == AccessLevel::Manage {
            member.insert("manage_epoch", uuid::Uuid::new_v4().simple().to_string());
        }
        let added = self
            .add_invited(&req.folder_id, member, &req.invitation_id, &req.inviter_user_id, &req.inviter_manage_epoch)
            .await?;
        self.forget_members(&req.folder_id, std::slice::from_ref(&req.user_id)).await;
        let (created, refusal, access) = match added {
            Added::Created(l) => (true, AddMemberRefusal::Unspecified, l),
            Added::Existing(l) => (false, AddMemberRefusal::Unspecified, l),
            Added::Refused(r) => (false, r, AccessLevel::Unspecified),
        };
        Ok(Response::new(AddMemberResponse { created, refusal: refusal as i32, access: access as i32 }))
    }
}
