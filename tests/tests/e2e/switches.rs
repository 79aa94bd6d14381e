//! Issue 11: folders and auth keep "may share", memberships and stored items in memory, so a
//! warm read asks neither auth nor MongoDB. Every switch that takes sharing away must still
//! refuse the very next request, on every replica, while reads hammer the folder: a license
//! switched off, the deployment switched off, a license blocked by its admin, a session
//! signed out, a member removed; and a Redis that lost its data must not bring an old answer
//! back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tonic::Code;
use tonic::transport::Channel;
use ts_proto::internal::{SetSharingEnabledRequest, UpsertLicenseRequest};
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::license_admin_service_client::LicenseAdminServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster, as_gateway, query_content};

/// Concurrent readers of one item, on the gateway (as `user`) and directly on a folders
/// replica (with the gateway's identity headers), until stopped; they count their answers.
struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(gateway: &Channel, replica: &Channel, user: &Session, folder_id: &str, item_id: &str) -> Load {
        let (stop, answered) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (stop, answered) = (stop.clone(), answered.clone());
            let (user, on_replica) = (user.clone(), i % 2 == 1);
            let mut items = ItemServiceClient::new(if on_replica { replica.clone() } else { gateway.clone() });
            let get = GetItemRequest { folder_id: folder_id.into(), item_id: item_id.into() };
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ignored = items.get_item(wrap(&user, on_replica, get.clone())).await;
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        Load { stop, answered, tasks }
    }

    async fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await?;
        }
        Ok(self.answered.load(Ordering::Relaxed))
    }
}

/// `message` as `user` through the gateway, or as the gateway vouching for `user` (`direct`).
fn wrap<T>(user: &Session, direct: bool, message: T) -> tonic::Request<T> {
    if direct { as_gateway(user, message) } else { user.request(message) }
}

