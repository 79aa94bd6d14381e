//! The Redis cache in front of MongoDB: revocation holds across folders replicas sharing one
//! Redis, and with Redis killed everything keeps working from MongoDB.

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
        .create_folder(alice.request(CreateFolderRequest { name: "Shared".into() }))
        .await?
        .into_inner()
        .folder
        .expect("f")
        .id;
    cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;

    let mut on_replica = ItemServiceClient::new(replica_channel.clone());
    let list = || as_gateway(&bob, ListItemsRequest { folder_id: folder_id.clone(), page: None });
    on_replica.list_items(list()).await?;
    let servers = ts_testkit::shared()?;
    assert!(
        redis_dump(servers.redis.port)?.contains(&format!("ts:{{f:{folder_id}}}:member:{}", bob.user_id)),
        "the replica cached the membership"
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
        c.redis = Some(ts_common::config::RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    let folder_id = folders
        .create_folder(alice.request(CreateFolderRequest { name: "Resilient".into() }))
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
        })
    };
    let first = items.create_item(create("before")).await?.into_inner().item.and_then(|i| i.summary).expect("summary");
    items.get_item(alice.request(GetItemRequest { folder_id: folder_id.clone(), item_id: first.id.clone() })).await?;
    assert!(redis_dump(port)?.contains(":item:"), "the cache was in use");

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
    folders.create_folder(bob.request(CreateFolderRequest { name: "Bob's".into() })).await?;
    cluster.stop().await
}
