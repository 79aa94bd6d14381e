//! Calls between services spread over every replica of the callee, and a replica that goes
//! away (stopped gracefully, or its address cut off like a killed pod) costs no failed call:
//! what never reached it is sent to another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use ts_testkit::{CountingProxy, TestCluster};

use crate::support::{load, one_round};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_folders_replicas_both_serve_and_one_going_away_fails_no_call() -> anyhow::Result<()> {
    // Two replica addresses behind proxies (as pod IPs behind a headless Service), named
    // through DNS (`localhost`), so that resolution is the real path.
    let (p1, p2) = (CountingProxy::start().await?, CountingProxy::start().await?);
    let urls = format!("https://localhost:{},https://localhost:{}", p1.addr.port(), p2.addr.port());
    let cluster = TestCluster::start_with(|c| {
        c.upstreams.folders = Some(ts_config::Upstream { url: urls.clone(), server_name: Some("folders".into()) });
    })
    .await?;
    p1.point_to(cluster.addr(teamshare::Service::Folders));
    let replica = cluster.folders_replica_on(TcpListener::bind("127.0.0.1:0").await?).await?;
    p2.point_to(replica.addr);

    let gateway = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = ts_testkit::Folders::new(&gateway, &alice).create("Spread").await?;

    // Both replicas serve: each carries a share of 40 rounds.
    let (before1, before2) = (p1.upstream_bytes(), p2.upstream_bytes());
    for n in 0..40 {
        one_round(&gateway, &alice, &folder_id, n).await?;
    }
    let (share1, share2) = (p1.upstream_bytes() - before1, p2.upstream_bytes() - before2);
    assert!(share1 > 2_000 && share2 > 2_000, "both replicas serve: {share1} and {share2} bytes of requests");
    let ratio = share1.max(share2) as f64 / share1.min(share2) as f64;
    assert!(ratio < 3.0, "calls spread round-robin: {share1} vs {share2} bytes");

    // Replica 2 stops gracefully under load: no call fails.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(gateway.clone(), alice.clone(), folder_id.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(replica);
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let (calls, failures) = running.await?;
    assert!(calls > 5, "the load ran ({calls} rounds)");
    assert!(failures.is_empty(), "a graceful stop failed calls: {failures:?}");

    // Everything goes to replica 1 now; with nothing listening behind proxy 2, calls that try
    // it are sent on.
    let after = p1.upstream_bytes();
    for n in 100..110 {
        one_round(&gateway, &alice, &folder_id, n).await?;
    }
    assert!(p1.upstream_bytes() > after, "replica 1 took over");

    // A replica back behind proxy 2 is used again, then its address is cut off at once (a
    // killed pod): the calls after it go to replica 1 without a failure.
    let replica = cluster.folders_replica_on(TcpListener::bind("127.0.0.1:0").await?).await?;
    p2.point_to(replica.addr);
    let seen = p2.upstream_bytes();
    ts_testkit::eventually("replica 2 serves again", || {
        let (gateway, alice, folder_id) = (gateway.clone(), alice.clone(), folder_id.clone());
        let p2 = &p2;
        async move {
            one_round(&gateway, &alice, &folder_id, 200).await?;
            Ok((p2.upstream_bytes() > seen + 2_000).then_some(()))
        }
    })
    .await?;
    p2.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let failed = AtomicU64::new(0);
    for n in 300..330 {
        if let Err(s) = one_round(&gateway, &alice, &folder_id, n).await {
            failed.fetch_add(1, Ordering::SeqCst);
            eprintln!("failed after the cut: {s:?}");
        }
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "calls after a replica vanished failed");
    drop(replica);
    cluster.stop().await
}

/// Servers close connections at their maximum age (GOAWAY), so that callers connect again and
/// spread over the replicas there are now; under load, that costs no call.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_are_recycled_at_their_maximum_age_and_no_call_fails() -> anyhow::Result<()> {
    let p1 = CountingProxy::start().await?;
    let urls = format!("https://localhost:{}", p1.addr.port());
    let cluster = TestCluster::start_with(|c| {
        c.max_connection_age_secs = Some(1);
        c.upstreams.folders = Some(ts_config::Upstream { url: urls.clone(), server_name: Some("folders".into()) });
    })
    .await?;
    p1.point_to(cluster.addr(teamshare::Service::Folders));
    let gateway = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = ts_testkit::Folders::new(&gateway, &alice).create("Spread").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(gateway.clone(), alice.clone(), folder_id.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::SeqCst);
    let (calls, failures) = running.await?;
    assert!(calls > 10, "the load ran ({calls} rounds)");
    assert!(failures.is_empty(), "calls failed when connections aged out: {failures:?}");
    // 4 s at 1 s each: the gateway connected again and again (the count is at least 3 even
    // on a slow machine; without a maximum age it stays 1).
    assert!(p1.connections() >= 3, "connections recycled: {}", p1.connections());
    cluster.stop().await
}
