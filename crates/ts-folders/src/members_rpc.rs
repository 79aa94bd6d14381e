//! `MemberService` (list, change access, remove) and the internal `FolderMembershipService`
//! that invitations uses (look up, add idempotently).

use bson::{Document, doc};
use tonic::{Request, Response, Status};
use ts_proto::internal::folder_membership_service_server::FolderMembershipService;
use ts_proto::internal::{AddMemberRequest, AddMemberResponse, GetMembershipRequest, GetMembershipResponse};
use ts_proto::public::member_service_server::MemberService;
use ts_proto::public::*;

use crate::context::Call;
use crate::paging::{open_plain, page_size, plain_token, token};
use crate::{FoldersApi, find_page, store_error, timestamp};

fn access_of(m: &Document) -> AccessLevel {
    m.get_i32("access").ok().and_then(|n| AccessLevel::try_from(n).ok()).unwrap_or(AccessLevel::Unspecified)
}

fn member_message(m: &Document) -> Member {
    Member {
        user_id: m.get_str("user_id").unwrap_or_default().to_owned(),
        email: m.get_str("email").unwrap_or_default().to_owned(),
        access: access_of(m) as i32,
        join_time: timestamp(m, "joined_at"),
    }
}

impl FoldersApi {
    async fn member(&self, folder_id: &str, user_id: &str) -> Result<Document, Status> {
        if user_id.is_empty() {
            return Err(Status::invalid_argument("user_id is required"));
        }
        self.members()
            .find_one(doc! { "folder_id": folder_id, "user_id": user_id })
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found("member not found"))
    }

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
        let new = ts_common::access_level("access", req.access)?;
        let current = self.member(&req.folder_id, &req.user_id).await?;
        let old = access_of(&current);
        if old == AccessLevel::Manage && new != AccessLevel::Manage {
            self.take_manager(&req.folder_id).await?;
        }
        if old != AccessLevel::Manage && new == AccessLevel::Manage {
            self.give_manager(&req.folder_id).await?;
        }
        self.members()
            .update_one(
                doc! { "folder_id": &req.folder_id, "user_id": &req.user_id },
                doc! { "$set": { "access": new as i32 } },
            )
            .await
            .map_err(store_error)?;
        self.forget_members(&req.folder_id, std::slice::from_ref(&req.user_id)).await;
        Ok(member_message(&self.member(&req.folder_id, &req.user_id).await?))
    }

    async fn remove(&self, call: &Call, req: RemoveMemberRequest) -> Result<(), Status> {
        self.require(call, &req.folder_id, AccessLevel::Manage).await?;
        let member = self.member(&req.folder_id, &req.user_id).await?;
        self.remove_membership(&req.folder_id, &req.user_id, access_of(&member)).await
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
        if req.folder_id.is_empty() || req.user_id.is_empty() {
            return Err(Status::invalid_argument("folder_id and user_id are required"));
        }
        let access = self.access(&req.folder_id, &req.user_id).await?;
        let folder_name = match access {
            AccessLevel::Unspecified => String::new(),
            _ => self.folder_message(&self.load_folder(&req.folder_id).await?, access).await?.name,
        };
        Ok(Response::new(GetMembershipResponse { access: access as i32, folder_name }))
    }

    async fn add_member(&self, request: Request<AddMemberRequest>) -> Result<Response<AddMemberResponse>, Status> {
        let req = request.into_inner();
        let level = ts_common::access_level("access", req.access)?;
        if req.user_id.is_empty() || req.email.is_empty() {
            return Err(Status::invalid_argument("user_id and email are required"));
        }
        self.load_folder(&req.folder_id).await?;
        let id = format!("{}:{}", req.folder_id, req.user_id);
        let inserted = self
            .members()
            .insert_one(doc! {
                "_id": &id, "folder_id": &req.folder_id, "user_id": &req.user_id, "email": &req.email,
                "access": level as i32, "joined_at": bson::DateTime::now(),
            })
            .await;
        let created = match inserted {
            Ok(_) => {
                if level == AccessLevel::Manage {
                    self.give_manager(&req.folder_id).await?;
                }
                true
            }
            // Already a member (a retried or concurrent accept): keep the higher level.
            Err(e) if ts_common::stores::is_duplicate_key(&e) => {
                let raised = self
                    .members()
                    .update_one(
                        doc! { "_id": &id, "access": { "$lt": level as i32 } },
                        doc! { "$set": { "access": level as i32 } },
                    )
                    .await
                    .map_err(store_error)?;
                if raised.modified_count == 1 && level == AccessLevel::Manage {
                    self.give_manager(&req.folder_id).await?;
                }
                false
            }
            Err(e) => return Err(store_error(e)),
        };
        self.forget_members(&req.folder_id, std::slice::from_ref(&req.user_id)).await;
        Ok(Response::new(AddMemberResponse { created }))
    }
}
