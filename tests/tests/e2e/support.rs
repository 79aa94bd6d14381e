//! Helpers the end-to-end modules share.

use ts_testkit::TestCluster;

/// An invitation's state as MongoDB has it.
pub async fn state_of(cluster: &TestCluster, invitation_id: &str) -> anyhow::Result<String> {
    let db = cluster.database().await?;
    let stored = db
        .collection::<bson::Document>("invitations")
        .find_one(bson::doc! { "_id": invitation_id })
        .await?
        .ok_or_else(|| anyhow::anyhow!("invitation {invitation_id} is gone"))?;
    Ok(stored.get_str("state")?.to_owned())
}

/// What an operator who edits auth's documents by hand must do next, as tests that do so
/// do: drop the sharing epoch from Redis, so that every service asks auth again instead of
/// serving the answers it keeps (README, "Editing stored documents by hand").
pub fn forget_sharing_answers() -> anyhow::Result<()> {
    let port = ts_testkit::shared()?.redis.port.to_string();
    let key = ts_contract::revocation::SHARING_EPOCH_KEY;
    let out = std::process::Command::new("redis-cli").args(["-p", &port, "DEL", key]).output()?;
    anyhow::ensure!(out.status.success(), "redis-cli DEL {key} failed");
    Ok(())
}
