//! `InvitationService`: invite, list, accept (idempotent), decline, revoke and re-send.

use std::time::{Duration, SystemTime};

use bson::{Document, doc};
use tonic::{Code, Request, Response, Status};
use ts_contract::clock::bson_date;
use ts_contract::email::Email;
use ts_contract::paging::{open_plain, plain_token, token};
use ts_contract::user::UserContext;
use ts_mail::Message;
use ts_proto::internal::{
    AddMemberRefusal, AddMemberRequest, CheckSharingAllowedRequest, GetMembershipRequest, GetMembershipResponse,
    GetUserByEmailRequest, RecordAuditEventRequest,
};
use ts_proto::public::invitation_service_server::InvitationService;
use ts_proto::public::*;

use crate::InvitationsApi;
use crate::store::{ACCEPTED, Cap, DECLINED, PENDING, REVOKED, Store};

fn store_error(e: mongodb::error::Error) -> Status {
    tracing::error!(error = %e, "invitations store failed");
    Status::unavailable("invitation store is unavailable; retry later")
}

fn invitation_id(raw: &str) -> Result<&str, Status> {
    ts_contract::ids::require_uuid("invitation_id", raw)
}

impl InvitationsApi {
    fn now(&self) -> SystemTime {
        self.clock.now()
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.limits.ttl_days) * 86_400)
    }

    /// The caller's access to a folder, through folders.
    async fn access(&self, folder_id: &str, user_id: &str) -> Result<(AccessLevel, String), Status> {
        self.membership_of(folder_id, user_id)
            .await
            .map(|r| (AccessLevel::try_from(r.access).unwrap_or(AccessLevel::Unspecified), r.folder_name))
    }

    /// Folders' whole answer about a user in a folder.
    async fn membership_of(&self, folder_id: &str, user_id: &str) -> Result<GetMembershipResponse, Status> {
        let reply = self
            .membership
            .clone()
            .get_membership(GetMembershipRequest { folder_id: folder_id.into(), user_id: user_id.into() })
            .await
            .map_err(|s| {
                if s.code() == Code::InvalidArgument {
                    s
                } else {
                    Status::unavailable("folders is unavailable; retry later")
                }
            })?
            .into_inner();
        Ok(reply)
    }

    /// Requires MANAGE on the folder; non-members get NOT_FOUND.
    async fn require_manage(&self, folder_id: &str, user: &UserContext) -> Result<String, Status> {
        self.manager(folder_id, user).await.map(|m| m.folder_name)
    }

    /// Folders' answer for a caller who must have MANAGE (with their MANAGE epoch).
    async fn manager(&self, folder_id: &str, user: &UserContext) -> Result<GetMembershipResponse, Status> {
        ts_contract::ids::require_uuid("folder_id", folder_id)?;
        let m = self.membership_of(folder_id, &user.user_id).await?;
        match AccessLevel::try_from(m.access).unwrap_or(AccessLevel::Unspecified) {
            AccessLevel::Unspecified => Err(Status::not_found("folder not found")),
            AccessLevel::Manage => Ok(m),
            _ => Err(Status::permission_denied("only MANAGE members can manage a folder's invitations")),
        }
    }

    async fn message(&self, d: &Document) -> Invitation {
        let folder_id = d.get_str("folder_id").unwrap_or_default();
        // The folder's name is sealed in folders; ask through the inviter, while still a member.
        let inviter = self.membership_of(folder_id, d.get_str("inviter_user_id").unwrap_or_default()).await.ok();
        let mut stored_state = d.get_str("state").unwrap_or_default();
        // A pending invitation whose folder was deleted is revoked (deleting a folder revokes
        // its pending invitations); so is one whose inviter no longer manages the folder.
        if stored_state == PENDING
            && let Some(m) = &inviter
            && (!m.folder_exists || m.access != AccessLevel::Manage as i32)
        {
            let id = d.get_str("_id").unwrap_or_default();
            if let Err(e) = self.store.finish(id, REVOKED, self.now()).await {
                tracing::warn!(error = %e, "cannot record a revoked invitation");
            }
            stored_state = REVOKED;
        }
        let state = match stored_state {
            PENDING if d.get_datetime("expires_at").map(|t| t.to_system_time() <= self.now()).unwrap_or(true) => {
                InvitationState::Expired
            }
            PENDING => InvitationState::Pending,
            ACCEPTED => InvitationState::Accepted,
            DECLINED => InvitationState::Declined,
            REVOKED => InvitationState::Revoked,
            _ => InvitationState::Unspecified,
        };
        let folder_name = inviter.map(|m| m.folder_name).unwrap_or_default();
        Invitation {
            id: d.get_str("_id").unwrap_or_default().to_owned(),
            folder_id: folder_id.to_owned(),
            folder_name,
            invitee_email: d.get_str("invitee_email").unwrap_or_default().to_owned(),
            inviter_email: d.get_str("inviter_email").unwrap_or_default().to_owned(),
            access: d.get_i32("access").unwrap_or_default(),
            state: state as i32,
            create_time: ts_stores::doc_timestamp(d, "created_at"),
            expire_time: ts_stores::doc_timestamp(d, "expires_at"),
        }
    }

    async fn load(&self, id: &str) -> Result<Document, Status> {
        self.store
            .invitations()
            .find_one(doc! { "_id": id })
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found("invitation not found"))
    }

    async fn send(&self, to: &str, inviter: &str, folder_name: &str, expires: SystemTime) -> Result<(), Status> {
        let days = expires.duration_since(self.now()).map(|d| d.as_secs() / 86_400).unwrap_or(0);
        let message = Message {
            to: to.to_owned(),
            subject: format!("{inviter} shared a teamshare folder with you"),
            body: format!(
                "{inviter} invited you to the folder \"{folder_name}\".\n\nOpen teamshare and sign in as {to} to accept. The invitation expires in {days} days.\n"
            ),
        };
        self.mailer.send(message).await.map_err(|e| {
            tracing::warn!(error = %e, "invitation email not sent");
            Status::unavailable("the invitation email could not be sent; retry later")
        })
    }

    async fn audit(&self, user: &UserContext, folder_id: &str, action: &str, code: Code) {
        let event = RecordAuditEventRequest {
            actor_email: user.email.clone(),
            actor_user_id: user.user_id.to_string(),
            // Only a well-formed id reaches the audit trail (a malformed one was refused).
            folder_id: if ts_contract::ids::is_uuid(folder_id) { folder_id.to_owned() } else { String::new() },
            action: action.to_owned(),
            status_code: ts_contract::status::code_name(code).to_owned(),
            request_id: ts_runtime::server::current_request_id().map(|r| r.0).unwrap_or_default(),
            license_id: String::new(),
        };
        if let Err(s) = self.audit.clone().record_audit_event(event).await {
            tracing::warn!(code = ?s.code(), action, "cannot record audit event");
        }
    }

    /// Runs a body and audits its outcome (every failure, every success of a mutation).
    async fn audited<R>(
        &self,
        user: &UserContext,
        folder_id: &str,
        action: &str,
        mutating: bool,
        result: Result<R, Status>,
    ) -> Result<R, Status> {
        match &result {
            Ok(_) if mutating => self.audit(user, folder_id, action, Code::Ok).await,
            Ok(_) => {}
            Err(s) => self.audit(user, folder_id, action, s.code()).await,
        }
        result
    }

    /// When the oldest live invitation matching `filter` expires: capacity frees up then.
    async fn next_expiry(&self, mut filter: Document) -> Duration {
        filter.extend(Store::live(self.now()));
        let oldest = self.store.invitations().find_one(filter).sort(doc! { "expires_at": 1 }).await.ok().flatten();
        oldest
            .and_then(|d| d.get_datetime("expires_at").ok().map(|t| t.to_system_time()))
            .and_then(|t| t.duration_since(self.now()).ok())
            .unwrap_or(Duration::from_secs(60))
    }

    async fn invite(&self, user: &UserContext, req: CreateInvitationRequest) -> Result<Invitation, Status> {
        let manager = self.manager(&req.folder_id, user).await?;
        let folder_name = manager.folder_name.clone();
        let invitee =
            Email::parse(&req.invitee_email).map_err(|m| Status::invalid_argument(format!("invitee_email {m}")))?;
        let access = ts_contract::status::access_level("access", req.access)?;
        let license = self
            .identity
            .clone()
            .check_sharing_allowed(CheckSharingAllowedRequest {
                user_id: String::new(),
                email: invitee.as_str().to_owned(),
            })
            .await
            .map_err(|_| Status::unavailable("cannot check the invitee's license right now; retry later"))?
            .into_inner();
        if !license.allowed {
            return Err(Status::failed_precondition("team sharing is blocked or disabled for the invitee's license"));
        }
        if let Ok(found) =
            self.identity.clone().get_user_by_email(GetUserByEmailRequest { email: invitee.as_str().to_owned() }).await
            && let Some(u) = found.into_inner().user
            && self.access(&req.folder_id, &u.id).await?.0 != AccessLevel::Unspecified
        {
            return Err(Status::already_exists(format!("{invitee} is already a member of this folder")));
        }
        let now = self.now();
        let expires = now + self.ttl();
        let id = uuid::Uuid::new_v4().to_string();
        let invitation = doc! {
            "_id": &id, "folder_id": &req.folder_id, "invitee_email": invitee.as_str(),
            "inviter_email": &user.email, "inviter_user_id": &user.user_id, "access": access as i32,
            "inviter_manage_epoch": &manager.manage_epoch,
            "state": PENDING, "created_at": bson_date(now), "expires_at": bson_date(expires), "purge_at": bson_date(expires + self.ttl()),
        };
        let capped = self
            .store
            .insert_capped(
                invitation.clone(),
                now,
                self.limits.max_pending_per_folder,
                self.limits.max_pending_per_invitee,
            )
            .await
            .map_err(store_error)?;
        match capped {
            // A pending invitation to the same email (found inside the same transaction, so
            // two concurrent invites cannot both insert) is refreshed and re-sent instead.
            Some(Cap::Existing(id)) => {
                let refresh = doc! { "$set": {
                    "expires_at": bson_date(expires), "purge_at": bson_date(expires + self.ttl()), "access": access as i32,
                    // It now stands on this manager's right.
                    "inviter_email": &user.email, "inviter_user_id": &user.user_id,
                    "inviter_manage_epoch": &manager.manage_epoch,
                } };
                self.store
                    .invitations()
                    .update_one(doc! { "_id": &id, "state": PENDING }, refresh)
                    .await
                    .map_err(store_error)?;
                self.send(invitee.as_str(), &user.email, &folder_name, expires).await?;
                return Ok(self.message(&self.load(&id).await?).await);
            }
            Some(Cap::Folder) => {
                let wait = self.next_expiry(doc! { "folder_id": &req.folder_id }).await;
                return Err(ts_contract::status::resource_exhausted(
                    &format!(
                        "this folder has {} pending invitations, the most allowed",
                        self.limits.max_pending_per_folder
                    ),
                    wait,
                ));
            }
            Some(Cap::Invitee) => {
                let wait = self.next_expiry(doc! { "invitee_email": invitee.as_str() }).await;
                return Err(ts_contract::status::resource_exhausted(
                    &format!(
                        "{invitee} has {} pending invitations, the most allowed",
                        self.limits.max_pending_per_invitee
                    ),
                    wait,
                ));
            }
            None => {}
        }
        if let Err(e) = self.send(invitee.as_str(), &user.email, &folder_name, expires).await {
            // Nothing half-made: an invitation nobody was told about is removed.
            let _ = self.store.invitations().delete_one(doc! { "_id": &id }).await;
            return Err(e);
        }
        Ok(self.message(&invitation).await)
    }

    async fn page(&self, filter: Document, page: &Option<PageRequest>) -> Result<(Vec<Invitation>, String), Status> {
        // A hard maximum per fetch, whatever the client asks for.
        let size = ts_contract::paging::page_size(page, self.limits.max_per_fetch, self.limits.max_per_fetch);
        let mut filter = filter;
        filter.extend(Store::live(self.now()));
        if let Some(t) = token(page) {
            let p = open_plain(t, 2)?;
            let ms: i64 = p[0].parse().map_err(|_| Status::invalid_argument("page.page_token is not valid here"))?;
            let at = bson::DateTime::from_millis(ms);
            filter.insert(
                "$or",
                vec![doc! { "created_at": { "$gt": at } }, doc! { "created_at": at, "_id": { "$gt": &p[1] } }],
            );
        }
        let (docs, more) =
            ts_stores::find_page(&self.store.invitations(), filter, doc! { "created_at": 1, "_id": 1 }, size)
                .await
                .map_err(store_error)?;
        let mut out = Vec::new();
        for d in &docs {
            out.push(self.message(d).await);
        }
        let next = match (more, docs.last()) {
            (true, Some(last)) => {
                let at = last.get_datetime("created_at").map(|t| t.timestamp_millis()).unwrap_or_default();
                plain_token(&[at.to_string(), last.get_str("_id").unwrap_or_default().to_owned()])
            }
            _ => String::new(),
        };
        Ok((out, next))
    }

    /// The invitation if it was sent to the caller; NOT_FOUND otherwise (no leak).
    async fn mine(&self, user: &UserContext, id: &str) -> Result<Document, Status> {
        let d = self.load(invitation_id(id)?).await?;
        if d.get_str("invitee_email").unwrap_or_default() != user.email {
            return Err(Status::not_found("invitation not found"));
        }
        Ok(d)
    }

    /// Accepts an invitation. The accept is recorded first, then folders adds the member and
    /// spends the invitation in one transaction: a crash in between is repaired by a retry,
    /// concurrent accepts make one membership, and a replay after the membership changed
    /// (removed, lowered) changes nothing and answers FAILED_PRECONDITION.
    async fn accept(&self, user: &UserContext, id: &str) -> Result<AcceptInvitationResponse, Status> {
        let mut d = self.mine(user, id).await?;
        let id = d.get_str("_id").unwrap_or_default().to_owned();
        let folder_id = d.get_str("folder_id").unwrap_or_default().to_owned();
        // Expiry bounds an accepted one too: an accept cut short before its member was made
        // can be repaired only while the invitation itself would still be valid.
        if d.get_datetime("expires_at").map(|t| t.to_system_time() <= self.now()).unwrap_or(true) {
            return Err(Status::failed_precondition("this invitation expired; ask for a new one"));
        }
        if d.get_str("state").unwrap_or_default() == PENDING
            && !self.store.finish(&id, ACCEPTED, self.now()).await.map_err(store_error)?
        {
            // Answered concurrently: go by what it is now.
            d = self.load(&id).await?;
        }
        match d.get_str("state").unwrap_or_default() {
            PENDING | ACCEPTED => {}
            DECLINED => return Err(Status::failed_precondition("this invitation was declined")),
            REVOKED => return Err(Status::failed_precondition("this invitation was revoked")),
            _ => return Err(Status::failed_precondition("this invitation cannot be accepted")),
        }
        let access = d.get_i32("access").unwrap_or_default();
        let add = AddMemberRequest {
            folder_id: folder_id.clone(),
            user_id: user.user_id.to_string(),
            email: user.email.clone(),
            access,
            invitation_id: id.clone(),
            inviter_user_id: d.get_str("inviter_user_id").unwrap_or_default().to_owned(),
            inviter_manage_epoch: d.get_str("inviter_manage_epoch").unwrap_or_default().to_owned(),
        };
        let added = match self.membership.clone().add_member(add).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => {
                self.revoke_spent(&id).await;
                return Err(Status::failed_precondition("the folder of this invitation no longer exists"));
            }
            Err(s) if s.code() == Code::InvalidArgument => return Err(s),
            Err(_) => return Err(Status::unavailable("folders is unavailable; retry later")),
        };
        match AddMemberRefusal::try_from(added.refusal).unwrap_or(AddMemberRefusal::Unspecified) {
            AddMemberRefusal::Unspecified => Ok(AcceptInvitationResponse { folder_id, access: added.access }),
            AddMemberRefusal::AlreadySpent => Err(Status::failed_precondition(
                "this invitation was already accepted and the membership has changed since; ask for a new invitation",
            )),
            AddMemberRefusal::InviterNotManager => {
                self.revoke_spent(&id).await;
                Err(Status::failed_precondition(
                    "the person who sent this invitation no longer manages the folder; ask for a new invitation",
                ))
            }
        }
    }

    /// Marks an invitation that can never make a membership as revoked.
    async fn revoke_spent(&self, id: &str) {
        let r = self
            .store
            .invitations()
            .update_one(
                doc! { "_id": id, "state": { "$in": [PENDING, ACCEPTED] } },
                doc! { "$set": { "state": REVOKED, "answered_at": bson_date(self.now()) } },
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "cannot record a revoked invitation");
        }
    }

    async fn answer_as_manager(&self, user: &UserContext, id: &str) -> Result<Document, Status> {
        let d = self.load(invitation_id(id)?).await?;
        self.require_manage(d.get_str("folder_id").unwrap_or_default(), user).await.map_err(|s| match s.code() {
            Code::NotFound => Status::not_found("invitation not found"),
            _ => s,
        })?;
        Ok(d)
    }
}

