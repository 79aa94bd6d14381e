//! The calls invitations makes to other services: folders (membership; the audit trail goes
//! through `ts_runtime::audit`) and
//! auth (users, licenses). A failed call becomes an `InvitationsError` here, with the message
//! clients have always been given, so that the domain never sees a `tonic::Status`.

use tonic::{Code, Status};
use ts_contract::email::Email;
use ts_contract::ids::{FolderId, UserId};
use ts_contract::user::UserContext;
use ts_proto::internal::folder_membership_service_client::FolderMembershipServiceClient;
use ts_proto::internal::identity_service_client::IdentityServiceClient;
use ts_proto::internal::{
    AddMemberRefusal, AddMemberRequest, CheckSharingAllowedRequest, GetMembershipRequest, GetMembershipsRequest,
    GetUserByEmailRequest,
};
use ts_proto::public::AccessLevel;
use ts_runtime::client::InternalChannel;

use crate::error::InvitationsError;
use crate::store::InvitationDoc;

/// Folders' answer about a user in a folder.
#[derive(Debug, Clone)]
pub struct Membership {
    /// Their access, `Unspecified` when not a member.
    pub access: AccessLevel,
    /// The folder's name, when they are a member.
    pub folder_name: String,
    /// Whether the folder exists.
    pub folder_exists: bool,
    /// For a MANAGE member: changes every time they become MANAGE.
    pub manage_epoch: String,
}

/// What folders did with an accepted invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The invitee is a member (now, or already by this very invitation) at this access.
    Member(AccessLevel),
    /// The invitation was spent and the membership it made has changed or gone since.
    AlreadySpent,
    /// The inviter no longer has MANAGE on the folder.
    InviterNotManager,
}

fn access_level(raw: i32) -> AccessLevel {
    AccessLevel::try_from(raw).unwrap_or(AccessLevel::Unspecified)
}

/// A failed folders call: its own INVALID_ARGUMENT is passed on, anything else is UNAVAILABLE.
fn folders_failure(s: Status) -> InvitationsError {
    if s.code() == Code::InvalidArgument { InvitationsError::invalid(s) } else { InvitationsError::FoldersUnavailable }
}

/// Folders' membership service.
#[derive(Debug, Clone)]
pub struct Folders {
    membership: FolderMembershipServiceClient<InternalChannel>,
}

impl Folders {
    /// Calls folders through `channel`.
    pub fn new(channel: InternalChannel) -> Self {
        Folders { membership: FolderMembershipServiceClient::new(channel) }
    }

    /// Folders' whole answer about a user in a folder.
    pub async fn membership(&self, folder_id: &FolderId, user_id: &UserId) -> Result<Membership, InvitationsError> {
        let request = GetMembershipRequest { folder_id: folder_id.to_string(), user_id: user_id.to_string() };
        let reply = self.membership.clone().get_membership(request).await.map_err(folders_failure)?.into_inner();
        Ok(Membership {
            access: access_level(reply.access),
            folder_name: reply.folder_name,
            folder_exists: reply.folder_exists,
            manage_epoch: reply.manage_epoch,
        })
    }

    /// Folders' answers about many (folder, user) pairs, in order, in one call (no MANAGE
    /// epochs): what a listing page needs.
    pub async fn memberships(&self, pairs: &[(&FolderId, &UserId)]) -> Result<Vec<Membership>, InvitationsError> {
        let lookups = pairs
            .iter()
            .map(|(f, u)| GetMembershipRequest { folder_id: f.to_string(), user_id: u.to_string() })
            .collect();
        let reply = self
            .membership
            .clone()
            .get_memberships(GetMembershipsRequest { lookups })
            .await
            .map_err(folders_failure)?
            .into_inner();
        Ok(reply
            .memberships
            .into_iter()
            .map(|m| Membership {
                access: access_level(m.access),
                folder_name: m.folder_name,
                folder_exists: m.folder_exists,
                manage_epoch: String::new(),
            })
            .collect())
    }

    /// Makes `user` a member by `invitation`, which folders spends in the same transaction,
    /// if `inviter` (who sent it) still holds MANAGE. A deleted folder is `FolderGone`.
    pub async fn add_member(
        &self,
        invitation: &InvitationDoc,
        inviter: &UserId,
        user: &UserContext,
    ) -> Result<AddOutcome, InvitationsError> {
        let request = AddMemberRequest {
            folder_id: invitation.folder_id.to_string(),
            user_id: user.user_id.to_string(),
            email: user.email.clone(),
            access: invitation.access as i32,
            invitation_id: invitation.id.to_string(),
            inviter_user_id: inviter.to_string(),
            inviter_manage_epoch: invitation.inviter_manage_epoch.clone(),
        };
        let added = match self.membership.clone().add_member(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::NotFound => return Err(InvitationsError::FolderGone),
            Err(s) => return Err(folders_failure(s)),
        };
        Ok(match AddMemberRefusal::try_from(added.refusal).unwrap_or(AddMemberRefusal::Unspecified) {
            AddMemberRefusal::Unspecified => AddOutcome::Member(access_level(added.access)),
            AddMemberRefusal::AlreadySpent => AddOutcome::AlreadySpent,
            AddMemberRefusal::InviterNotManager => AddOutcome::InviterNotManager,
        })
    }
}

/// Auth's identity service.
#[derive(Debug, Clone)]
pub struct Identity {
    client: IdentityServiceClient<InternalChannel>,
}

impl Identity {
    /// Calls auth through `channel`.
    pub fn new(channel: InternalChannel) -> Self {
        Identity { client: IdentityServiceClient::new(channel) }
    }

    /// Whether the license of the user with this email (if any) allows team sharing.
    pub async fn sharing_allowed(&self, email: &Email) -> Result<bool, InvitationsError> {
        let request = CheckSharingAllowedRequest { user_id: String::new(), email: email.as_str().to_owned() };
        match self.client.clone().check_sharing_allowed(request).await {
            Ok(r) => Ok(r.into_inner().allowed),
            Err(_) => Err(InvitationsError::IdentityUnavailable),
        }
    }

    /// The id of the user with this email; `None` when there is none, or auth cannot say
    /// (the check it serves is a courtesy: folders refuses a second membership anyway).
    pub async fn user_id_by_email(&self, email: &Email) -> Result<Option<UserId>, InvitationsError> {
        let request = GetUserByEmailRequest { email: email.as_str().to_owned() };
        let Ok(found) = self.client.clone().get_user_by_email(request).await else { return Ok(None) };
        match found.into_inner().user {
            Some(user) => Ok(Some(UserId::parse("user_id", &user.id)?)),
            None => Ok(None),
        }
    }
}
