//! Folders, members and items through the gateway: the sharing story, connections without
//! secrets, concurrency, crypto-erasure, bad input, and what is stored at rest.

use futures::TryStreamExt;
use tonic::Code;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_content::Content;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Session, TestCluster, query_content};

const PASSWORD: &str = "Tr0ub4dor-and-3";

fn connection() -> ItemContent {
    ItemContent {
        content: Some(Content::Connection(Connection {
            connection_string: format!(
                "mongodb://reporting_user:{PASSWORD}@orders-db-1.internal.example:27017/?replicaSet=rs-orders&tls=true"
            ),
            hosts: vec!["orders-db-1.internal.example:27017".into()],
            replica_set: "rs-orders".into(),
            username: "reporting_user".into(),
            tls: true,
            options: [
                ("password".to_owned(), PASSWORD.to_owned()),
                ("appName".to_owned(), "quarterly-report".to_owned()),
            ]
            .into(),
            ..Default::default()
        })),
    }
}

#[tokio::test]
async fn share_read_lower_remove_with_connections_that_never_carry_secrets() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Quarterly reporting").await?;

    let created = cluster.items(&alice).await?.create(&folder_id, "Orders replica", connection()).await?;
    assert_eq!(
        created.removed_fields,
        ["content.connection.connection_string.password", "content.connection.options.password"]
    );
    let stored = created.item.expect("item");
    let Some(Content::Connection(c)) = stored.content.and_then(|c| c.content) else { panic!("connection") };
    assert!(
        !c.connection_string.contains(PASSWORD)
            && c.connection_string.starts_with("mongodb://reporting_user@orders-db-1")
    );
    assert!(!c.options.contains_key("password") && c.options["appName"] == "quarterly-report");
    let summary = stored.summary.expect("summary");
    assert_eq!((summary.shared_by_email.as_str(), summary.kind), ("alice@example.com", ItemKind::Connection as i32));
    cluster
        .items(&alice)
        .await?
        .create(&folder_id, "Big orders", query_content(r#"{"total": {"$gt": 10000}}"#))
        .await?;

    // Bob is not a member: the folder does not exist for him.
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let list = |s: &Session| s.request(ListItemsRequest { folder_id: folder_id.clone(), page: None });
    assert_eq!(items.list_items(list(&bob)).await.unwrap_err().code(), Code::NotFound);

    cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;
    let listed = items.list_items(list(&bob)).await?.into_inner().items;
    assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["Orders replica", "Big orders"]);
    let q = &listed[1];
    let update = |s: &Session, version: u64, filter: &str| {
        s.request(UpdateItemRequest {
            folder_id: folder_id.clone(),
            item_id: q.id.clone(),
            expected_version: version,
            name: "Big orders".into(),
            description: String::new(),
            content: Some(query_content(filter)),
        })
    };
    let updated =
        items.update_item(update(&bob, 1, r#"{"total": {"$gt": 20000}}"#)).await?.into_inner().item.expect("item");
    let summary = updated.summary.expect("summary");
    assert_eq!(
        (summary.version, summary.updated_by_email.as_str(), summary.shared_by_email.as_str()),
        (2, "bob@example.com", "alice@example.com")
    );
    let err = items.update_item(update(&alice, 1, "{}")).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "stale version");

    // Lowered to VIEW: reads work, writes do not, on the very next request.
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    let lower = UpdateMemberAccessRequest {
        folder_id: folder_id.clone(),
        user_id: bob.user_id.clone(),
        access: AccessLevel::View as i32,
    };
    members.update_member_access(alice.request(lower)).await?;
    assert_eq!(items.update_item(update(&bob, 2, "{}")).await.unwrap_err().code(), Code::PermissionDenied);
    let got = items
        .get_item(bob.request(GetItemRequest { folder_id: folder_id.clone(), item_id: q.id.clone() }))
        .await?
        .into_inner();
    let Some(Content::Query(read)) = got.item.and_then(|i| i.content).and_then(|c| c.content) else { panic!("query") };
    assert_eq!(read.filter, r#"{"total": {"$gt": 20000}}"#);

    // The last MANAGE member can neither leave nor be lowered.
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let err =
        folders.leave_folder(alice.request(LeaveFolderRequest { folder_id: folder_id.clone() })).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let self_lower = UpdateMemberAccessRequest {
        folder_id: folder_id.clone(),
        user_id: alice.user_id.clone(),
        access: AccessLevel::Edit as i32,
    };
    assert_eq!(
        members.update_member_access(alice.request(self_lower)).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Removed: gone on the next request.
    members
        .remove_member(
            alice.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() }),
        )
        .await?;
    assert_eq!(items.list_items(list(&bob)).await.unwrap_err().code(), Code::NotFound);
    let mine = folders.list_folders(bob.request(ListFoldersRequest::default())).await?.into_inner().folders;
    assert!(mine.is_empty());
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_with_one_expected_version_have_one_winner() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Race").await?;
    let id = cluster
        .items(&alice)
        .await?
        .create(&folder_id, "Counter", query_content("{}"))
        .await?
        .item
        .and_then(|i| i.summary)
        .expect("summary")
        .id;
    // Each update is its own task, over its own connection, on a multi-threaded runtime that
    // also runs the services: the requests really are handled in parallel.
    let mut attempts = Vec::new();
    for n in 0..20 {
        let mut items = ItemServiceClient::new(cluster.gateway().await?);
        let req = alice.request(UpdateItemRequest {
            folder_id: folder_id.clone(),
            item_id: id.clone(),
            expected_version: 1,
            name: format!("Counter {n}"),
            description: String::new(),
            content: Some(query_content("{}")),
        });
        attempts.push(tokio::spawn(async move { items.update_item(req).await.map(|_| ()).map_err(|s| s.code()) }));
    }
    let results: Vec<_> = futures::future::try_join_all(attempts).await?;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(Code::Aborted))));
    cluster.stop().await
}

