//! Revocations that auth acknowledged take effect at every gateway within 2 seconds,
//! whatever Redis did at that moment (issue 9, item 7).

use std::process::Command;
use std::time::{Duration, Instant};

use tonic::Code;
use ts_config::RedisConfig;
use ts_proto::public::auth_service_client::AuthServiceClient;
use ts_proto::public::{GetMeRequest, SignOutRequest};
use ts_testkit::{ServerProcess, TestCluster, bearer};

/// The promise: an acknowledged revocation is honoured everywhere within this.
const PROMISE: Duration = Duration::from_secs(2);

async fn me(cluster: &TestCluster, addr: std::net::SocketAddr, token: &str) -> Result<(), tonic::Status> {
    let mut auth = AuthServiceClient::new(cluster.gateway_at(addr).await.expect("gateway"));
    auth.get_me(bearer(token, GetMeRequest {})).await.map(|_| ())
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Polls every 50 ms, for at most 5 s, until `token` is refused at `addr`; returns how long
/// that took, or `None` if it was still accepted after 5 s.
async fn time_until_refused(cluster: &TestCluster, addr: std::net::SocketAddr, token: &str) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match me(cluster, addr, token).await {
            Err(s) if s.code() == Code::Unauthenticated => return Some(start.elapsed()),
            Err(s) => panic!("unexpected refusal: {s:?}"),
            Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_takes_effect_within_two_seconds_while_redis_rejects_writes() -> anyhow::Result<()> {
    // A Redis of our own, so that breaking it breaks no other test.
    let redis = tokio::task::spawn_blocking(ServerProcess::redis).await??;
    let port = redis.port;
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    let (second, _stop_second) = cluster.extra_gateway().await?;
    let gateways = [cluster.addr(teamshare::Service::Gateway), second];
    let session = cluster.sign_in("ruth@example.com").await?;
    for g in gateways {
        me(&cluster, g, &session.access).await?;
    }

    // Redis keeps answering reads but rejects every write (OOM under noeviction).
    redis_cli(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis_cli(port, &["CONFIG", "SET", "maxmemory", "1"]);
    assert!(redis_cli(port, &["SET", "probe", "1"]).contains("OOM"), "redis must reject writes now");

    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    for g in gateways {
        let took = time_until_refused(&cluster, g, &session.access).await;
        assert!(took.is_some_and(|t| t <= PROMISE), "gateway {g}: a signed-out token was accepted for {took:?}");
    }

    // Once Redis takes writes again, auth's outbox publishes the revocation there.
    redis_cli(port, &["CONFIG", "SET", "maxmemory", "0"]);
    let start = Instant::now();
    let published = loop {
        let keys = redis_cli(port, &["--scan", "--pattern", "*:session:*"]);
        if !keys.is_empty() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(published, "the revocation reached redis after it recovered");
    for g in gateways {
        assert_eq!(me(&cluster, g, &session.access).await.unwrap_err().code(), Code::Unauthenticated);
    }
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_takes_effect_while_redis_is_down() -> anyhow::Result<()> {
    let mut redis = tokio::task::spawn_blocking(ServerProcess::redis).await??;
    let port = redis.port;
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    let session = cluster.sign_in("sam@example.com").await?;
    let gateway = cluster.addr(teamshare::Service::Gateway);
    me(&cluster, gateway, &session.access).await?;
    tokio::task::spawn_blocking(move || {
        redis.stop();
        redis
    })
    .await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    let took = time_until_refused(&cluster, gateway, &session.access).await;
    assert!(took.is_some_and(|t| t <= PROMISE), "a signed-out token was accepted for {took:?}");
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_survives_redis_losing_its_data() -> anyhow::Result<()> {
    let redis = tokio::task::spawn_blocking(ServerProcess::redis).await??;
    let port = redis.port;
    let cluster = TestCluster::start_with(|c| {
        c.redis = Some(RedisConfig { url: format!("redis://127.0.0.1:{port}").into() });
    })
    .await?;
    let gateway = cluster.addr(teamshare::Service::Gateway);
    let session = cluster.sign_in("una@example.com").await?;
    let mut auth = AuthServiceClient::new(cluster.gateway().await?);
    auth.sign_out(session.request(SignOutRequest {})).await?;
    let took = time_until_refused(&cluster, gateway, &session.access).await;
    assert!(took.is_some_and(|t| t <= PROMISE), "a signed-out token was accepted for {took:?}");
    // Past the promise (a "live" answer a gateway had from auth before the sign-out may
    // count for up to a second), Redis loses everything: a restart without persistence, a
    // failover to an empty replica.
    tokio::time::sleep(PROMISE).await;
    assert_eq!(redis_cli(port, &["FLUSHALL"]), "OK");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let r = me(&cluster, gateway, &session.access).await;
        assert_eq!(
            r.map_err(|s| s.code()),
            Err(Code::Unauthenticated),
            "a revoked session came back after Redis lost its data ({:?} later)",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!redis_cli(port, &["--scan", "--pattern", "*:session:*"]).is_empty(), "auth published it again");
    cluster.stop().await
}
