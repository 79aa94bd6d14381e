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
