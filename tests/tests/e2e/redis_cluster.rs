//! The stack on a real 3-node Redis Cluster (`redis-cluster://`), as on ElastiCache or
//! Memorystore in cluster mode: the send limits hold across two gateways (through Redis,
//! not per replica), a sign-out holds at once on another gateway, and a membership change
//! holds at once on another folders replica; no command ever spans two slots.

use std::time::Duration;

use tonic::Code;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::member_service_client::MemberServiceClient;
use ts_proto::public::*;
use ts_testkit::{Folders, Invitations, RedisCluster, TestCluster, as_gateway, bearer, redis_cluster};

async fn on_cluster(
    adjust: impl FnOnce(&mut ts_config::Config),
) -> anyhow::Result<(TestCluster, &'static RedisCluster)> {
    let redis = tokio::task::spawn_blocking(redis_cluster).await??;
    let url = redis.url();
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(ts_config::RedisConfig { url: url.into() });
        adjust(c);
    })
    .await?;
    Ok((cluster, redis))
}

fn no_cross_slot(redis: &RedisCluster) -> anyhow::Result<()> {
    anyhow::ensure!(redis.cross_slot_errors()? == 0, "a command spanned two hash slots (INFO errorstats: CROSSSLOT)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_limits_hold_across_two_gateways_on_a_redis_cluster() -> anyhow::Result<()> {
    let (cluster, redis) = on_cluster(|c| {
        let l = &mut c.invitation_limits;
        (l.inviter_burst, l.per_inviter_per_minute) = (4, 20);
        (l.license_burst, l.per_license_per_minute) = (6, 60);
    })
    .await?;
    cluster.upsert_license("acme", "admin@acme.test", "acme.test").await?;
    let (addr, _stop) = cluster.extra_gateway().await?;
    let gateways = [cluster.gateway().await?, cluster.gateway_at(addr).await?];
    let alice = cluster.sign_in("alice@acme.test").await?;
    let bob = cluster.sign_in("bob@acme.test").await?;
    let folder_a = Folders::new(&gateways[0], &alice).create("A").await?;
    let folder_b = Folders::new(&gateways[0], &bob).create("B").await?;

    // Alice's four, alternating gateways, then a fifth on either is refused: one budget.
    for i in 0..4 {
        Invitations::new(&gateways[i % 2], &alice)
            .send(&folder_a, &format!("a{i}@example.com"), AccessLevel::View)
            .await?;
    }
    for gateway in &gateways {
        let err =
            Invitations::new(gateway, &alice).send(&folder_a, "a9@example.com", AccessLevel::View).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("inviter"), "the inviter's budget: {err:?}");
    }
    // Bob has his own budget but shares the license's six: two more, and the license is full.
    for i in 0..2 {
        Invitations::new(&gateways[1 - i % 2], &bob)
            .send(&folder_b, &format!("b{i}@example.com"), AccessLevel::View)
            .await?;
    }
    let err =
        Invitations::new(&gateways[0], &bob).send(&folder_b, "b9@example.com", AccessLevel::View).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("license"), "the license's budget: {err:?}");
    // A minute later both budgets have room again.
    cluster.clock.advance(Duration::from_secs(60));
    Invitations::new(&gateways[1], &bob).send(&folder_b, "b10@example.com", AccessLevel::View).await?;

    // The budget lives in the cluster (not in each gateway), under one slot per license.
    let keys: Vec<String> = redis.keys_per_node()?.into_iter().flatten().collect();
    let limiter: Vec<&String> = keys.iter().filter(|k| k.contains(":invite:") && k.contains("acme")).collect();
    assert!(limiter.iter().any(|k| k.contains("license:acme")), "license key in the cluster: {limiter:?}");
    assert!(limiter.iter().all(|k| k.starts_with("ts:{rl:l:acme}")), "one hash tag per license: {limiter:?}");
    no_cross_slot(redis)?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_holds_at_once_on_another_gateway_on_a_redis_cluster() -> anyhow::Result<()> {
    let (cluster, redis) = on_cluster(|_| {}).await?;
    let (addr, _stop) = cluster.extra_gateway().await?;
    let other = cluster.gateway_at(addr).await?;
    let session = cluster.sign_in("frank@example.com").await?;
    let me = |channel: tonic::transport::Channel| {
        let token = session.access.clone();
        async move { AuthServiceClient::new(channel).get_me(bearer(&token, GetMeRequest {})).await.map(|_| ()) }
    };
    // The other gateway has checked (and keeps) the live session.
    me(other.clone()).await?;
    me(other.clone()).await?;
    AuthServiceClient::new(cluster.gateway().await?).sign_out(session.request(SignOutRequest {})).await?;
    let err = me(other.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // Revocations are in the cluster, and auth vouches for the view there.
    let keys: Vec<String> = redis.keys_per_node()?.into_iter().flatten().collect();
    assert!(keys.iter().any(|k| k.starts_with("ts:{revocations}:session:")), "revocation published: {keys:?}");
    ts_testkit::eventually("auth vouches for the revocation view in the cluster", || async {
        let keys: Vec<String> = redis.keys_per_node()?.into_iter().flatten().collect();
        Ok(keys.iter().any(|k| k == ts_contract::revocation::FRESH_KEY).then_some(()))
    })
    .await?;
    no_cross_slot(redis)?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_holds_at_once_on_another_folders_replica_on_a_redis_cluster() -> anyhow::Result<()> {
    let (cluster, redis) = on_cluster(|_| {}).await?;
    let replica = cluster.folders_replica().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let bob = cluster.sign_in("bob@example.com").await?;
    let gateway = cluster.gateway().await?;
    let folder_id = Folders::new(&gateway, &alice).create("Shared").await?;
    cluster.add_member(&folder_id, &bob, AccessLevel::Edit).await?;

    let mut on_replica = ItemServiceClient::new(replica.channel.clone());
    let list = || as_gateway(&bob, ListItemsRequest { folder_id: folder_id.clone(), page: None });
    on_replica.list_items(list()).await?;
    on_replica.list_items(list()).await?;
    let keys: Vec<String> = redis.keys_per_node()?.into_iter().flatten().collect();
    assert!(keys.contains(&format!("ts:{{f:{folder_id}}}:gen")), "the folder's generation is in the cluster");

    // Removed through the gateway's replica: the other replica refuses the very next request.
    let mut members = MemberServiceClient::new(gateway.clone());
    members
        .remove_member(
            alice.request(RemoveMemberRequest { folder_id: folder_id.clone(), user_id: bob.user_id.clone() }),
        )
        .await?;
    assert_eq!(on_replica.list_items(list()).await.unwrap_err().code(), Code::NotFound);

    // Over many folders, generations spread over the nodes (the cluster is really sharded).
    let mut items = ItemServiceClient::new(gateway.clone());
    for i in 0..12 {
        let id = Folders::new(&gateway, &alice).create(&format!("F{i}")).await?;
        items.list_items(alice.request(ListItemsRequest { folder_id: id, page: None })).await?;
    }
    let per_node = redis.keys_per_node()?;
    let holding = per_node.iter().filter(|keys| keys.iter().any(|k| k.starts_with("ts:{f:"))).count();
    assert!(holding >= 2, "folder generations on {holding} of {} nodes", per_node.len());
    no_cross_slot(redis)?;
    drop(replica);
    cluster.stop().await
}
