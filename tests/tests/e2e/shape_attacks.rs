//! An outside attacker against the shape of requests: ids in every near-miss spelling,
//! requests that do not decode (and a client forging the server's "undecodable" mark),
//! concurrent writes to one object, a second folders replica, and page tokens replayed
//! where they do not belong. Public API only (the replica is reached as the gateway does).

use std::collections::HashSet;

use http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::invitation_service_client::InvitationServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Items, Session, TestCluster, as_gateway, assert_code, query_content};

const MARK: &str = "x-teamshare-undecodable";

/// Near-miss spellings of the valid id `id`, each with a label.
fn near_misses(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("uppercase", id.to_uppercase()),
        ("braced", format!("{{{id}}}")),
        ("percent-encoded", id.replace('-', "%2D")),
        ("trailing NUL", format!("{id}\0")),
        ("U+2010 hyphens", id.replace('-', "\u{2010}")),
        ("empty", String::new()),
        ("1 MiB", format!("{id}{}", "0".repeat(1 << 20))),
        ("simple", id.replace('-', "")),
        ("urn", format!("urn:uuid:{id}")),
        ("padded", format!(" {id}")),
    ]
}

/// INVALID_ARGUMENT naming `field`, without echoing the value.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, field: &str, what: &str) {
    let s = match r {
        Ok(v) => panic!("{field} {what}: expected INVALID_ARGUMENT, got Ok({v:?})"),
        Err(s) => s,
    };
    assert_eq!(s.code(), Code::InvalidArgument, "{field} {what}: {s:?}");
    assert!(s.message().starts_with(&format!("{field} ")), "{field} {what}: {:?}", s.message());
    assert!(s.message().len() < 200, "{field} {what}: the value is echoed back");
    assert!(s.metadata().get(MARK).is_none(), "{field} {what}: the mark left the server");
}

fn list(s: &Session, folder_id: &str, size: u32, token: &str) -> tonic::Request<ListItemsRequest> {
    s.request(ListItemsRequest {
        folder_id: folder_id.into(),
        page: Some(PageRequest { page_size: size, page_token: token.into() }),
    })
}

fn update(s: &Session, folder_id: &str, item_id: &str, version: u64, name: &str) -> tonic::Request<UpdateItemRequest> {
    s.request(UpdateItemRequest {
        folder_id: folder_id.into(),
        item_id: item_id.into(),
        expected_version: version,
        name: name.into(),
        description: String::new(),
        content: Some(query_content("{}")),
    })
}

async fn new_item(cluster: &TestCluster, s: &Session, folder_id: &str, name: &str) -> anyhow::Result<String> {
    let created = cluster.items(s).await?.create(folder_id, name, query_content("{}")).await?;
    Ok(created.item.and_then(|i| i.summary).map(|s| s.id).unwrap_or_default())
}