#[tokio::test]
async fn deleting_a_folder_destroys_its_keys_so_nothing_left_can_be_read() -> anyhow::Result<()> {
    use ts_proto::internal::GetDataKeyRequest;
    use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Doomed").await?;
    cluster
        .items(&alice)
        .await?
        .create(&folder_id, "Secret plans", query_content(r#"{"plan": "world domination"}"#))
        .await?;
    let db = cluster.database().await?;
    let backup: Vec<bson::Document> =
        db.collection("items").find(bson::doc! { "folder_id": &folder_id }).await?.try_collect().await?;
    assert_eq!(backup.len(), 1);

    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    folders.delete_folder(alice.request(DeleteFolderRequest { folder_id: folder_id.clone() })).await?;
    let mut kv = KeyVaultServiceClient::new(
        cluster.internal(teamshare::Service::Keyvault, ts_contract::identity::Peer::Folders).await?,
    );
    for version in [0, 1] {
        let err = kv.get_data_key(GetDataKeyRequest { folder_id: folder_id.clone(), version }).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "no key version {version} survives");
    }
    assert_eq!(
        db.collection::<bson::Document>("data_keys").count_documents(bson::doc! { "folder_id": &folder_id }).await?,
        0
    );
    assert_eq!(
        db.collection::<bson::Document>("items").count_documents(bson::doc! { "folder_id": &folder_id }).await?,
        0
    );
    // The "backup" copy still holds its envelopes, sealed under a key that no longer exists.
    let enc = backup[0].get_document("enc")?;
    assert!(ts_crypto::Envelope::from_bson(enc.get("content").expect("content")).is_ok());
    let err = folders.get_folder(alice.request(GetFolderRequest { folder_id })).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    cluster.stop().await
}

#[tokio::test]
async fn bad_input_gets_invalid_argument_and_writes_nothing() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Inputs").await?;
    let other_id = cluster.folders(&alice).await?.create("Other").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    invalid(
        folders.create_folder(alice.request(CreateFolderRequest { name: "   ".into(), ..Default::default() })).await,
        "name",
    );
    invalid(
        folders.create_folder(alice.request(CreateFolderRequest { name: "x".repeat(201), ..Default::default() })).await,
        "name",
    );
    let create = |name: &str, content: Option<ItemContent>| {
        alice.request(CreateItemRequest {
            folder_id: folder_id.clone(),
            name: name.into(),
            description: String::new(),
            content,
            ..Default::default()
        })
    };
    invalid(items.create_item(create("", Some(query_content("{}")))).await, "name");
    invalid(items.create_item(create("No content", None)).await, "content");
    invalid(items.create_item(create("Unknown kind", Some(ItemContent { content: None }))).await, "content");
    invalid(
        items.create_item(create("Huge", Some(query_content(&"x".repeat(1024 * 1024 + 1))))).await,
        "content.query.filter",
    );
    let pem = ItemContent {
        content: Some(Content::Connection(Connection {
            tls_options: [("tlsCertificateKeyFile".to_owned(), "-----BEGIN PRIVATE KEY-----\nMIIE...".to_owned())]
                .into(),
            ..Default::default()
        })),
    };
    invalid(items.create_item(create("With a key", Some(pem))).await, "content.connection.tls_options");
    let bad_pref =
        ItemContent { content: Some(Content::Connection(Connection { read_preference: 77, ..Default::default() })) };
    invalid(items.create_item(create("Bad enum", Some(bad_pref))).await, "read_preference");
    let bad_access =
        UpdateMemberAccessRequest { folder_id: folder_id.clone(), user_id: alice.user_id.clone(), access: 99 };
    invalid(members.update_member_access(alice.request(bad_access)).await, "access");

    // Page tokens: garbage, and a real token replayed into another folder.
    for i in 0..3 {
        items.create_item(create(&format!("q{i}"), Some(query_content("{}")))).await?;
    }
    let page = |folder: &str, token: &str| {
        alice.request(ListItemsRequest {
            folder_id: folder.into(),
            page: Some(PageRequest { page_size: 2, page_token: token.into() }),
        })
    };
    let first = items.list_items(page(&folder_id, "")).await?.into_inner();
    let token = first.page.expect("page").next_page_token;
    assert!(!token.is_empty());
    let second = items.list_items(page(&folder_id, &token)).await?.into_inner();
    assert_eq!(second.items.len(), 1);
    invalid(items.list_items(page(&folder_id, "not-a-token")).await, "page_token");
    invalid(items.list_items(page(&other_id, &token)).await, "page_token");

    // Invalid UTF-8 where a string belongs: sent raw, refused, not a crash.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RawCreateFolder {
        #[prost(bytes = "vec", tag = "1")]
        name: Vec<u8>,
    }
    let mut grpc = tonic::client::Grpc::new(cluster.gateway().await?);
    grpc.ready().await?;
    let raw = alice.request(RawCreateFolder { name: vec![b'o', 0xff, 0xfe, b'k'] });
    let path = http::uri::PathAndQuery::from_static("/teamshare.v1.FolderService/CreateFolder");
    let err =
        grpc.unary::<_, CreateFolderResponse, _>(raw, path, tonic_prost::ProstCodec::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // Nothing half-written: only the three good items exist.
    let all = items.list_items(page(&folder_id, "")).await?.into_inner();
    let db = cluster.database().await?;
    assert_eq!(
        db.collection::<bson::Document>("items").count_documents(bson::doc! { "folder_id": &folder_id }).await?,
        3
    );
    assert_eq!(all.items.len(), 2);
    let mine = folders.list_folders(alice.request(ListFoldersRequest::default())).await?.into_inner().folders;
    assert_eq!(mine.len(), 2);
    cluster.stop().await
}

