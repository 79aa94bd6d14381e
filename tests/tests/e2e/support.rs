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

/// One round of the real mix through a gateway: a listing and a write, both of which folders
/// serves (and, cold, asks auth and keyvault about).
pub async fn one_round(
    gateway: &tonic::transport::Channel,
    user: &ts_testkit::Session,
    folder_id: &str,
    n: u64,
) -> Result<(), tonic::Status> {
    use ts_proto::public::folder_service_client::FolderServiceClient;
    let mut folders = FolderServiceClient::new(gateway.clone());
    folders.list_folders(user.request(ts_proto::public::ListFoldersRequest { page: None })).await?;
    let content = ts_testkit::query_content("{}");
    ts_testkit::Items::new(gateway, user).create(folder_id, &format!("query {n}"), content).await?;
    Ok(())
}

/// Rounds in a loop until `stop`; returns how many ran and every failure. A failure of the
/// test's own connection to the gateway (no `ErrorInfo`: the gateway gives every answer of
/// its own a reason) is tried once more, as any client would; what the services answer is
/// never retried.
pub fn load(
    gateway: tonic::transport::Channel,
    user: ts_testkit::Session,
    folder_id: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(u64, Vec<tonic::Status>)> {
    tokio::spawn(async move {
        let (mut n, mut failures) = (0, Vec::new());
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let mut result = one_round(&gateway, &user, &folder_id, n).await;
            if let Err(s) = &result
                && ts_contract::status::reason_of(s).is_none()
            {
                result = one_round(&gateway, &user, &folder_id, n).await;
            }
            if let Err(s) = result {
                failures.push(s);
            }
            n += 1;
        }
        (n, failures)
    })
}