/// The codes of the reads a member makes, through the gateway and on the replica.
async fn reads(gateway: &Channel, replica: &Channel, user: &Session, folder_id: &str, item_id: &str) -> Vec<Code> {
    let code = |r: Result<(), tonic::Status>| r.err().map_or(Code::Ok, |s| s.code());
    let get = GetItemRequest { folder_id: folder_id.into(), item_id: item_id.into() };
    let list = ListItemsRequest { folder_id: folder_id.into(), page: None };
    let folder = GetFolderRequest { folder_id: folder_id.into() };
    let mut out = Vec::new();
    for (channel, direct) in [(gateway, false), (replica, true)] {
        let mut items = ItemServiceClient::new(channel.clone());
        let mut folders = FolderServiceClient::new(channel.clone());
        out.push(code(items.get_item(wrap(user, direct, get.clone())).await.map(drop)));
        out.push(code(items.list_items(wrap(user, direct, list.clone())).await.map(drop)));
        out.push(code(folders.get_folder(wrap(user, direct, folder.clone())).await.map(drop)));
        out.push(code(folders.list_folders(wrap(user, direct, ListFoldersRequest::default())).await.map(drop)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_switch_refuses_the_very_next_request_while_reads_are_served_from_memory() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let (gateway, on_replica) = (cluster.gateway().await?, replica.channel.clone());
    let mut operator = cluster.license_operator().await?;
    operator
        .upsert_license(UpsertLicenseRequest {
            license_id: "acme".into(),
            admin_emails: vec!["admin@acme.test".into()],
            emails: vec![],
            domains: vec!["acme.test".into()],
        })
        .await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    let folder_id = cluster.folders(&alice).await?.create("Warm").await?;
    let created = cluster.items(&alice).await?.create(&folder_id, "orders", query_content("{}")).await?;
    let item_id = created.item.and_then(|i| i.summary).expect("summary").id;
    let all_ok = vec![Code::Ok; 8];
    let refused = vec![Code::FailedPrecondition; 8];
    assert_eq!(reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await, all_ok);

    // 1. The operator switches the license off, then the whole deployment, under load.
    let switches = [("acme", "the license's switch"), ("", "the deployment's switch")];
    for (license_id, what) in switches {
        let load = Load::start(&gateway, &on_replica, &alice, &folder_id, &item_id);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let off = SetSharingEnabledRequest { license_id: license_id.into(), enabled: false };
        operator.set_sharing_enabled(off).await?;
        let after = reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await;
        let served = load.stop().await?;
        assert!(served > 0, "the load ran");
        assert_eq!(after, refused, "{what} off: every read refused at once");
        operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: license_id.into(), enabled: true }).await?;
        assert_eq!(reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await, all_ok, "{what} back on");
    }

    // 2. Redis loses everything (a restart without persistence) and then a switch flips: the
    // answers kept before the loss are not made current again by the empty Redis.
    reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await;
    let port = ts_testkit::shared()?.redis.port.to_string();
    let flushed = std::process::Command::new("redis-cli").args(["-p", &port, "FLUSHALL"]).output()?;
    assert!(flushed.status.success());
    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: "acme".into(), enabled: false }).await?;
    let direct: Vec<Code> = reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await.split_off(4);
    assert_eq!(direct, vec![Code::FailedPrecondition; 4], "after a Redis loss, on the replica");
    operator.set_sharing_enabled(SetSharingEnabledRequest { license_id: "acme".into(), enabled: true }).await?;

    // 3. The license admin blocks the license under load: the member's session ends (the
    // gateway answers UNAUTHENTICATED) and the replica, asked directly, refuses too.
    let admin = cluster.sign_in("admin@acme.test").await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await, all_ok);
    let load = Load::start(&gateway, &on_replica, &alice, &folder_id, &item_id);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    LicenseAdminServiceClient::new(gateway.clone())
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: true }),
        )
        .await?;
    let after = reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await;
    load.stop().await?;
    assert_eq!(after[..4], [Code::Unauthenticated; 4], "blocked: the gateway ends the session at once");
    assert_eq!(after[4..], [Code::FailedPrecondition; 4], "blocked: the replica refuses at once");
    LicenseAdminServiceClient::new(gateway.clone())
        .set_license_sharing_blocked(
            admin.request(SetLicenseSharingBlockedRequest { license_id: "acme".into(), blocked: false }),
        )
        .await?;

    // 4. A signed-out session is refused by the gateway on the very next request.
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await, all_ok);
    let load = Load::start(&gateway, &on_replica, &alice, &folder_id, &item_id);
    AuthServiceClient::new(gateway.clone()).sign_out(alice.request(SignOutRequest {})).await?;
    let after = reads(&gateway, &on_replica, &alice, &folder_id, &item_id).await;
    load.stop().await?;
    assert_eq!(after[..4], [Code::Unauthenticated; 4], "signed out");

    // 5. A removed member, warm on the replica, is refused there at once.
    let bob = cluster.sign_in("bob@acme.test").await?;
    cluster.add_member(&folder_id, &bob, AccessLevel::View).await?;
    let alice = cluster.sign_in("alice@acme.test").await?;
    assert_eq!(reads(&gateway, &on_replica, &bob, &folder_id, &item_id).await, all_ok);
    let load = Load::start(&gateway, &on_replica, &bob, &folder_id, &item_id);
    ts_proto::public::member_service_client::MemberServiceClient::new(gateway.clone())
        .remove_member(
            alice.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() }),
        )
        .await?;
    let after = reads(&gateway, &on_replica, &bob, &folder_id, &item_id).await;
    load.stop().await?;
    let not_found = [Code::NotFound, Code::NotFound, Code::NotFound, Code::Ok];
    assert_eq!(after[..4], not_found, "removed: no folder reads, and an empty folder list");
    assert_eq!(after[4..], not_found, "removed: the same on the replica");
    drop(replica);
    cluster.stop().await
}

/// The names ListItems shows `user` in `folder_id`, asked directly on `channel` (a folders
/// replica) with the gateway's identity headers.
async fn listed(channel: &Channel, user: &Session, folder_id: &str) -> anyhow::Result<Vec<String>> {
    let request = as_gateway(user, ListItemsRequest { folder_id: folder_id.into(), page: None });
    let items = ItemServiceClient::new(channel.clone()).list_items(request).await?.into_inner().items;
    Ok(items.into_iter().map(|i| i.name).collect())
}

