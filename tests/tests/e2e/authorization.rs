//! The authorization table: every folders/items RPC × every kind of caller, through the
//! gateway, against its expected status code — then the audit trail of the refusals.

use std::collections::BTreeMap;

use tonic::Code;
use tonic::transport::Channel;
use ts_proto::internal::{SetSharingEnabledRequest, UpsertLicenseRequest};
use ts_proto::public::audit_service_client::AuditServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster, query_content};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    NonMember,
    View,
    Edit,
    Manage,
    Unverified,
    BlockedLicense,
    SwitchOff,
}

const ROLES: [Role; 7] =
    [Role::NonMember, Role::View, Role::Edit, Role::Manage, Role::Unverified, Role::BlockedLicense, Role::SwitchOff];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    CreateFolder,
    ListFolders,
    GetFolder,
    RenameFolder,
    DeleteFolder,
    LeaveFolder,
    ListMembers,
    UpdateMemberAccess,
    RemoveMember,
    CreateItem,
    GetItem,
    ListItems,
    UpdateItem,
    DeleteItem,
    MoveItem,
    ListFolderAudit,
    ListMyErrors,
}

use Code::{FailedPrecondition as Fp, NotFound as Nf, Ok as Yes, PermissionDenied as Pd};

/// Expected codes for NonMember, View, Edit, Manage; the three disabled states always get
/// FAILED_PRECONDITION.
fn expected(rpc: Rpc) -> [Code; 4] {
    match rpc {
        Rpc::CreateFolder | Rpc::ListFolders | Rpc::ListMyErrors => [Yes, Yes, Yes, Yes],
        Rpc::GetFolder | Rpc::ListMembers | Rpc::GetItem | Rpc::ListItems | Rpc::LeaveFolder => [Nf, Yes, Yes, Yes],
        Rpc::RenameFolder | Rpc::DeleteFolder | Rpc::UpdateMemberAccess | Rpc::RemoveMember | Rpc::ListFolderAudit => {
            [Nf, Pd, Pd, Yes]
        }
        Rpc::CreateItem | Rpc::UpdateItem | Rpc::DeleteItem | Rpc::MoveItem => [Nf, Pd, Yes, Yes],
    }
}

const RPCS: [Rpc; 17] = [
    Rpc::CreateFolder,
    Rpc::ListFolders,
    Rpc::GetFolder,
    Rpc::RenameFolder,
    Rpc::DeleteFolder,
    Rpc::LeaveFolder,
    Rpc::ListMembers,
    Rpc::UpdateMemberAccess,
    Rpc::RemoveMember,
    Rpc::CreateItem,
    Rpc::GetItem,
    Rpc::ListItems,
    Rpc::UpdateItem,
    Rpc::DeleteItem,
    Rpc::MoveItem,
    Rpc::ListFolderAudit,
    Rpc::ListMyErrors,
];

struct World {
    cluster: TestCluster,
    channel: Channel,
    owner: Session,
    users: BTreeMap<Role, Session>,
    own_folders: BTreeMap<Role, String>,
}

impl World {
    async fn folder_with_members(&self) -> anyhow::Result<(String, String)> {
        let mut f = FolderServiceClient::new(self.channel.clone());
        let folder_id = f
            .create_folder(self.owner.request(CreateFolderRequest { name: "Shared".into(), ..Default::default() }))
            .await?
            .into_inner()
            .folder
            .expect("folder")
            .id;
        for (role, s) in &self.users {
            let level = match role {
                Role::NonMember => continue,
                Role::View => AccessLevel::View,
                Role::Manage => AccessLevel::Manage,
                _ => AccessLevel::Edit,
            };
            self.cluster.add_member(&folder_id, s, level).await?;
        }
        let item = self.item(&folder_id).await?;
        Ok((folder_id, item))
    }

    async fn item(&self, folder_id: &str) -> anyhow::Result<String> {
        let mut items = ItemServiceClient::new(self.channel.clone());
        let req = CreateItemRequest {
            folder_id: folder_id.into(),
            name: "Item".into(),
            description: String::new(),
            content: Some(query_content("{}")),
            ..Default::default()
        };
        Ok(items
            .create_item(self.owner.request(req))
            .await?
            .into_inner()
            .item
            .and_then(|i| i.summary)
            .expect("summary")
            .id)
    }

