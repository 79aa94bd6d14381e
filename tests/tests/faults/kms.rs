//! KMS unreachable: the data keys folders already hold keep serving reads and writes in
//! existing folders; a new folder (which needs a new data key) fails cleanly with
//! UNAVAILABLE and a retry hint; once KMS answers again everything works, nothing restarted.

use std::time::Duration;

use crate::support::{Fixture, Team, assert_no_unexpected, assert_unavailable_with_hint, timed, until_ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_unreachable_cached_keys_serve_and_new_folders_wait_for_it() -> anyhow::Result<()> {
    let fx = Fixture::start().await?;
    let team = Team::start(&fx.stack).await?;
    assert_no_unexpected(&fx.phase(60).await?, "before the fault");

    let load = fx.load();
    let kms = fx.stack.kms_proxy().expect("the stack runs with fault proxies");
    kms.set_down(true);
    // Existing folders: their keys are held, so reads and writes go on.
    for n in 0..5 {
        team.get_item(&team.carol).await?;
        team.list_items(&team.bob).await?;
        team.create_item(&team.bob, &format!("while KMS is away {n}")).await?;
    }
    let during = fx.phase(60).await?;
    assert!(during.unexpected.is_empty(), "unexpected answers while KMS was away:\n{}", during.report());
    // Held keys served: only new folders waited for KMS.
    assert!(during.ok > 0, "nothing succeeded while KMS was away:\n{}", during.report());
    assert!(
        during.gave_up_samples.iter().all(|g| g.starts_with("CreateFolder")),
        "only CreateFolder may wait for KMS:\n{}",
        during.report()
    );
    // A new folder needs a new data key: a clean refusal to retry, promptly.
    let (created, _) = timed("CreateFolder with KMS away", team.create_folder(&team.alice, "Needs a key")).await;
    let refused = created.expect_err("a folder cannot be made without KMS");
    assert_unavailable_with_hint(&refused, "CreateFolder with KMS away");

    kms.set_down(false);
    let made = until_ok(Duration::from_secs(15), || team.create_folder(&team.alice, "Needs a key")).await;
    let folder_id = made.map_err(|s| anyhow::anyhow!("CreateFolder did not recover once KMS was back: {s:?}"))?;
    ts_testkit::Items::new(&team.gateway, &team.alice)
        .create(&folder_id, "In the new folder", ts_testkit::query_content("{}"))
        .await?;
    let after = fx.phase(60).await?;
    assert_no_unexpected(&after, "after KMS came back");
    assert_eq!(after.gave_up, 0, "{}", after.report());
    let background = load.finish().await?;
    assert!(background.unexpected.is_empty(), "unexpected answers in the background:\n{}", background.report());
    fx.audit().await
}