#[tokio::test]
async fn a_created_item_is_listed_at_once_by_a_replica_that_kept_the_page() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Listed").await?;
    let mut items = cluster.items(&alice).await?;
    items.create(&folder_id, "first", query_content("{}")).await?;
    for _ in 0..2 {
        assert_eq!(listed(&replica.channel, &alice, &folder_id).await?, ["first"], "the page is kept");
    }
    items.create(&folder_id, "second", query_content("{}")).await?;
    assert_eq!(listed(&replica.channel, &alice, &folder_id).await?, ["first", "second"]);
    drop(replica);
    cluster.stop().await
}

/// The folders `user` sees, with their access, asked directly on `channel` (a folders
/// replica), three times so that the listing is kept (the first read keeps a hint, the
/// second keeps it, the third is served from memory); every answer must agree.
async fn folders_seen(channel: &Channel, user: &Session) -> anyhow::Result<Vec<(String, i32)>> {
    let mut answers = Vec::new();
    for _ in 0..3 {
        let request = as_gateway(user, ListFoldersRequest::default());
        let listed = FolderServiceClient::new(channel.clone()).list_folders(request).await?.into_inner().folders;
        let mut seen: Vec<(String, i32)> = listed.into_iter().map(|f| (f.name, f.my_access)).collect();
        seen.sort();
        answers.push(seen);
    }
    anyhow::ensure!(answers.windows(2).all(|w| w[0] == w[1]), "a kept listing differs from a read one: {answers:?}");
    Ok(answers.remove(0))
}

#[tokio::test]
async fn a_kept_folder_listing_follows_every_change_at_once_on_a_replica() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let on_replica = replica.channel.clone();
    let gateway = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let (view, edit, manage) = (AccessLevel::View as i32, AccessLevel::Edit as i32, AccessLevel::Manage as i32);
    let mut folders = cluster.folders(&alice).await?;
    let a = folders.create("A").await?;
    assert_eq!(folders_seen(&on_replica, &alice).await?, [("A".into(), manage)]);
    // Joining: a created folder and an added membership appear at once.
    let b = folders.create("B").await?;
    assert_eq!(folders_seen(&on_replica, &alice).await?, [("A".into(), manage), ("B".into(), manage)]);
    assert_eq!(folders_seen(&on_replica, &bob).await?, []);
    cluster.add_member(&a, &bob, AccessLevel::View).await?;
    cluster.add_member(&b, &bob, AccessLevel::View).await?;
    assert_eq!(folders_seen(&on_replica, &bob).await?, [("A".into(), view), ("B".into(), view)]);
    // A rename, a new access level, a removal and a deletion, each through the gateway.
    let mut folder_api = FolderServiceClient::new(gateway.clone());
    folder_api.rename_folder(alice.request(RenameFolderRequest { folder_id: a.clone(), name: "A2".into() })).await?;
    assert_eq!(folders_seen(&on_replica, &bob).await?, [("A2".into(), view), ("B".into(), view)]);
    let mut members = ts_proto::public::member_service_client::MemberServiceClient::new(gateway.clone());
    let raise = UpdateMemberAccessRequest { folder_id: a.clone(), user_id: bob.user_id.clone(), access: edit };
    members.update_member_access(alice.request(raise)).await?;
    assert_eq!(folders_seen(&on_replica, &bob).await?, [("A2".into(), edit), ("B".into(), view)]);
    members
        .remove_member(alice.request(RemoveMemberRequest { folder_id: a.clone(), user_id: bob.user_id.clone() }))
        .await?;
    assert_eq!(folders_seen(&on_replica, &bob).await?, [("B".into(), view)]);
    folder_api.delete_folder(alice.request(DeleteFolderRequest { folder_id: b.clone() })).await?;
    assert_eq!(folders_seen(&on_replica, &bob).await?, []);
    assert_eq!(folders_seen(&on_replica, &alice).await?, [("A2".into(), manage)]);
    drop(replica);
    cluster.stop().await
}