/// A unary call with whatever message `M` encodes to, decoded as `R`.
async fn raw<M, R>(ch: &Channel, path: &'static str, req: tonic::Request<M>) -> Result<tonic::Response<R>, Status>
where
    M: prost::Message + Send + 'static,
    R: prost::Message + Default + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(ch.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(req, PathAndQuery::from_static(path), tonic_prost::ProstCodec::default()).await
}

fn maybe<T>(forged: bool, r: tonic::Request<T>) -> tonic::Request<T> {
    if forged { marked(r) } else { r }
}

fn marked<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.metadata_mut().insert(MARK, tonic::metadata::MetadataValue::from_static("1"));
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_miss_ids_are_refused_naming_the_field() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Shapes").await?;
    let (mut folders, mut items) = (FolderServiceClient::new(ch.clone()), ItemServiceClient::new(ch.clone()));
    let mut inv = InvitationServiceClient::new(ch.clone());
    let some = uuid::Uuid::new_v4().to_string();
    for (what, bad) in near_misses(&some) {
        let folder = |f: &str| GetFolderRequest { folder_id: f.into() };
        refused(folders.get_folder(alice.request(folder(&bad))).await, "folder_id", what);
        refused(
            folders.delete_folder(alice.request(DeleteFolderRequest { folder_id: bad.clone() })).await,
            "folder_id",
            what,
        );
        refused(items.list_items(list(&alice, &bad, 0, "")).await, "folder_id", what);
        let get = GetItemRequest { folder_id: folder_id.clone(), item_id: bad.clone() };
        refused(items.get_item(alice.request(get)).await, "item_id", what);
        let del = DeleteItemRequest { folder_id: folder_id.clone(), item_id: bad.clone(), expected_version: 1 };
        refused(items.delete_item(alice.request(del)).await, "item_id", what);
        refused(items.update_item(update(&alice, &folder_id, &bad, 1, "x")).await, "item_id", what);
        let id = || bad.clone();
        refused(
            inv.accept_invitation(alice.request(AcceptInvitationRequest { invitation_id: id() })).await,
            "invitation_id",
            what,
        );
        refused(
            inv.decline_invitation(alice.request(DeclineInvitationRequest { invitation_id: id() })).await,
            "invitation_id",
            what,
        );
        refused(
            inv.revoke_invitation(alice.request(RevokeInvitationRequest { invitation_id: id() })).await,
            "invitation_id",
            what,
        );
        refused(
            inv.resend_invitation(alice.request(ResendInvitationRequest { invitation_id: id() })).await,
            "invitation_id",
            what,
        );
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spellings_of_real_ids_the_caller_may_use_are_refused_not_served() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Real").await?;
    let item_id = new_item(&cluster, &alice, &folder_id, "Kept").await?;
    let invitation = cluster.invitations(&alice).await?.send(&folder_id, &bob.email, AccessLevel::Edit).await?;
    let (mut folders, mut items) = (FolderServiceClient::new(ch.clone()), ItemServiceClient::new(ch.clone()));
    let mut inv = InvitationServiceClient::new(ch.clone());
    for ((what, f), ((_, i), (_, v))) in
        near_misses(&folder_id).into_iter().zip(near_misses(&item_id).into_iter().zip(near_misses(&invitation.id)))
    {
        assert!(f != folder_id && i != item_id && v != invitation.id, "{what} is the id itself");
        refused(folders.get_folder(alice.request(GetFolderRequest { folder_id: f.clone() })).await, "folder_id", what);
        let rename = RenameFolderRequest { folder_id: f.clone(), name: "Hijacked".into() };
        refused(folders.rename_folder(alice.request(rename)).await, "folder_id", what);
        refused(items.list_items(list(&alice, &f, 0, "")).await, "folder_id", what);
        let create = CreateItemRequest {
            folder_id: f.clone(),
            name: "Smuggled".into(),
            description: String::new(),
            content: Some(query_content("{}")),
            ..Default::default()
        };
        refused(items.create_item(alice.request(create)).await, "folder_id", what);
        let get = GetItemRequest { folder_id: folder_id.clone(), item_id: i.clone() };
        refused(items.get_item(alice.request(get)).await, "item_id", what);
        refused(items.update_item(update(&alice, &folder_id, &i, 1, "Hijacked")).await, "item_id", what);
        refused(
            inv.accept_invitation(bob.request(AcceptInvitationRequest { invitation_id: v.clone() })).await,
            "invitation_id",
            what,
        );
        refused(
            inv.revoke_invitation(alice.request(RevokeInvitationRequest { invitation_id: v })).await,
            "invitation_id",
            what,
        );
        refused(folders.delete_folder(alice.request(DeleteFolderRequest { folder_id: f })).await, "folder_id", what);
    }
    // Nothing was touched: same name, one item at version 1, the invitation still pending.
    let folder = folders.get_folder(alice.request(GetFolderRequest { folder_id: folder_id.clone() })).await?;
    assert_eq!(folder.into_inner().folder.map(|f| f.name).as_deref(), Some("Real"));
    let listed = items.list_items(list(&alice, &folder_id, 0, "")).await?.into_inner().items;
    assert_eq!(listed.iter().map(|i| (i.id.as_str(), i.version)).collect::<Vec<_>>(), [(item_id.as_str(), 1)]);
    cluster.invitations(&bob).await?.accept(&invitation.id).await?;
    cluster.stop().await
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawGetFolder {
    #[prost(bytes = "vec", tag = "1")]
    folder_id: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(fixed64, tag = "1")]
    folder_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawGetItem {
    #[prost(string, tag = "1")]
    folder_id: String,
    #[prost(bytes = "vec", tag = "2")]
    item_id: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_requests_are_invalid_argument_with_or_without_a_forged_mark() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Decode").await?;
    let item_id = new_item(&cluster, &alice, &folder_id, "Decoded").await?;
    let mut real_id = item_id.clone().into_bytes();
    real_id[0] = 0xff;
    for forged in [false, true] {
        let bad_utf8 = alice.request(RawGetFolder { folder_id: vec![b'a', 0xff, 0xfe, b'b'] });
        let r =
            raw::<_, GetFolderResponse>(&ch, "/teamshare.v1.FolderService/GetFolder", maybe(forged, bad_utf8)).await;
        let s = assert_code!(r, Code::InvalidArgument);
        assert!(s.metadata().get(MARK).is_none(), "forged {forged}: {s:?}");
        let wire = alice.request(WrongWireType { folder_id: 7 });
        let r = raw::<_, GetFolderResponse>(&ch, "/teamshare.v1.FolderService/GetFolder", maybe(forged, wire)).await;
        let s = assert_code!(r, Code::InvalidArgument);
        assert!(s.metadata().get(MARK).is_none(), "forged {forged}: {s:?}");
        let item = alice.request(RawGetItem { folder_id: folder_id.clone(), item_id: real_id.clone() });
        let r = raw::<_, GetItemResponse>(&ch, "/teamshare.v1.ItemService/GetItem", maybe(forged, item)).await;
        let s = assert_code!(r, Code::InvalidArgument);
        assert!(s.metadata().get(MARK).is_none(), "forged {forged}: {s:?}");
    }
    // Nothing undecodable created anything or reached the item.
    let mut items = ItemServiceClient::new(ch.clone());
    let got = items.get_item(alice.request(GetItemRequest { folder_id, item_id })).await?;
    assert!(got.metadata().get(MARK).is_none());
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_undecodable_mark_flips_no_code() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Marked").await?;
    let bobs = Folders::new(&ch, &bob).create("Bob's").await?;
    let mut folders = FolderServiceClient::new(ch.clone());
    let get = |s: &Session, f: &str| marked(s.request(GetFolderRequest { folder_id: f.into() }));
    // A valid request: its normal answer, unmarked.
    let ok = folders.get_folder(get(&alice, &folder_id)).await?;
    assert!(ok.metadata().get(MARK).is_none(), "{:?}", ok.metadata());
    assert_eq!(ok.into_inner().folder.map(|f| f.name).as_deref(), Some("Marked"));
    let created = folders
        .create_folder(marked(alice.request(CreateFolderRequest { name: "Second".into(), ..Default::default() })))
        .await?;
    assert!(created.metadata().get(MARK).is_none());
    // Invalid, not found, unauthenticated: the normal codes.
    refused(folders.get_folder(get(&alice, "not-an-id")).await, "folder_id", "marked");
    let s = assert_code!(folders.get_folder(get(&alice, &bobs)).await, Code::NotFound);
    assert!(s.metadata().get(MARK).is_none());
    let anon = marked(tonic::Request::new(GetFolderRequest { folder_id: folder_id.clone() }));
    let s = assert_code!(folders.get_folder(anon).await, Code::Unauthenticated);
    assert!(s.metadata().get(MARK).is_none());
    let mut items = ItemServiceClient::new(ch.clone());
    let empty = marked(alice.request(CreateItemRequest { folder_id: folder_id.clone(), ..Default::default() }));
    let s = assert_code!(items.create_item(empty).await, Code::InvalidArgument);
    assert!(s.metadata().get(MARK).is_none());
    let s = assert_code!(items.update_item(marked(update(&alice, &folder_id, &bobs, 1, "x"))).await, Code::NotFound);
    assert!(s.metadata().get(MARK).is_none());
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_are_listed_once_each_across_pages_of_seven() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Crowd").await?;
    let mut tasks = Vec::new();
    for n in 0..20 {
        let (mut items, f) = (Items::new(&cluster.gateway().await?, &alice), folder_id.clone());
        tasks.push(tokio::spawn(async move {
            let created = items.create(&f, &format!("Item {n:02}"), query_content("{}")).await?;
            Ok::<_, Status>(created.item.and_then(|i| i.summary).map(|s| s.id).unwrap_or_default())
        }));
    }
    let mut created = Vec::new();
    for t in futures::future::try_join_all(tasks).await? {
        created.push(t?);
    }
    assert_eq!(created.iter().collect::<HashSet<_>>().len(), 20, "{created:?}");
    let mut items = ItemServiceClient::new(ch.clone());
    let (mut paged, mut sizes, mut token) = (Vec::new(), Vec::new(), String::new());
    loop {
        let reply = items.list_items(list(&alice, &folder_id, 7, &token)).await?.into_inner();
        sizes.push(reply.items.len());
        paged.extend(reply.items);
        token = reply.page.map(|p| p.next_page_token).unwrap_or_default();
        if token.is_empty() || sizes.len() > 10 {
            break;
        }
    }
    assert_eq!(sizes, [7, 7, 6], "page sizes");
    let ids: Vec<&str> = paged.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 20, "a duplicate across pages: {ids:?}");
    let mut want: Vec<&str> = created.iter().map(String::as_str).collect();
    let mut got = ids.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "paged listing is not the created set");
    let times: Vec<_> = paged.iter().map(|i| i.create_time.map(|t| (t.seconds, t.nanos))).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "not in creation order: {times:?}");
    // One big page says the same, in the same order.
    let whole = items.list_items(list(&alice, &folder_id, 0, "")).await?.into_inner().items;
    assert_eq!(whole.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ids);
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_at_one_version_have_one_winner_each_round() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Race").await?;
    let item_id = new_item(&cluster, &alice, &folder_id, "Contested").await?;
    for version in 1..=3u64 {
        let mut attempts = Vec::new();
        for n in 0..20 {
            let mut items = ItemServiceClient::new(cluster.gateway().await?);
            let req = update(&alice, &folder_id, &item_id, version, &format!("v{version} n{n}"));
            attempts.push(tokio::spawn(async move {
                items.update_item(req).await.map(|r| r.into_inner().item.and_then(|i| i.summary)).map_err(|s| s.code())
            }));
        }
        let results = futures::future::try_join_all(attempts).await?;
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {version}: {results:?}");
        assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(Code::Aborted))), "round {version}: {results:?}");
        let won = winners[0].clone().expect("summary");
        assert_eq!(won.version, version + 1);
        let mut items = ItemServiceClient::new(ch.clone());
        let got =
            items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: item_id.clone() }));
        let stored = got.await?.into_inner().item.and_then(|i| i.summary).expect("summary");
        assert_eq!((stored.name, stored.version), (won.name, version + 1), "round {version}");
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_lowered_or_removed_through_the_gateway_is_refused_at_once_on_a_replica() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let replica = cluster.folders_replica().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder_id = Folders::new(&ch, &alice).create("Replicated").await?;
    let item_id = new_item(&cluster, &alice, &folder_id, "Shared").await?;
    cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;
    let mut rf = FolderServiceClient::new(replica.channel.clone());
    let mut ri = ItemServiceClient::new(replica.channel.clone());
    let folder = || GetFolderRequest { folder_id: folder_id.clone() };
    let item = || GetItemRequest { folder_id: folder_id.clone(), item_id: item_id.clone() };
    let listing = || ListItemsRequest { folder_id: folder_id.clone(), page: None };
    // Bob warms every cache the replica has for him.
    rf.get_folder(as_gateway(&bob, folder())).await?;
    ri.get_item(as_gateway(&bob, item())).await?;
    ri.list_items(as_gateway(&bob, listing())).await?;
    let mut members = MemberServiceClient::new(ch.clone());
    let lower = UpdateMemberAccessRequest {
        folder_id: folder_id.clone(),
        user_id: bob.user_id.clone(),
        access: AccessLevel::View as i32,
    };
    members.update_member_access(alice.request(lower)).await?;
    let upd = update(&bob, &folder_id, &item_id, 1, "Still edit?").into_inner();
    assert_code!(ri.update_item(as_gateway(&bob, upd.clone())).await, Code::PermissionDenied);
    let mine = rf.get_folder(as_gateway(&bob, folder())).await?.into_inner().folder.expect("folder");
    assert_eq!(mine.my_access, AccessLevel::View as i32);
    let remove = RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() };
    members.remove_member(alice.request(remove)).await?;
    assert_code!(rf.get_folder(as_gateway(&bob, folder())).await, Code::NotFound);
    assert_code!(ri.get_item(as_gateway(&bob, item())).await, Code::NotFound);
    assert_code!(ri.list_items(as_gateway(&bob, listing())).await, Code::NotFound);
    assert_code!(ri.update_item(as_gateway(&bob, upd)).await, Code::NotFound);
    let theirs = rf.list_folders(as_gateway(&bob, ListFoldersRequest::default())).await?.into_inner().folders;
    assert!(theirs.is_empty(), "{theirs:?}");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_replayed_on_another_folder_or_rpc_are_invalid_argument() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let ch = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let (bob, carol) = (cluster.sign_in("bob@example.com").await?, cluster.sign_in("carol@example.com").await?);
    let mut ids = Vec::new();
    for name in ["A", "B", "C"] {
        let f = Folders::new(&ch, &alice).create(name).await?;
        for i in 0..3 {
            new_item(&cluster, &alice, &f, &format!("{name}{i}")).await?;
        }
        ids.push(f);
    }
    let bobs = Folders::new(&ch, &bob).create("Bob's").await?;
    for i in 0..3 {
        new_item(&cluster, &bob, &bobs, &format!("b{i}")).await?;
    }
    let (a, b) = (&ids[0], &ids[1]);
    let mut items = ItemServiceClient::new(ch.clone());
    let token_of = |r: Option<PageResponse>| r.map(|p| p.next_page_token).unwrap_or_default();
    let token_a = token_of(items.list_items(list(&alice, a, 2, "")).await?.into_inner().page);
    assert!(!token_a.is_empty());
    let bad = |r: Result<tonic::Response<ListItemsResponse>, Status>, what: &str| {
        let s = assert_code!(r, Code::InvalidArgument);
        assert!(s.message().contains("page_token"), "{what}: {s:?}");
    };
    bad(items.list_items(list(&alice, b, 2, &token_a)).await, "A's token on B");
    bad(items.list_items(list(&bob, &bobs, 2, &token_a)).await, "alice's token on bob's folder");
    // Tokens of other list RPCs, on ListItems of the same folder.
    let mut folders = FolderServiceClient::new(ch.clone());
    let page = Some(PageRequest { page_size: 2, page_token: String::new() });
    let token_f = token_of(folders.list_folders(alice.request(ListFoldersRequest { page })).await?.into_inner().page);
    assert!(!token_f.is_empty());
    bad(items.list_items(list(&alice, a, 2, &token_f)).await, "a ListFolders token");
    for s in [&bob, &carol] {
        cluster.add_member(a, s, AccessLevel::View).await?;
    }
    let mut members = MemberServiceClient::new(ch.clone());
    let page = Some(PageRequest { page_size: 2, page_token: String::new() });
    let lm = members.list_members(alice.request(ListMembersRequest { folder_id: a.clone(), page })).await?;
    let token_m = token_of(lm.into_inner().page);
    assert!(!token_m.is_empty());
    bad(items.list_items(list(&alice, a, 2, &token_m)).await, "a ListMembers token");
    // And A's item token on ListFolders is refused too.
    let page = Some(PageRequest { page_size: 2, page_token: token_a.clone() });
    let s = assert_code!(folders.list_folders(alice.request(ListFoldersRequest { page })).await, Code::InvalidArgument);
    assert!(s.message().contains("page_token"), "{s:?}");
    // Where it belongs, the token still works.
    let rest = items.list_items(list(&alice, a, 2, &token_a)).await?.into_inner();
    assert_eq!(rest.items.len(), 1);
    cluster.stop().await
}
