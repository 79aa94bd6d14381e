//! KeyVaultService over mTLS, as the folders service calls it, in a full TestCluster.

use teamshare::Service;
use tonic::Code;
use ts_config::{Config, KmsConfig, KmsProvider};
use ts_contract::identity::Peer;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::*;
use ts_testkit::TestCluster;

#[tokio::test]
async fn folders_creates_fetches_rotates_and_destroys_keys() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut kv = KeyVaultServiceClient::new(cluster.internal(Service::Keyvault, Peer::Folders).await?);
    let folder_id = "0b9e6c1e-4d0c-4a53-9f8e-2f4a1c7d9b10".to_owned();

    let created = kv.create_data_key(CreateDataKeyRequest { folder_id: folder_id.clone() }).await?.into_inner();
    assert_eq!(created.version, 1);
    let k1 = kv.get_data_key(GetDataKeyRequest { folder_id: folder_id.clone(), version: 0 }).await?.into_inner();
    assert_eq!((k1.version, k1.key.len()), (1, 32));
    assert!(!format!("{k1:?}").contains(&format!("{:?}", k1.key)), "Debug must redact key bytes");

    let rotated = kv.rotate_data_key(RotateDataKeyRequest { folder_id: folder_id.clone() }).await?.into_inner();
    assert_eq!(rotated.version, 2);
    let newest = kv.get_data_key(GetDataKeyRequest { folder_id: folder_id.clone(), version: 0 }).await?.into_inner();
    assert_eq!(newest.version, 2);
    let old = kv.get_data_key(GetDataKeyRequest { folder_id: folder_id.clone(), version: 1 }).await?.into_inner();
    assert_eq!(old.key, k1.key);

    let destroyed = kv.destroy_data_keys(DestroyDataKeysRequest { folder_id: folder_id.clone() }).await?.into_inner();
    assert_eq!(destroyed.destroyed, 2);
    let err = kv.get_data_key(GetDataKeyRequest { folder_id, version: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    cluster.stop().await
}

#[tokio::test]
async fn bad_requests_name_the_field() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let mut kv = KeyVaultServiceClient::new(cluster.internal(Service::Keyvault, Peer::Folders).await?);
    let err = kv.create_data_key(CreateDataKeyRequest { folder_id: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("folder_id"));
    let err = kv.get_data_key(GetDataKeyRequest { folder_id: "a/b".into(), version: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = kv.get_data_key(GetDataKeyRequest { folder_id: "never-created".into(), version: 0 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = kv.rotate_data_key(RotateDataKeyRequest { folder_id: "never-created".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    cluster.stop().await
}

#[tokio::test]
async fn the_local_provider_is_refused_in_production() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = dir.path().join("master.key");
    std::fs::write(&key, [1u8; 32])?;
    let mut config = Config {
        production: true,
        kms: Some(KmsConfig {
            provider: KmsProvider::Local,
            key_id: None,
            region: None,
            endpoint: None,
            local_key_file: Some(key.clone()),
            static_credentials: None,
        }),
        ..Config::default()
    };
    let err = ts_keyvault::kms::from_config(&config).await.err().expect("refused").to_string();
    assert!(err.contains("kms.provider") && err.contains("production"), "{err}");
    config.production = false;
    assert!(ts_keyvault::kms::from_config(&config).await.is_ok());
    std::fs::write(&key, [1u8; 31])?;
    let err = ts_keyvault::kms::from_config(&config).await.err().expect("short key").to_string();
    assert!(err.contains("kms.local_key_file") && err.contains("32 bytes"), "{err}");
    Ok(())
}
