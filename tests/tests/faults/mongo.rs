//! The MongoDB-compatible server killed and started again (on disk, syncing each commit):
//! requests fail with UNAVAILABLE and a retry hint while it is down, promptly, and recover
//! without restarting any service; every acknowledged write survives.

use std::time::Duration;

use crate::support::{Fixture, Team, assert_no_unexpected, assert_unavailable_with_hint, timed, until_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_restarted_under_load_is_unavailable_then_recovers_with_every_acknowledged_write() -> anyhow::Result<()>
{
    let mut fx = Fixture::start().await?;
    let team = Team::start(&fx.stack).await?;
    assert_no_unexpected(&fx.phase(60).await?, "before the fault");

    let load = fx.load();
    tokio::time::sleep(Duration::from_millis(500)).await;
    fx.stack.stop_mongo().await?;
    let (written, _) = timed("CreateItem with MongoDB down", team.create_item(&team.bob, "while down")).await;
    let refused = written.expect_err("nothing can be written while MongoDB is down");
    assert_unavailable_with_hint(&refused, "CreateItem with MongoDB down");

    fx.stack.start_mongo().await?;
    until_ok(Duration::from_secs(30), || team.create_item(&team.bob, "after the restart"))
        .await
        .map_err(|s| anyhow::anyhow!("writes did not recover after MongoDB came back: {s:?}"))?;
    let after = fx.phase(60).await?;
    assert_no_unexpected(&after, "after MongoDB came back");
    assert_eq!(after.gave_up, 0, "{}", after.report());
    let background = load.finish().await?;
    assert!(background.unexpected.is_empty(), "unexpected answers in the background:\n{}", background.report());
    fx.audit().await
}