    /// Performs `rpc` as `role`; destructive calls get their own folder or item.
    async fn call(&self, rpc: Rpc, role: Role, shared: &(String, String)) -> anyhow::Result<Code> {
        let s = &self.users[&role];
        let ch = self.channel.clone();
        let (folder_id, item_id) = match rpc {
            Rpc::DeleteFolder | Rpc::LeaveFolder | Rpc::UpdateMemberAccess | Rpc::RemoveMember => {
                self.folder_with_members().await?
            }
            Rpc::UpdateItem | Rpc::DeleteItem | Rpc::MoveItem => (shared.0.clone(), self.item(&shared.0).await?),
            _ => shared.clone(),
        };
        let viewer = self.users[&Role::View].user_id.clone();
        let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |e| e.code());
        let (f, i) = (folder_id.clone(), item_id.clone());
        Ok(code(match rpc {
            Rpc::CreateFolder => FolderServiceClient::new(ch)
                .create_folder(s.request(CreateFolderRequest { name: "Mine".into(), ..Default::default() }))
                .await
                .map(drop),
            Rpc::ListFolders => {
                FolderServiceClient::new(ch).list_folders(s.request(ListFoldersRequest::default())).await.map(drop)
            }
            Rpc::GetFolder => {
                FolderServiceClient::new(ch).get_folder(s.request(GetFolderRequest { folder_id: f })).await.map(drop)
            }
            Rpc::RenameFolder => FolderServiceClient::new(ch)
                .rename_folder(s.request(RenameFolderRequest { folder_id: f, name: "Renamed".into() }))
                .await
                .map(drop),
            Rpc::DeleteFolder => FolderServiceClient::new(ch)
                .delete_folder(s.request(DeleteFolderRequest { folder_id: f }))
                .await
                .map(drop),
            Rpc::LeaveFolder => FolderServiceClient::new(ch)
                .leave_folder(s.request(LeaveFolderRequest { folder_id: f }))
                .await
                .map(drop),
            Rpc::ListMembers => MemberServiceClient::new(ch)
                .list_members(s.request(ListMembersRequest { folder_id: f, page: None }))
                .await
                .map(drop),
            Rpc::UpdateMemberAccess => MemberServiceClient::new(ch)
                .update_member_access(s.request(UpdateMemberAccessRequest {
                    folder_id: f,
                    user_id: viewer,
                    access: AccessLevel::Edit as i32,
                }))
                .await
                .map(drop),
            Rpc::RemoveMember => MemberServiceClient::new(ch)
                .remove_member(s.request(RemoveMemberRequest { folder_id: f, user_id: viewer }))
                .await
                .map(drop),
            Rpc::CreateItem => ItemServiceClient::new(ch)
                .create_item(s.request(CreateItemRequest {
                    folder_id: f,
                    name: "New".into(),
                    description: String::new(),
                    content: Some(query_content("{}")),
                    ..Default::default()
                }))
                .await
                .map(drop),
            Rpc::GetItem => ItemServiceClient::new(ch)
                .get_item(s.request(GetItemRequest { folder_id: f, item_id: i }))
                .await
                .map(drop),
            Rpc::ListItems => ItemServiceClient::new(ch)
                .list_items(s.request(ListItemsRequest { folder_id: f, page: None }))
                .await
                .map(drop),
            Rpc::UpdateItem => ItemServiceClient::new(ch)
                .update_item(s.request(UpdateItemRequest {
                    folder_id: f,
                    item_id: i,
                    expected_version: 1,
                    name: "Changed".into(),
                    description: String::new(),
                    content: Some(query_content("{}")),
                }))
                .await
                .map(drop),
            Rpc::DeleteItem => ItemServiceClient::new(ch)
                .delete_item(s.request(DeleteItemRequest { folder_id: f, item_id: i, expected_version: 1 }))
                .await
                .map(drop),
            Rpc::MoveItem => {
                let target = self.own_folders.get(&role).cloned().unwrap_or_else(|| shared.0.clone());
                ItemServiceClient::new(ch)
                    .move_item(s.request(MoveItemRequest {
                        folder_id: f,
                        item_id: i,
                        expected_version: 1,
                        target_folder_id: target,
                    }))
                    .await
                    .map(drop)
            }
            Rpc::ListFolderAudit => AuditServiceClient::new(ch)
                .list_folder_audit(s.request(ListFolderAuditRequest { folder_id: f, page: None }))
                .await
                .map(drop),
            Rpc::ListMyErrors => AuditServiceClient::new(ch)
                .list_my_errors(s.request(ListMyErrorsRequest { page: None }))
                .await
                .map(drop),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_kind_of_caller() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut operator = cluster.license_operator().await?;
    let license = |id: &str, email: &str| UpsertLicenseRequest {
        license_id: id.into(),
        admin_emails: vec![format!("admin@{id}.test")],
        emails: vec![email.into()],
        domains: vec![],
    };
    operator.upsert_license(license("blocked", "blocked@elsewhere.test")).await?;
    operator.upsert_license(license("off", "off@elsewhere.test")).await?;

    let owner = cluster.sign_in("owner@example.test").await?;
    let mut users = BTreeMap::new();
    for (role, email) in [
        (Role::NonMember, "nonmember@example.test"),
        (Role::View, "viewer@example.test"),
        (Role::Edit, "editor@example.test"),
        (Role::Manage, "manager@example.test"),
        (Role::Unverified, "unverified@example.test"),
        (Role::BlockedLicense, "blocked@elsewhere.test"),
        (Role::SwitchOff, "off@elsewhere.test"),
    ] {
        users.insert(role, cluster.sign_in(email).await?);
    }
    let channel = cluster.gateway().await?;
    let mut own_folders = BTreeMap::new();
    for role in [Role::NonMember, Role::View, Role::Edit, Role::Manage] {
        let mut f = FolderServiceClient::new(channel.clone());
        let id = f
            .create_folder(users[&role].request(CreateFolderRequest { name: "Own".into(), ..Default::default() }))
            .await?
            .into_inner()
            .folder
            .expect("folder")
            .id;
        own_folders.insert(role, id);
    }

    // Put the three disabled states in place after sign-in, with live sessions.
    let db = cluster.database().await?;
    db.collection::<bson::Document>("users")
        .update_one(
            bson::doc! { "email": "unverified@example.test" },
            bson::doc! { "$set": { "email_verified": false } },
        )
        .await?;
    crate::support::forget_sharing_answers()?;
    let admin = cluster.sign_in("admin@blocked.test").await?;
    LicenseAdminServiceClient::new(channel.clone())
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "blocked".into(), blocked: true }),
        )
        .await?;
    users.insert(Role::BlockedLicense, cluster.sign_in("blocked@elsewhere.test").await?);
    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: "off".into(), enabled: false }).await?;

    let world = World { cluster, channel, owner, users, own_folders };
    let shared = world.folder_with_members().await?;
    let mut failures = Vec::new();
    let mut cells = 0;
    for rpc in RPCS {
        for role in ROLES {
            let want = match role {
                Role::Unverified | Role::BlockedLicense | Role::SwitchOff => Fp,
                base => expected(rpc)[base as usize],
            };
            let got = world.call(rpc, role, &shared).await?;
            cells += 1;
            if got != want {
                failures.push(format!("{rpc:?} as {role:?}: expected {want:?}, got {got:?}"));
            }
        }
    }
    assert_eq!(cells, RPCS.len() * ROLES.len(), "no cell left out");
    assert!(failures.is_empty(), "{} of {cells} cells wrong:\n{}", failures.len(), failures.join("\n"));

    // The audit trail holds the refusals with the right actors.
    let trail = AuditServiceClient::new(world.channel.clone())
        .list_folder_audit(world.owner.request(ListFolderAuditRequest {
            folder_id: shared.0.clone(),
            page: Some(PageRequest { page_size: 500, page_token: String::new() }),
        }))
        .await?
        .into_inner()
        .events;
    let has = |email: &str, action: &str, code: &str| {
        trail.iter().any(|e| e.actor_email == email && e.action == action && e.status_code == code)
    };
    assert!(has("viewer@example.test", "item.create", "PERMISSION_DENIED"));
    assert!(has("editor@example.test", "folder.rename", "PERMISSION_DENIED"));
    assert!(has("nonmember@example.test", "item.get", "NOT_FOUND"));
    assert!(has("manager@example.test", "folder.rename", "OK"));
    let errors = AuditServiceClient::new(world.channel.clone())
        .list_my_errors(world.users[&Role::View].request(ListMyErrorsRequest { page: None }))
        .await?
        .into_inner()
        .events;
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e.actor_email == "viewer@example.test" && e.status_code != "OK")
    );
    // Refusals at the gateway (disabled states) are in the trail too, by actor.
    // They are recorded in the background, so poll (for at most 5 s) rather than sleep.
    let events = db.collection::<bson::Document>("audit_events");
    for email in ["unverified@example.test", "blocked@elsewhere.test", "off@elsewhere.test"] {
        let filter = bson::doc! { "actor_email": email, "status_code": "FAILED_PRECONDITION" };
        ts_testkit::eventually(&format!("{} refusals of {email} audited", RPCS.len()), || async {
            Ok((events.count_documents(filter.clone()).await? >= RPCS.len() as u64).then_some(()))
        })
        .await?;
    }
    world.cluster.stop().await
}
