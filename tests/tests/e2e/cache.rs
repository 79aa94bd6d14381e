//! Answers kept in memory under generations in Redis: a change holds at once across folders
//! replicas sharing one Redis, and with Redis killed everything keeps working from MongoDB.

use tonic::Code;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{ServerProcess, TestCluster, as_gateway, query_content, redis_dump};

#[tokio::test]
async fn a_removed_member_is_refused_at_once_by_another_replica() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    // A second folders replica on the same MongoDB and Redis.
    let replica = cluster.folders_replica().await?;
    let replica_channel = replica.channel.clone();

    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let folder_id = folders
        .create_folder(alice.request(CreateFolderRequest { name: "Shared".into(), ..Default::default() }))
        .await?
        .into_inner()
        .folder
        .expect("f")
        .id;
    cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;

    let mut on_replica = ItemServiceClient::new(replica_channel.clone());
    let list = || as_gateway(&bob, ListItemsRequest { folder_id: folder_id.clone(), page: None });
    on_replica.list_items(list()).await?;
    on_replica.list_items(list()).await?;
    let servers = ts_testkit::shared()?;
    assert!(
        redis_dump(servers.redis.port)?.contains(&format!("ts:{{f:{folder_id}}}:gen")),
        "the replica keeps the membership under the folder's generation"
    );

    // Lowered through the gateway's replica: the other replica refuses a write next.
    let mut members = MemberServiceClient::new(cluster.gateway().await?);
    let lower = UpdateMemberAccessRequest {
        folder_id: folder_id.clone(),
        user_id: bob.user_id.clone(),
        access: AccessLevel::View as i32,
    };
    members.update_member_access(alice.request(lower)).await?;
    let create = as_gateway(
        &bob,
        CreateItemRequest {
            folder_id: folder_id.clone(),
            name: "x".into(),
            description: String::new(),
            content: Some(query_content("{}")),
            ..Default::default()
        },
    );
    assert_eq!(on_replica.create_item(create).await.unwrap_err().code(), Code::PermissionDenied);

    // Removed: the very next request on the other replica is refused.
    members
        .remove_member(
            alice.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() }),
        )
        .await?;
    assert_eq!(on_replica.list_items(list()).await.unwrap_err().code(), Code::NotFound);

    drop(replica);
    cluster.stop().await
}

#[tokio::test]
async fn with_redis_killed_reads_and_writes_keep_working() -> anyhow::Result<()> {
    let mut redis = tokio::task::spawn_blocking(ServerProcess::redis).await??;
    let port = redis.port;
    let cluster = TestCluster::start_with(move |c| {
        c.redis = Some(ts_config::RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let folder_id = folders
        .create_folder(alice.request(CreateFolderRequest { name: "Resilient".into(), ..Default::default() }))
        .await?
        .into_inner()
        .folder
        .expect("f")
        .id;
    let create = |name: &str| {
        alice.request(CreateItemRequest {
            folder_id: folder_id.clone(),
            name: name.into(),
            description: String::new(),
            content: Some(query_content("{}")),
            ..Default::default()
        })
    };
    let first = items.create_item(create("before")).await?.into_inner().item.and_then(|i| i.summary).expect("summary");
    items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: first.id.clone() })).await?;
    assert!(redis_dump(port)?.contains(&format!("ts:{{f:{folder_id}}}:gen")), "the cache was in use");

    tokio::task::spawn_blocking(move || redis.stop()).await?;

    // Reads and writes, including ones whose cache entries were warm.
    items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: first.id.clone() })).await?;
    let update = UpdateItemRequest {
        folder_id: folder_id.clone(),
        item_id: first.id.clone(),
        expected_version: 1,
        name: "after".into(),
        description: String::new(),
        content: Some(query_content(r#"{"a": 1}"#)),
    };
    items.update_item(alice.request(update)).await?;
    items.create_item(create("during outage")).await?;
    let listed = items
        .list_items(alice.request(ListItemsRequest { folder_id: folder_id.clone(), page: None }))
        .await?
        .into_inner()
        .items;
    assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), ["after", "during outage"]);
    folders.list_folders(alice.request(ListFoldersRequest::default())).await?;
    // Sign-in and token checks fall back to MongoDB too.
    let bob = cluster.sign_in("bob@example.com").await?;
    folders.create_folder(bob.request(CreateFolderRequest { name: "Bob's".into(), ..Default::default() })).await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_leaves_no_item_cached_under_a_retired_key() -> anyhow::Result<()> {
    use teamshare::Service;
    use ts_contract::identity::Peer;
    use ts_proto::internal::RotateFolderKeyRequest;
    use ts_proto::internal::folder_key_operator_service_client::FolderKeyOperatorServiceClient;
    use ts_proto::public::audit_service_client::AuditServiceClient;

    let cluster = TestCluster::start().await?;
    // A second replica that has never held this folder's keys, sharing MongoDB and Redis.
    let replica = cluster.folders_replica().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let folder_id = folders
        .create_folder(alice.request(CreateFolderRequest { name: "Rotated".into(), ..Default::default() }))
        .await?
        .into_inner()
        .folder;
    let folder_id = folder_id.expect("folder").id;
    let create = CreateItemRequest {
        folder_id: folder_id.clone(),
        name: "orders".into(),
        description: String::new(),
        content: Some(query_content(r#"{"status": "open"}"#)),
        ..Default::default()
    };
    let item_id =
        items.create_item(alice.request(create)).await?.into_inner().item.and_then(|i| i.summary).expect("s").id;
    let get = || GetItemRequest { folder_id: folder_id.clone(), item_id: item_id.clone() };
    // Read through the gateway's replica: the item is now cached, sealed under version 1.
    items.get_item(alice.request(get())).await?;
    let servers = ts_testkit::shared()?;
    assert!(redis_dump(servers.redis.port)?.contains(&format!("ts:{{f:{folder_id}}}:gen")), "the item was kept");
    // The replica reads it too, under the version-1 key, and keeps it.
    let mut on_replica = ItemServiceClient::new(replica.channel.clone());
    on_replica.get_item(as_gateway(&alice, get())).await?;

    let mut operator = FolderKeyOperatorServiceClient::new(cluster.internal(Service::Folders, Peer::Operator).await?);
    let report =
        operator.rotate_folder_key(RotateFolderKeyRequest { folder_id: folder_id.clone() }).await?.into_inner();
    assert_eq!((report.reencrypted_items, report.retired_versions), (1, 1), "{report:?}");

    // The other replica must not be handed the copy sealed under the retired version.
    let item = on_replica.get_item(as_gateway(&alice, get())).await?.into_inner().item.expect("item");
    assert_eq!(item.summary.expect("summary").name, "orders");
    // Nor is a malformed folder id looked up.
    let err = operator.rotate_folder_key(RotateFolderKeyRequest { folder_id: "x".repeat(4096) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("folder_id"), "{}", err.message());

    // The folder's manager sees the operator's action in the folder's trail.
    let audit = AuditServiceClient::new(cluster.gateway().await?);
    ts_testkit::eventually("the rotation in the folder's audit trail", || {
        let mut audit = audit.clone();
        let request = alice.request(ListFolderAuditRequest { folder_id: folder_id.clone(), page: None });
        async move {
            let events = audit.list_folder_audit(request).await?.into_inner().events;
            Ok(events.into_iter().find(|e| {
                e.action == "operator.rotate_folder_key" && e.status_code == "OK" && e.actor_email == "operator"
            }))
        }
    })
    .await?;
    drop(replica);
    cluster.stop().await
}
