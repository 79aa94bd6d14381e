//! Crypto-erasure that reaches backups: a deleted folder's wrapped data key also sits in every
//! database backup, where the live master key still opens it. The operator rewraps every data
//! key under a new KMS key, then retires the old one (disabled at once, its deletion scheduled
//! once the backup retention window has passed), so that the deleted folder's key in every
//! backup goes with it. Driven through keyvault's operator RPCs and through
//! `teamshare-cli operator master-key`, and checked against the test KMS (moto).
//!
//! What moto does not model: moto 5.2.5's Decrypt never looks at a key's state
//! (`moto/kms/models.py`, `KmsBackend.decrypt`), so a Disabled or PendingDeletion key still
//! opens a backup's copy there. AWS KMS refuses it (DisabledException, then
//! KMSInvalidStateException, then the key is gone). These tests therefore assert the key's
//! state in KMS, and that the backup's copy names the old key, and accept either answer from
//! Decrypt: moto's, or AWS's refusal.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use futures::TryStreamExt;
use serde_json::{Value, json};
use teamshare::Service;
use tonic::Code;
use ts_contract::clock::{Clock, unix_secs};
use ts_contract::identity::Peer;
use ts_proto::internal::key_vault_operator_service_client::KeyVaultOperatorServiceClient;
use ts_proto::internal::{
    GetMasterKeyStatusRequest, GetMasterKeyStatusResponse, MasterKeyRetirementStep, RetireMasterKeyRequest,
    RewrapAllRequest,
};
use ts_proto::public::folder_service_client::FolderServiceClient;
use ts_proto::public::item_service_client::ItemServiceClient;
use ts_proto::public::{DeleteFolderRequest, GetItemRequest};
use ts_testkit::{TestCluster, assert_code, query_content};

use crate::cli::cli_path;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A KMS key's ARN, through `describe` (a closure over the test KMS client's DescribeKey).
macro_rules! arn_of {
    ($describe:ident, $key:expr) => {
        $describe($key).await?.key_metadata().and_then(|m| m.arn()).map(str::to_owned).context("DescribeKey: no ARN")?
    };
}

/// A KMS key's state as KMS spells it (`Enabled`, `Disabled`, `PendingDeletion`).
macro_rules! key_state {
    ($describe:ident, $key:expr) => {
        $describe($key)
            .await?
            .key_metadata()
            .and_then(|m| m.key_state())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default()
    };
}

/// The cluster's own KMS key: the one its keyvault is configured with.
fn configured_key(cluster: &TestCluster) -> anyhow::Result<String> {
    cluster.config.kms.as_ref().and_then(|k| k.key_id.clone()).context("the cluster's KMS key")
}

/// Stored data keys by the KMS key that wraps them, as keyvault reports them.
fn wrapped(status: &GetMasterKeyStatusResponse) -> Vec<(String, u64)> {
    status.wrapped_data_keys.iter().map(|w| (w.kms_key_id.clone(), w.data_keys)).collect()
}

fn retire(old: &str, backup_retention_days: u32) -> RetireMasterKeyRequest {
    RetireMasterKeyRequest { old_kms_key_id: old.into(), backup_retention_days, deletion_pending_days: 7 }
}