#[tokio::test]
async fn nothing_a_user_typed_is_stored_in_plaintext() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = cluster.folders(&alice).await?.create("Zanzibar reporting").await?;
    cluster.items(&alice).await?.create(&folder_id, "Orders replica", connection()).await?;
    cluster
        .items(&alice)
        .await?
        .create(&folder_id, "Whale customers", query_content(r#"{"lifetime_value_usd": {"$gt": 987654}}"#))
        .await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    folders
        .rename_folder(
            alice.request(RenameFolderRequest { folder_id: folder_id.clone(), name: "Kilimanjaro reporting".into() }),
        )
        .await?;

    // Read everything back, so that every cache (Redis included) holds what it would.
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let listed = items
        .list_items(alice.request(ListItemsRequest { folder_id: folder_id.clone(), page: None }))
        .await?
        .into_inner()
        .items;
    for i in &listed {
        items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: i.id.clone() })).await?;
    }

    // The raw BSON of every document: binary fields as stored, not base64 as in JSON.
    let db = cluster.database().await?;
    let stored = ts_testkit::raw_documents(&db).await?;
    assert!(
        !ts_testkit::collections_containing(&stored, b"alice@example.com").is_empty(),
        "the scan sees stored documents"
    );
    // Every key and value in Redis, of every type.
    let redis = ts_testkit::redis_bytes(ts_testkit::shared()?.redis.port)?;
    let generation = format!("ts:{{f:{folder_id}}}:gen");
    assert!(ts_testkit::contains_bytes(&redis, generation.as_bytes()), "the scan sees the cache's keys");
    for typed in [
        "Zanzibar",
        "Kilimanjaro",
        "Orders replica",
        "Whale customers",
        "for the Q3 review",
        "lifetime_value_usd",
        "987654",
        "orders-db-1.internal.example",
        "reporting_user",
        "rs-orders",
        "quarterly-report",
        "sales",
        PASSWORD,
    ] {
        let found = ts_testkit::collections_containing(&stored, typed.as_bytes());
        assert!(found.is_empty(), "{typed:?} is stored in plaintext in {found:?}");
        assert!(!ts_testkit::contains_bytes(&redis, typed.as_bytes()), "{typed:?} is in Redis in plaintext");
    }
    cluster.stop().await
}

