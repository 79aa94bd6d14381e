//! Helpers the end-to-end modules share.

use tonic::transport::Channel;
use ts_proto::public::CreateFolderRequest;
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_testkit::{Session, TestCluster};

/// A new folder of `s`'s, created through the gateway; its id.
pub async fn new_folder(ch: &Channel, s: &Session, name: &str) -> anyhow::Result<String> {
    Ok(FolderServiceClient::new(ch.clone())
        .create_folder(s.request(CreateFolderRequest { name: name.into() }))
        .await?
        .into_inner()
        .folder
        .expect("folder")
        .id)
}

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