#[tokio::test]
async fn retiring_the_old_master_key_disables_it_then_schedules_its_deletion_after_the_backup_window()
-> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let servers = tokio::task::spawn_blocking(ts_testkit::shared).await??;
    let kms = ts_testkit::kms_client(servers.kms.port);
    let describe = |key: &str| kms.describe_key().key_id(key).send();
    let old_key = configured_key(&cluster)?;
    let old_arn = arn_of!(describe, old_key.as_str());

    // Folders that stay, each with an item, and one that is deleted.
    let alice = cluster.sign_in("alice@example.com").await?;
    let mut kept = Vec::new();
    for name in ["Reporting", "Billing", "Operations"] {
        let folder_id = cluster.folders(&alice).await?.create(name).await?;
        let created = cluster.items(&alice).await?.create(&folder_id, "Orders", query_content("{}")).await?;
        let item_id = created.item.and_then(|i| i.summary).map(|s| s.id).context("the created item")?;
        kept.push((folder_id, item_id));
    }
    let doomed = cluster.folders(&alice).await?.create("Doomed").await?;
    cluster.items(&alice).await?.create(&doomed, "Secret plans", query_content(r#"{"plan": 1}"#)).await?;

    // Last night's backup holds the doomed folder's wrapped data key.
    let db = cluster.database().await?;
    let data_keys = db.collection::<bson::Document>("data_keys");
    let backup: Vec<bson::Document> = data_keys.find(bson::doc! { "folder_id": &doomed }).await?.try_collect().await?;
    let stored = backup.first().context("the doomed folder has a data key")?;
    let blob = match stored.get("wrapped") {
        Some(bson::Bson::Binary(b)) => b.bytes.clone(),
        other => anyhow::bail!("wrapped is {other:?}"),
    };
    let version = stored.get_i64("version")?.to_string();
    let decrypt_backup = || {
        kms.decrypt()
            .ciphertext_blob(blob.clone().into())
            .encryption_context("folder_id", doomed.clone())
            .encryption_context("key_version", version.clone())
            .send()
    };

    // Deleting the folder destroys its keys in the store, but the backup's copy still opens
    // while the master key that wrapped it lives: the gap this procedure closes.
    let mut folders = FolderServiceClient::new(cluster.gateway().await?);
    folders.delete_folder(alice.request(DeleteFolderRequest { folder_id: doomed.clone() })).await?;
    assert_eq!(data_keys.count_documents(bson::doc! { "folder_id": &doomed }).await?, 0, "keys destroyed");
    let opened = decrypt_backup().await?;
    assert_eq!(opened.key_id(), Some(old_arn.as_str()), "the backup's copy is wrapped under the old master key");
    assert_eq!(opened.plaintext().map(|p| p.clone().into_inner().len()), Some(32), "it opens");

    let total = data_keys.count_documents(bson::doc! {}).await?;
    assert!(total >= 3, "{total} data keys");
    let mut op = KeyVaultOperatorServiceClient::new(cluster.internal(Service::Keyvault, Peer::Operator).await?);
    let status = op.get_master_key_status(GetMasterKeyStatusRequest {}).await?.into_inner();
    assert_eq!(
        (status.current_kms_key_id.as_str(), status.configured_kms_key_id.as_str()),
        (old_arn.as_str(), old_key.as_str())
    );
    assert_eq!(wrapped(&status), vec![(old_arn.clone(), total)]);
    assert!(status.retirements.is_empty());

    // The key new data keys are made under is never retired; nor are bad windows accepted.
    let refused = assert_code!(op.retire_master_key(retire(&old_key, 30)).await, Code::FailedPrecondition);
    assert!(refused.message().contains("is the current master key"), "{}", refused.message());
    assert_code!(op.retire_master_key(retire(&old_key, 0)).await, Code::InvalidArgument, "backup_retention_days");
    let bad_window = RetireMasterKeyRequest { deletion_pending_days: 31, ..retire(&old_key, 30) };
    assert_code!(op.retire_master_key(bad_window).await, Code::InvalidArgument, "deletion_pending_days");

    // A second KMS key; a rewrap to it, stopped after one key.
    let new_key = ts_testkit::create_kms_key(&kms).await?;
    let new_arn = arn_of!(describe, new_key.as_str());
    let first = op.rewrap_all(RewrapAllRequest { new_kms_key_id: new_key.clone(), limit: 1 }).await?.into_inner();
    assert_eq!((first.rewrapped, first.remaining), (1, total - 1));
    // While any stored key is still wrapped under the old key, retiring it is refused, naming
    // how many, and KMS is left alone.
    assert_code!(
        op.retire_master_key(retire(&old_key, 30)).await,
        Code::FailedPrecondition,
        &format!("{} stored data keys are still wrapped under {old_arn}", total - 1)
    );
    assert_eq!(key_state!(describe, old_key.as_str()), "Enabled");

    let rest = op.rewrap_all(RewrapAllRequest { new_kms_key_id: new_key.clone(), limit: 0 }).await?.into_inner();
    assert_eq!(rest.remaining, 0);
    let status = op.get_master_key_status(GetMasterKeyStatusRequest {}).await?.into_inner();
    assert_eq!(status.current_kms_key_id, new_arn);
    assert_eq!(wrapped(&status), vec![(new_arn.clone(), total)], "nothing is left under the old key");

    // Retire, first step: the old key is disabled, and the backup retention window starts.
    let now = cluster.clock.now();
    let disabled = op.retire_master_key(retire(&old_key, 30)).await?.into_inner();
    assert_eq!(disabled.step(), MasterKeyRetirementStep::Disabled);
    assert_eq!((disabled.kms_key_id.as_str(), disabled.kms_key_state.as_str()), (old_arn.as_str(), "Disabled"));
    let due = i64::try_from(unix_secs(now + DAY * 30))?;
    assert_eq!(disabled.next_step_at.as_ref().map(|t| t.seconds), Some(due));
    assert_eq!(key_state!(describe, old_key.as_str()), "Disabled");
    match decrypt_backup().await {
        // moto: the state is not checked, the old key still answers (see the module's note).
        Ok(out) => assert_eq!(out.key_id(), Some(old_arn.as_str())),
        // AWS KMS: a disabled key opens nothing.
        Err(e) => assert!(format!("{e:?}").contains("DisabledException"), "{e:?}"),
    }

    // Live data never needed the old key: every kept folder still reads.
    let mut items = ItemServiceClient::new(cluster.gateway().await?);
    for (folder_id, item_id) in &kept {
        let request = GetItemRequest { folder_id: folder_id.clone(), item_id: item_id.clone() };
        items.get_item(alice.request(request)).await?;
    }

    // Called again (a daily CronJob) before the window has passed: nothing to do yet.
    let waiting = op.retire_master_key(retire(&old_key, 30)).await?.into_inner();
    assert_eq!(waiting.step(), MasterKeyRetirementStep::Waiting);
    assert_eq!(waiting.next_step_at.as_ref().map(|t| t.seconds), Some(due));
    assert_eq!(key_state!(describe, old_key.as_str()), "Disabled");

    // Once every backup from before the rewrap has expired, the deletion is scheduled.
    cluster.clock.advance(DAY * 30 + Duration::from_secs(60 * 60));
    let scheduled = op.retire_master_key(retire(&old_key, 30)).await?.into_inner();
    assert_eq!(scheduled.step(), MasterKeyRetirementStep::DeletionScheduled);
    assert_eq!(scheduled.kms_key_state, "PendingDeletion");
    assert!(scheduled.next_step_at.is_none(), "nothing is left for keyvault to do");
    let retirement = scheduled.retirement.context("the retirement")?;
    assert!(retirement.deletion_scheduled_at.is_some() && retirement.kms_deletion_date.is_some());
    assert_eq!(key_state!(describe, old_key.as_str()), "PendingDeletion");
    match decrypt_backup().await {
        Ok(out) => assert_eq!(out.key_id(), Some(old_arn.as_str())),
        Err(e) => assert!(format!("{e:?}").contains("KMSInvalidStateException"), "{e:?}"),
    }

    let done = op.retire_master_key(retire(&old_key, 30)).await?.into_inner();
    assert_eq!(done.step(), MasterKeyRetirementStep::Done);
    let status = op.get_master_key_status(GetMasterKeyStatusRequest {}).await?.into_inner();
    assert_eq!(status.retirements.len(), 1);
    assert_eq!(status.retirements[0].kms_key_id, old_arn);
    assert_eq!(status.retirements[0].backup_retention_days, 30);
    assert!(status.retirements[0].deletion_scheduled_at.is_some());
    cluster.stop().await
}

/// What one CLI run printed.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> anyhow::Result<Value> {
        anyhow::ensure!(self.ok, "failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }
}

/// `teamshare-cli --json operator … <args>` as the operator of `cluster`, with only `env` set,
/// as a CronJob runs it.
async fn operator_cli(cluster: &TestCluster, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Ran> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let keyvault = format!("https://127.0.0.1:{}", cluster.addr(Service::Keyvault).port());
    let (cert, key, ca) = (
        path(cluster.certs.cert(Peer::Operator)),
        path(cluster.certs.key(Peer::Operator)),
        path(cluster.certs.ca_cert()),
    );
    let out = tokio::process::Command::new(cli_path()?)
        .args(["--json", "operator", "--cert", &cert, "--key", &key, "--internal-ca", &ca, "--keyvault-url", &keyvault])
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await?;
    Ok(Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[tokio::test]
async fn the_operator_cli_rewraps_with_progress_and_retires_the_old_key_from_a_cronjob() -> anyhow::Result<()> {
    let cluster = TestCluster::start().await?;
    let servers = tokio::task::spawn_blocking(ts_testkit::shared).await??;
    let kms = ts_testkit::kms_client(servers.kms.port);
    let describe = |key: &str| kms.describe_key().key_id(key).send();
    let old_key = configured_key(&cluster)?;
    let old_arn = arn_of!(describe, old_key.as_str());
    let alice = cluster.sign_in("alice@example.com").await?;
    for name in ["Reporting", "Billing"] {
        cluster.folders(&alice).await?.create(name).await?;
    }
    let total =
        cluster.database().await?.collection::<bson::Document>("data_keys").count_documents(bson::doc! {}).await?;
    assert!(total >= 2, "{total} data keys");
    let new_key = ts_testkit::create_kms_key(&kms).await?;
    let new_arn = arn_of!(describe, new_key.as_str());

    // The rewrap, one key per call, with progress on stderr and one JSON result on stdout.
    let ran = operator_cli(&cluster, &["master-key", "rewrap", "--to", &new_key, "--batch", "1"], &[]).await?;
    let report = ran.json()?;
    assert_eq!((report["rewrapped"].as_u64(), report["remaining"].as_u64()), (Some(total), Some(0)), "{report}");
    for n in 1..=total {
        assert!(ran.stderr.contains(&format!("rewrapped {n} of {total}")), "{}", ran.stderr);
    }
    let status = operator_cli(&cluster, &["master-key", "status"], &[]).await?.json()?;
    assert_eq!(status["current_kms_key_id"], new_arn.as_str());
    assert_eq!(status["configured_kms_key_id"], old_key.as_str());
    assert_eq!(status["wrapped_data_keys"], json!([{ "kms_key_id": new_arn, "data_keys": total }]));

    // The current key is refused, with the reason on stderr and a failing exit.
    let args = ["master-key", "retire", "--old", &new_key, "--backup-retention-days", "1"];
    let refused = operator_cli(&cluster, &args, &[]).await?;
    assert!(!refused.ok && refused.stderr.contains("is the current master key"), "{}", refused.stderr);

    // The old key, as a daily CronJob runs it: everything from the environment.
    let cron = [
        ("TEAMSHARE_RETIRE_KMS_KEY", old_key.as_str()),
        ("TEAMSHARE_BACKUP_RETENTION_DAYS", "1"),
        ("TEAMSHARE_KMS_DELETION_PENDING_DAYS", "7"),
    ];
    let disabled = operator_cli(&cluster, &["master-key", "retire"], &cron).await?.json()?;
    assert_eq!((&disabled["step"], &disabled["kms_key_state"]), (&json!("disabled"), &json!("Disabled")), "{disabled}");
    assert_eq!(disabled["kms_key_id"], old_arn.as_str());
    assert_ne!(disabled["next_step_at"], "", "{disabled}");
    assert_eq!(key_state!(describe, old_key.as_str()), "Disabled");
    let waiting = operator_cli(&cluster, &["master-key", "retire"], &cron).await?.json()?;
    assert_eq!(waiting["step"], "waiting", "{waiting}");

    cluster.clock.advance(DAY + Duration::from_secs(60));
    let scheduled = operator_cli(&cluster, &["master-key", "retire"], &cron).await?.json()?;
    assert_eq!(scheduled["step"], "deletion_scheduled", "{scheduled}");
    assert_eq!(scheduled["next_step_at"], "", "{scheduled}");
    assert_eq!(key_state!(describe, old_key.as_str()), "PendingDeletion");
    let done = operator_cli(&cluster, &["master-key", "retire"], &cron).await?.json()?;
    assert_eq!(done["step"], "done", "{done}");

    let status = operator_cli(&cluster, &["master-key", "status"], &[]).await?.json()?;
    let retired = &status["retirements"][0];
    assert_eq!(retired["kms_key_id"], old_arn.as_str(), "{status}");
    assert_ne!(retired["deletion_scheduled_at"], "", "{status}");
    assert_ne!(retired["kms_deletion_date"], "", "{status}");
    cluster.stop().await
}