fn caller<T>(request: &Request<T>) -> Result<UserContext, Status> {
    UserContext::from_metadata(request.metadata())
}

#[tonic::async_trait]
impl InvitationService for InvitationsApi {
    async fn create_invitation(
        &self,
        request: Request<CreateInvitationRequest>,
    ) -> Result<Response<CreateInvitationResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let folder_id = req.folder_id.clone();
        let result = self.invite(&user, req).await;
        let invitation = self.audited(&user, &folder_id, "invitation.create", true, result).await?;
        Ok(Response::new(CreateInvitationResponse { invitation: Some(invitation) }))
    }

    async fn list_my_invitations(
        &self,
        request: Request<ListMyInvitationsRequest>,
    ) -> Result<Response<ListMyInvitationsResponse>, Status> {
        let user = caller(&request)?;
        let (invitations, next) = self.page(doc! { "invitee_email": &user.email }, &request.get_ref().page).await?;
        Ok(Response::new(ListMyInvitationsResponse { invitations, page: Some(PageResponse { next_page_token: next }) }))
    }

    async fn list_folder_invitations(
        &self,
        request: Request<ListFolderInvitationsRequest>,
    ) -> Result<Response<ListFolderInvitationsResponse>, Status> {
        let user = caller(&request)?;
        let req = request.into_inner();
        let result = async {
            self.require_manage(&req.folder_id, &user).await?;
            self.page(doc! { "folder_id": &req.folder_id }, &req.page).await
        }
        .await;
        let (invitations, next) = self.audited(&user, &req.folder_id, "invitation.list_folder", false, result).await?;
        Ok(Response::new(ListFolderInvitationsResponse {
            invitations,
            page: Some(PageResponse { next_page_token: next }),
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<AcceptInvitationRequest>,
    ) -> Result<Response<AcceptInvitationResponse>, Status> {
        let user = caller(&request)?;
        // Detached: a client that hangs up (or a deadline) after the accept is recorded must
        // not stop the membership from being made.
        let (api, who, id) = (self.clone(), user.clone(), request.get_ref().invitation_id.clone());
        let result = tokio::spawn(async move { api.accept(&who, &id).await })
            .await
            .unwrap_or_else(|_| Err(Status::internal("the accept did not finish")));
        let folder_id = result.as_ref().map(|r| r.folder_id.clone()).unwrap_or_default();
        Ok(Response::new(self.audited(&user, &folder_id, "invitation.accept", true, result).await?))
    }

    async fn decline_invitation(
        &self,
        request: Request<DeclineInvitationRequest>,
    ) -> Result<Response<DeclineInvitationResponse>, Status> {
        let user = caller(&request)?;
        let mut folder_id = String::new();
        let result = async {
            let d = self.mine(&user, &request.get_ref().invitation_id).await?;
            folder_id = d.get_str("folder_id").unwrap_or_default().to_owned();
            if !self
                .store
                .finish(d.get_str("_id").unwrap_or_default(), DECLINED, self.now())
                .await
                .map_err(store_error)?
            {
                return Err(Status::failed_precondition("this invitation is no longer pending"));
            }
            Ok(())
        }
        .await;
        self.audited(&user, &folder_id, "invitation.decline", true, result).await?;
        Ok(Response::new(DeclineInvitationResponse {}))
    }

    async fn revoke_invitation(
        &self,
        request: Request<RevokeInvitationRequest>,
    ) -> Result<Response<RevokeInvitationResponse>, Status> {
        let user = caller(&request)?;
        let result = async {
            let d = self.answer_as_manager(&user, &request.get_ref().invitation_id).await?;
            let id = d.get_str("_id").unwrap_or_default();
            if !self.store.finish(id, REVOKED, self.now()).await.map_err(store_error)? {
                return Err(Status::failed_precondition("this invitation is no longer pending"));
            }
            Ok(d.get_str("folder_id").unwrap_or_default().to_owned())
        }
        .await;
        let folder_id = result.as_ref().cloned().unwrap_or_default();
        self.audited(&user, &folder_id, "invitation.revoke", true, result).await?;
        Ok(Response::new(RevokeInvitationResponse {}))
    }

    async fn resend_invitation(
        &self,
        request: Request<ResendInvitationRequest>,
    ) -> Result<Response<ResendInvitationResponse>, Status> {
        let user = caller(&request)?;
        let result = async {
            let d = self.answer_as_manager(&user, &request.get_ref().invitation_id).await?;
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            let expires = self.now() + self.ttl();
            let mut live = Store::live(self.now());
            live.insert("_id", &id);
            let r = self
                .store
                .invitations()
                .update_one(
                    live,
                    doc! { "$set": { "expires_at": bson_date(expires), "purge_at": bson_date(expires + self.ttl()) } },
                )
                .await
                .map_err(store_error)?;
            if r.matched_count == 0 {
                return Err(Status::failed_precondition(
                    "only a pending, unexpired invitation can be re-sent; invite again instead",
                ));
            }
            let (_, folder_name) = self.access(d.get_str("folder_id").unwrap_or_default(), &user.user_id).await?;
            self.send(d.get_str("invitee_email").unwrap_or_default(), &user.email, &folder_name, expires).await?;
            Ok(self.message(&self.load(&id).await?).await)
        }
        .await;
        let folder_id = result.as_ref().map(|i| i.folder_id.clone()).unwrap_or_default();
        let invitation = self.audited(&user, &folder_id, "invitation.resend", true, result).await?;
        Ok(Response::new(ResendInvitationResponse { invitation: Some(invitation) }))
    }
}
