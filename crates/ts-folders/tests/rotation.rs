//! Data-key rotation of a folder's items, end to end: keyvault on moto, items in the
//! MongoDB-compatible server, the operator driving the pass over mTLS.

use bson::{Document, doc};
use futures::TryStreamExt;
use teamshare::Service;
use tonic::Code;
use ts_contract::identity::Peer;
use ts_crypto::CacheLimits;
use ts_folders::keys::FolderKeys;
use ts_folders::sealed::{key_version, open_field, seal_fields};
use ts_proto::internal::folder_key_operator_service_client::FolderKeyOperatorServiceClient;
use ts_proto::internal::key_vault_service_client::KeyVaultServiceClient;
use ts_proto::internal::{GetDataKeyRequest, ReencryptFolderRequest, RotateFolderKeyRequest};
use ts_testkit::TestCluster;

const FOLDER: &str = "5d1f8f0e-2c4b-4d8e-a1b2-c3d4e5f60718";

async fn write_item(
    items: &mongodb::Collection<Document>,
    keys: &FolderKeys,
    id: &str,
    name: &str,
) -> anyhow::Result<()> {
    let key = keys.newest(FOLDER).await?;
    let enc = seal_fields(
        &key,
        FOLDER,
        id,
        &[("name", name.as_bytes()), ("content", format!("db.{name}.find()").as_bytes())],
    )?;
    items
        .insert_one(doc! { "_id": id, "folder_id": FOLDER, "kind": "query", "version": 1_i64, "key_version": i64::from(key.version()), "enc": enc })
        .await?;
    Ok(())
}

async fn read_all(
    items: &mongodb::Collection<Document>,
    keys: &FolderKeys,
) -> anyhow::Result<Vec<(String, u32, String)>> {
    let docs: Vec<Document> =
        items.find(doc! { "folder_id": FOLDER }).sort(doc! { "_id": 1 }).await?.try_collect().await?;
    let mut out = Vec::new();
    for d in docs {
        let id = d.get_str("_id")?.to_owned();
        let v = key_version(&d).expect("key version");
        let key = keys.version(FOLDER, v).await?;
        let name = open_field(&key, FOLDER, &id, d.get_document("enc")?, "name")?;
        out.push((id, v, String::from_utf8(name.to_vec())?));
    }
    Ok(out)
}

#[tokio::test]
async fn items_written_before_and_after_rotation_read_back_and_the_pass_retires_old_versions() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let items = cluster.database().await?.collection::<Document>("items");
    let channel = cluster.internal_channel(Service::Keyvault, Peer::Folders)?;
    let keys = FolderKeys::new(KeyVaultServiceClient::new(channel.clone()), CacheLimits::default());
    keys.create(FOLDER).await?;

    write_item(&items, &keys, "a", "orders").await?;
    write_item(&items, &keys, "b", "users").await?;
    assert_eq!(keys.rotate(FOLDER).await?, 2);
    write_item(&items, &keys, "c", "invoices").await?;

    let before = read_all(&items, &keys).await?;
    let versions: Vec<u32> = before.iter().map(|(_, v, _)| *v).collect();
    assert_eq!(versions, [1, 1, 2], "new writes use the new version, old items keep theirs");
    let names: Vec<&str> = before.iter().map(|(_, _, n)| n.as_str()).collect();
    assert_eq!(names, ["orders", "users", "invoices"]);

    let mut operator = FolderKeyOperatorServiceClient::new(cluster.internal(Service::Folders, Peer::Operator).await?);
    let report = operator.reencrypt_folder(ReencryptFolderRequest { folder_id: FOLDER.into() }).await?.into_inner();
    assert_eq!((report.key_version, report.reencrypted_items, report.retired_versions), (2, 2, 1));

    let stale = items.count_documents(doc! { "folder_id": FOLDER, "key_version": { "$lt": 2_i64 } }).await?;
    assert_eq!(stale, 0, "no item references the old version");
    let after = read_all(&items, &keys).await?;
    assert_eq!(after.iter().map(|(_, _, n)| n.as_str()).collect::<Vec<_>>(), names, "contents unchanged");
    let mut kv = KeyVaultServiceClient::new(channel);
    let err = kv.get_data_key(GetDataKeyRequest { folder_id: FOLDER.into(), version: 1 }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the old version is gone");

    // Rotate-and-re-encrypt in one call; running the pass again is a no-op.
    let report = operator.rotate_folder_key(RotateFolderKeyRequest { folder_id: FOLDER.into() }).await?.into_inner();
    assert_eq!((report.key_version, report.reencrypted_items, report.retired_versions), (3, 3, 1));
    let again = operator.reencrypt_folder(ReencryptFolderRequest { folder_id: FOLDER.into() }).await?.into_inner();
    assert_eq!((again.key_version, again.reencrypted_items, again.retired_versions), (3, 0, 0));
    let fresh = FolderKeys::new(
        KeyVaultServiceClient::new(cluster.internal_channel(Service::Keyvault, Peer::Folders)?),
        CacheLimits::default(),
    );
    assert!(read_all(&items, &fresh).await?.iter().all(|(_, v, _)| *v == 3));
    cluster.stop().await
}

#[tokio::test]
async fn only_the_operator_drives_rotation() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    for peer in [Peer::Gateway, Peer::Invitations, Peer::Keyvault] {
        let mut client = FolderKeyOperatorServiceClient::new(cluster.internal(Service::Folders, peer).await?);
        let err = client.rotate_folder_key(RotateFolderKeyRequest { folder_id: FOLDER.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{peer}");
    }
    let mut operator = FolderKeyOperatorServiceClient::new(cluster.internal(Service::Folders, Peer::Operator).await?);
    let unknown = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9".to_owned();
    let err = operator.rotate_folder_key(RotateFolderKeyRequest { folder_id: unknown }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err =
        operator.rotate_folder_key(RotateFolderKeyRequest { folder_id: "no-such-folder".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a malformed id is not looked up");
    cluster.stop().await
}
