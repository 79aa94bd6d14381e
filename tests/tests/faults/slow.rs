//! A dependency that hangs or crawls (a proxy that holds or delays every byte): every call
//! still returns within its deadline, nothing hangs, and once the dependency is well again
//! the services' tasks, file descriptors and connections come back to where they were.

use std::time::{Duration, Instant};

use teamshare::Service;
use tonic::Code;

use crate::support::{Fixture, Team, assert_no_unexpected, timed, until_ok};

/// Tasks alive in each service, as it last exported them.
fn tasks(counters: &ts_testkit::otlp::Counters) -> Vec<(Service, f64)> {
    Service::ALL
        .iter()
        .map(|s| (*s, counters.gauge(s.name(), "runtime.tokio.alive_tasks").unwrap_or(f64::NAN)))
        .collect()
}

/// Open file descriptors of each service process.
fn descriptors(fx: &Fixture) -> Vec<(Service, usize)> {
    Service::ALL
        .iter()
        .map(|s| {
            let pid = fx.stack.service(*s).ok().and_then(|p| p.server_pid());
            let open = pid.and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok()).map_or(0, |d| d.count());
            (*s, open)
        })
        .collect()
}

/// Waits until every service's tasks and descriptors are back within `slack` of `base`, or
/// fails naming what stayed up.
async fn back_to_baseline(
    fx: &Fixture,
    counters: &ts_testkit::otlp::Counters,
    base_tasks: &[(Service, f64)],
    base_fds: &[(Service, usize)],
) -> anyhow::Result<()> {
    const TASK_SLACK: f64 = 20.0;
    const FD_SLACK: usize = 12;
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (now_tasks, now_fds) = (tasks(counters), descriptors(fx));
        let high: Vec<String> = base_tasks
            .iter()
            .zip(&now_tasks)
            .filter(|((_, b), (_, n))| n.is_nan() || *n > b + TASK_SLACK)
            .map(|((s, b), (_, n))| format!("{}: {b} tasks before, {n} now", s.name()))
            .chain(
                base_fds
                    .iter()
                    .zip(&now_fds)
                    .filter(|((_, b), (_, n))| *n > b + FD_SLACK)
                    .map(|((s, b), (_, n))| format!("{}: {b} descriptors before, {n} now", s.name())),
            )
            .collect();
        if high.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not released 25 s after the dependency recovered: {high:?}");
    }
}

/// Stalls MongoDB while a burst of writes is sent: each is refused within the deadline;
/// then lifts the stall and waits until writes land again.
async fn stall_mongo_once(team: &Team, mongo: &ts_testkit::FaultProxy) -> anyhow::Result<()> {
    mongo.set_stall(true);
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..12 {
        let (gateway, bob, folder_id) = (team.gateway.clone(), team.bob.clone(), team.folder_id.clone());
        calls.spawn(async move {
            let (result, took) = timed("a write while MongoDB hangs", async {
                ts_testkit::Items::new(&gateway, &bob)
                    .create(&folder_id, &format!("stalled {n}"), ts_testkit::query_content("{}"))
                    .await
            })
            .await;
            (result.map(drop), took)
        });
    }
    while let Some(joined) = calls.join_next().await {
        let (result, took) = joined?;
        let status = result.expect_err("no write lands while MongoDB hangs");
        assert!(
            matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded),
            "a write while MongoDB hangs answered {status:?} after {took:?}"
        );
    }
    mongo.set_stall(false);
    until_ok(Duration::from_secs(20), || team.create_item(&team.bob, "MongoDB answers again")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_or_slow_dependency_fires_deadlines_and_releases_tasks_and_connections() -> anyhow::Result<()> {
    let (otlp, counters) = ts_testkit::otlp::start().await?;
    let fx = Fixture::start_with(|o| {
        o.otlp = Some(otlp);
        o.export_interval = Duration::from_millis(500);
    })
    .await?;
    let team = Team::start(&fx.stack).await?;
    assert_no_unexpected(&fx.phase(60).await?, "before the fault");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (base_tasks, base_fds) = (tasks(&counters), descriptors(&fx));
    assert!(
        base_tasks.iter().all(|(_, t)| t.is_finite() && *t > 0.0),
        "every service exports its tasks: {base_tasks:?}"
    );
    let mongo = fx.stack.mongo_proxy().expect("fault proxies");
    let mongo_connections = mongo.open_connections();

    // MongoDB hangs, twice: each time a burst of writes answers within the deadline, and
    // the second time opens no more connections to MongoDB than the first left open (the
    // drivers' pools are bounded; nothing leaks per stalled request).
    stall_mongo_once(&team, mongo).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_first = mongo.open_connections();
    stall_mongo_once(&team, mongo).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_second = mongo.open_connections();
    assert!(
        after_second <= after_first + 2,
        "MongoDB connections: {mongo_connections} before, {after_first} after one stall, {after_second} after two"
    );

    // KMS crawls (each byte 7 s late): a new folder is refused within the deadline.
    let kms = fx.stack.kms_proxy().expect("fault proxies");
    kms.set_delay(Duration::from_secs(7));
    let (made, _) = timed("CreateFolder while KMS crawls", team.create_folder(&team.alice, "Slow key")).await;
    assert_eq!(made.expect_err("no key in time").code(), Code::Unavailable);
    kms.set_delay(Duration::ZERO);

    // Redis hangs: requests still succeed (Redis is a cache and a limiter, not a store), in time.
    let redis = fx.stack.redis_proxy().expect("fault proxies");
    redis.set_stall(true);
    for n in 0..3 {
        let (read, _) = timed("a read while Redis hangs", team.get_item(&team.carol)).await;
        read?;
        let (wrote, _) =
            timed("a write while Redis hangs", team.create_item(&team.bob, &format!("redis hung {n}"))).await;
        wrote?;
    }
    redis.set_stall(false);

    let after = fx.phase(60).await?;
    assert_no_unexpected(&after, "after the dependencies recovered");
    back_to_baseline(&fx, &counters, &base_tasks, &base_fds).await?;
    fx.audit().await
}