#[tokio::test]
async fn move_item_needs_edit_on_the_target_folder_too() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let carol = cluster.sign_in("carol@example.com").await?;
    let source = cluster.folders(&alice).await?.create("Source").await?;
    let view_only = cluster.folders(&alice).await?.create("Bob may only look").await?;
    let carols = cluster.folders(&carol).await?.create("Carol's, not Bob's").await?;
    cluster.add_member(&source, &bob, AccessLevel::Edit).await?;
    cluster.add_member(&view_only, &bob, AccessLevel::View).await?;
    let id = cluster
        .items(&alice)
        .await?
        .create(&source, "Movable", query_content("{}"))
        .await?
        .item
        .and_then(|i| i.summary)
        .expect("summary")
        .id;
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let move_to = |target: &str, version: u64| {
        bob.request(MoveItemRequest {
            folder_id: source.clone(),
            item_id: id.clone(),
            expected_version: version,
            target_folder_id: target.into(),
        })
    };
    let err = items.move_item(move_to(&view_only, 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "VIEW on the target: {err:?}");
    let err = items.move_item(move_to(&carols, 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "not a member of the target: {err:?}");

    // The item did not move: still in the source at version 1, absent from both targets.
    let get =
        |s: &Session, folder_id: &str| s.request(GetItemRequest { folder_id: folder_id.into(), item_id: id.clone() });
    let still = items.get_item(get(&alice, &source)).await?.into_inner().item.and_then(|i| i.summary).expect("summary");
    assert_eq!(still.version, 1);
    assert_eq!(items.get_item(get(&alice, &view_only)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(items.get_item(get(&carol, &carols)).await.unwrap_err().code(), Code::NotFound);

    // With EDIT on the target, the same move works.
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    members
        .update_member_access(alice.request(UpdateMemberAccessRequest {
            folder_id: view_only.clone(),
            user_id: bob.user_id.clone(),
            access: AccessLevel::Edit as i32,
        }))
        .await?;
    items.move_item(move_to(&view_only, 1)).await?;
    assert_eq!(items.get_item(get(&alice, &source)).await.unwrap_err().code(), Code::NotFound);
    items.get_item(get(&alice, &view_only)).await?;
    cluster.stop().await
}

#[tokio::test]
async fn an_item_id_from_another_folder_is_not_found_through_this_one() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let secret = cluster.folders(&alice).await?.create("Alice only").await?;
    let both = cluster.folders(&alice).await?.create("Both").await?;
    let bobs = cluster.folders(&bob).await?.create("Bob's own").await?;
    cluster.add_member(&both, &bob, AccessLevel::Manage).await?;
    let created =
        cluster.items(&alice).await?.create(&secret, "Alice's secret item", query_content(r#"{"x": 1}"#)).await?;
    let secret_item = created.item.and_then(|i| i.summary).expect("summary").id;
    let in_both = cluster.items(&alice).await?.create(&both, "Shared item", query_content("{}")).await?;
    let shared_item = in_both.item.and_then(|i| i.summary).expect("summary").id;
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    // Warm the caches of both items under their real folders first.
    for (f, i) in [(&secret, &secret_item), (&both, &shared_item)] {
        items.get_item(alice.request(GetItemRequest { folder_id: f.clone(), item_id: i.clone() })).await?;
    }

    // Bob names a folder he may use and an item from another folder: alice's private one,
    // and one from a folder he is also in. Every item RPC answers NOT_FOUND.
    for (folder_id, item_id) in [(&bobs, &secret_item), (&both, &secret_item), (&bobs, &shared_item)] {
        let (f, i) = (folder_id.clone(), item_id.clone());
        let what = format!("folder {f}, item {i}");
        let err = items.get_item(bob.request(GetItemRequest { folder_id: f.clone(), item_id: i.clone() })).await;
        assert_eq!(err.unwrap_err().code(), Code::NotFound, "get: {what}");
        let update = UpdateItemRequest {
            folder_id: f.clone(),
            item_id: i.clone(),
            expected_version: 1,
            name: "Hijacked".into(),
            description: String::new(),
            content: Some(query_content("{}")),
        };
        assert_eq!(items.update_item(bob.request(update)).await.unwrap_err().code(), Code::NotFound, "update: {what}");
        let delete = DeleteItemRequest { folder_id: f.clone(), item_id: i.clone(), expected_version: 1 };
        assert_eq!(items.delete_item(bob.request(delete)).await.unwrap_err().code(), Code::NotFound, "delete: {what}");
        let target = if f == bobs { both.clone() } else { bobs.clone() };
        let mv = MoveItemRequest { folder_id: f, item_id: i, expected_version: 1, target_folder_id: target };
        assert_eq!(items.move_item(bob.request(mv)).await.unwrap_err().code(), Code::NotFound, "move: {what}");
    }
    // Both items are untouched where they belong.
    for (f, i, name) in [(&secret, &secret_item, "Alice's secret item"), (&both, &shared_item, "Shared item")] {
        let got = items.get_item(alice.request(GetItemRequest { folder_id: f.clone(), item_id: i.clone() })).await?;
        let summary = got.into_inner().item.and_then(|i| i.summary).expect("summary");
        assert_eq!((summary.name.as_str(), summary.version), (name, 1));
    }
    cluster.stop().await
}

fn invalid<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, field: &str) {
    let err = r.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
    assert!(err.message().contains(field), "{field}: {}", err.message());
}
