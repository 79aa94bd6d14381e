//! Calls between services spread over every replica of the callee, and a replica that goes
//! away (stopped gracefully, or its address cut off like a killed pod) costs no failed call:
//! what never reached it is sent to another.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::*;
use ts_testkit::{CountingProxy, Items, Session, TestCluster, query_content};

/// One round of the real mix through the gateway: a listing and a write, both of which
/// folders serves.
async fn one_round(gateway: &tonic::transport::Channel, alice: &Session, folder_id: &str, n: u64) -> Result<(), tonic::Status> {
    let mut folders = FolderServiceClient::new(gateway.clone());
    folders.list_folders(alice.request(ListFoldersRequest { page: None })).await?;
    Items::new(gateway, alice).create(folder_id, &format!("query {n}"), query_content("{}")).await?;
    Ok(())
}

/// Calls in a loop until told to stop; returns how many were made and every failure.
fn load(
    gateway: tonic::transport::Channel,
    alice: Session,
    folder_id: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<tonic::Status>)> {
    tokio::spawn(async move {
        let (mut n, mut failures) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) {
            if let Err(s) = one_round(&gateway, &alice, &folder_id, n).await {
                failures.push(s);
            }
            n += 1;
        }
        (n, failures)
    })
}

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
