//! The key vault against a real KMS API (moto) and the MongoDB-compatible server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bson::{Document, doc};
use futures::TryStreamExt;
use ts_contract::clock::{ManualClock, SystemClock};
use ts_crypto::{CacheLimits, DataKey, Envelope, FieldRef};
use ts_keyvault::kms::{AwsKms, KeyContext, Kms, KmsError, LocalKms, MasterKeyInfo, WrappedKey};
use ts_keyvault::store::KeyStore;
use ts_keyvault::vault::RetireStep;
use ts_keyvault::{KeyVault, VaultError};
use ts_testkit::{ServerProcess, create_kms_key, fresh_database, kms_client, shared};

/// Counts unwraps, and can fail rewraps after a number of them (an interrupted pass).
struct Counting {
    inner: Arc<dyn Kms>,
    unwraps: AtomicU64,
    rewraps: AtomicU64,
    fail_rewrap_after: Option<u64>,
}

impl Counting {
    fn new(inner: Arc<dyn Kms>, fail_rewrap_after: Option<u64>) -> Arc<Self> {
        Arc::new(Counting { inner, unwraps: AtomicU64::new(0), rewraps: AtomicU64::new(0), fail_rewrap_after })
    }
}

#[tonic::async_trait]
impl Kms for Counting {
    async fn generate(&self, master: &str, ctx: KeyContext<'_>) -> Result<(DataKey, WrappedKey), KmsError> {
        self.inner.generate(master, ctx).await
    }
    async fn unwrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>) -> Result<DataKey, KmsError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.inner.unwrap(wrapped, ctx).await
    }
    async fn rewrap(&self, wrapped: &WrappedKey, ctx: KeyContext<'_>, new: &str) -> Result<WrappedKey, KmsError> {
        let n = self.rewraps.fetch_add(1, Ordering::SeqCst);
        if self.fail_rewrap_after.is_some_and(|limit| n >= limit) {
            return Err(KmsError::Unavailable("connection reset (simulated interruption)".into()));
        }
        self.inner.rewrap(wrapped, ctx, new).await
    }
    async fn resolve(&self, master: &str) -> Result<String, KmsError> {
        self.inner.resolve(master).await
    }
    async fn describe(&self, master: &str) -> Result<Option<MasterKeyInfo>, KmsError> {
        self.inner.describe(master).await
    }
    async fn disable(&self, key_id: &str) -> Result<(), KmsError> {
        self.inner.disable(key_id).await
    }
    async fn schedule_deletion(&self, key_id: &str, days: u32) -> Result<Option<SystemTime>, KmsError> {
        self.inner.schedule_deletion(key_id, days).await
    }
}

struct Setup {
    db: mongodb::Database,
    client: aws_sdk_kms::Client,
    master: String,
    kms: Arc<dyn Kms>,
}

async fn setup() -> anyhow::Result<Setup> {
    let servers = tokio::task::spawn_blocking(shared).await??;
    let client = kms_client(servers.kms.port);
    let master = create_kms_key(&client).await?;
    let kms: Arc<dyn Kms> = Arc::new(AwsKms::new(client.clone()));
    Ok(Setup { db: fresh_database().await?, client, master, kms })
}

impl Setup {
    fn vault(&self, kms: Arc<dyn Kms>) -> KeyVault {
        KeyVault::new(kms, KeyStore::new(&self.db, Arc::new(SystemClock)), self.master.clone(), CacheLimits::default())
    }

    async fn stored(&self, folder_id: &str) -> anyhow::Result<Vec<Document>> {
        Ok(self
            .db
            .collection::<Document>("data_keys")
            .find(doc! { "folder_id": folder_id })
            .await?
            .try_collect()
            .await?)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn stored_keys_hold_no_plaintext_and_unwrap_only_with_their_context() -> anyhow::Result<()> {
    let s = setup().await?;
    let vault = s.vault(s.kms.clone());
    vault.store().ensure_indexes().await?;
    assert_eq!(vault.create("folder-a").await?, 1);
    assert_eq!(vault.create("folder-a").await?, 1, "create is idempotent");
    let key = vault.get("folder-a", None).await?;

    let docs = s.stored("folder-a").await?;
    assert_eq!(docs.len(), 1);
    let raw = bson::to_vec(&docs[0])?;
    assert!(!contains(&raw, key.expose_bytes()), "plaintext key bytes stored");
    let blob = match docs[0].get("wrapped") {
        Some(bson::Bson::Binary(b)) => b.bytes.clone(),
        other => anyhow::bail!("wrapped is {other:?}"),
    };

    let decrypt = |folder: &str| {
        s.client
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob.clone()))
            .encryption_context("folder_id", folder)
            .encryption_context("key_version", "1")
            .send()
    };
    let right = decrypt("folder-a").await?;
    assert_eq!(right.plaintext().map(|b| b.as_ref()), Some(&key.expose_bytes()[..]));
    // KMS itself refuses the wrong context as an invalid ciphertext, not as some other failure.
    let err = decrypt("folder-b").await.expect_err("KMS Decrypt with another folder's context must fail");
    let service = err.as_service_error().expect("a KMS service error, not a transport failure");
    assert!(service.is_invalid_ciphertext_exception(), "{service:?}");

    // The vault itself refuses a wrong context too, and says so instead of making a new key.
    let moved = WrappedKey { blob, master_key_id: docs[0].get_str("master_key_id")?.to_owned() };
    let err = s.kms.unwrap(&moved, KeyContext { folder_id: "folder-a", version: 2 }).await.unwrap_err();
    assert!(matches!(err, KmsError::Rejected(_)), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn a_warm_cache_costs_one_kms_call_per_folder() -> anyhow::Result<()> {
    let s = setup().await?;
    let folders: Vec<String> = (0..5).map(|i| format!("folder-{i}")).collect();
    let writer = s.vault(s.kms.clone());
    for f in &folders {
        writer.create(f).await?;
    }
    // A fresh vault (a restarted or another replica) starts cold.
    let counting = Counting::new(s.kms.clone(), None);
    let reader = s.vault(counting.clone());
    for i in 0..200 {
        let f = &folders[i % folders.len()];
        assert_eq!(reader.get(f, Some(1)).await?.version(), 1);
    }
    assert_eq!(counting.unwraps.load(Ordering::SeqCst), folders.len() as u64, "200 reads over 5 folders");
    let (hits, _) = reader.cache_stats();
    assert!(hits >= 195, "{hits}");
    Ok(())
}

#[tokio::test]
async fn rotation_keeps_old_versions_readable_until_retired() -> anyhow::Result<()> {
    let s = setup().await?;
    let vault = s.vault(s.kms.clone());
    vault.create("f").await?;
    let v1 = vault.get("f", None).await?;
    let at = FieldRef { folder_id: "f", item_id: "i", field: "name" };
    let before = Envelope::seal(&v1, at, b"written before rotation")?;

    assert_eq!(vault.rotate("f").await?, 2);
    let v2 = vault.get("f", None).await?;
    assert_eq!(v2.version(), 2);
    assert_ne!(v1.expose_bytes(), v2.expose_bytes());
    let after = Envelope::seal(&v2, at, b"written after rotation")?;

    // Both read back, each with the version its envelope names.
    let cold = s.vault(s.kms.clone());
    assert_eq!(&*before.open(&cold.get("f", Some(before.key_version)).await?, at)?, b"written before rotation");
    assert_eq!(&*after.open(&cold.get("f", Some(after.key_version)).await?, at)?, b"written after rotation");

    assert!(matches!(vault.retire("f", 3).await, Err(VaultError::Precondition(_))), "cannot retire the newest");
    assert_eq!(vault.retire("f", 2).await?, 1);
    assert!(
        matches!(vault.get("f", Some(1)).await, Err(VaultError::NotFound { .. })),
        "retired version is gone, cache too"
    );
    assert_eq!(vault.get("f", None).await?.version(), 2);
    assert_eq!(s.stored("f").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn rewrap_moves_every_key_to_the_new_master_key_and_resumes_after_an_interruption() -> anyhow::Result<()> {
    let s = setup().await?;
    let vault = s.vault(s.kms.clone());
    let mut originals = Vec::new();
    for i in 0..6 {
        let f = format!("f{i}");
        vault.create(&f).await?;
        originals.push((f.clone(), 1, vault.get(&f, Some(1)).await?));
    }
    vault.rotate("f0").await?;
    originals.push(("f0".into(), 2, vault.get("f0", Some(2)).await?));
    let new_master = create_kms_key(&s.client).await?;

    let interrupted = Counting::new(s.kms.clone(), Some(3));
    let err = s.vault(interrupted).rewrap_all(&new_master, None).await.unwrap_err();
    assert!(matches!(err, VaultError::KmsUnavailable(_)), "{err:?}");

    // A pass limited to one key (how the operator CLI shows progress) says how many remain.
    let step = s.vault(s.kms.clone()).rewrap_all(&new_master, Some(1)).await?;
    assert_eq!((step.rewrapped, step.already_done, step.remaining), (1, 3, 3));
    let report = s.vault(s.kms.clone()).rewrap_all(&new_master, None).await?;
    assert_eq!(
        (report.rewrapped, report.already_done, report.remaining),
        (3, 4, 0),
        "the next passes carry on where the first stopped"
    );
    let again = s.vault(s.kms.clone()).rewrap_all(&new_master, None).await?;
    assert_eq!((again.rewrapped, again.already_done, again.remaining), (0, 7, 0));

    let new_arn = s.kms.resolve(&new_master).await?;
    let old_arn = s.kms.resolve(&s.master).await?;
    let cold = s.vault(s.kms.clone());
    for (folder, version, key) in &originals {
        let docs = s.stored(folder).await?;
        let stored = docs.iter().find(|d| d.get_i64("version").ok() == Some(i64::from(*version))).expect("stored");
        assert_eq!(stored.get_str("master_key_id")?, new_arn);
        // Same plaintext under the new master key…
        assert_eq!(cold.get(folder, Some(*version)).await?.expose_bytes(), key.expose_bytes());
        // …and the old master key no longer opens the stored blob.
        let blob = match stored.get("wrapped") {
            Some(bson::Bson::Binary(b)) => b.bytes.clone(),
            _ => anyhow::bail!("no blob"),
        };
        let old = WrappedKey { blob, master_key_id: old_arn.clone() };
        let refused = s.kms.unwrap(&old, KeyContext { folder_id: folder, version: *version }).await;
        assert!(matches!(refused, Err(KmsError::Rejected(_))), "{folder} v{version}: {refused:?}");
    }
    // New keys are made under the new master key from now on, even by a vault configured
    // with the old one.
    vault.create("after-rewrap").await?;
    assert_eq!(s.stored("after-rewrap").await?[0].get_str("master_key_id")?, new_arn);
    Ok(())
}

#[tokio::test]
async fn destroy_leaves_no_way_to_read_the_folder() -> anyhow::Result<()> {
    let s = setup().await?;
    let vault = s.vault(s.kms.clone());
    vault.create("doomed").await?;
    vault.rotate("doomed").await?;
    let key = vault.get("doomed", None).await?;
    let at = FieldRef { folder_id: "doomed", item_id: "i", field: "content.connection.hosts" };
    let sealed = Envelope::seal(&key, at, b"db.internal:27017")?.to_bytes();
    drop(key);

    assert_eq!(vault.destroy("doomed").await?, 2);
    assert!(s.stored("doomed").await?.is_empty());
    for version in [None, Some(1), Some(2)] {
        assert!(matches!(vault.get("doomed", version).await, Err(VaultError::NotFound { .. })), "{version:?}");
        assert!(matches!(s.vault(s.kms.clone()).get("doomed", version).await, Err(VaultError::NotFound { .. })));
    }
    // The stored ciphertext is intact but nothing can produce its key any more.
    assert!(Envelope::from_bytes(&sealed).is_ok());
    // Nor can the id have a key again (a retried create derives the same id).
    assert!(matches!(vault.create("doomed").await, Err(VaultError::Precondition(_))));
    assert!(s.stored("doomed").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_kms_outage_serves_cached_keys_and_fails_new_unwraps_clearly() -> anyhow::Result<()> {
    let mut own_kms = tokio::task::spawn_blocking(ServerProcess::kms).await??;
    let client = kms_client(own_kms.port);
    let master = create_kms_key(&client).await?;
    let db = fresh_database().await?;
    let kms: Arc<dyn Kms> = Arc::new(AwsKms::new(client));
    let vault = |kms: Arc<dyn Kms>| {
        KeyVault::new(kms, KeyStore::new(&db, Arc::new(SystemClock)), master.clone(), CacheLimits::default())
    };
    let writer = vault(kms.clone());
    writer.create("warm").await?;
    writer.create("cold").await?;
    let reader = vault(kms.clone());
    let warm = reader.get("warm", Some(1)).await?;

    tokio::task::spawn_blocking(move || own_kms.stop()).await?;

    assert_eq!(reader.get("warm", Some(1)).await?.expose_bytes(), warm.expose_bytes(), "cached key keeps serving");
    let err = reader.get("cold", Some(1)).await.unwrap_err();
    assert!(matches!(err, VaultError::KmsUnavailable(_)), "{err:?}");
    let err = writer.create("new-folder").await.unwrap_err();
    assert!(matches!(err, VaultError::KmsUnavailable(_)), "{err:?}");
    let left: Vec<Document> =
        db.collection::<Document>("data_keys").find(doc! { "folder_id": "new-folder" }).await?.try_collect().await?;
    assert!(left.is_empty(), "nothing half-written");
    Ok(())
}

#[tokio::test]
async fn the_local_provider_binds_keys_to_their_context() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::new([9; 32]));
    let vault =
        KeyVault::new(kms.clone(), KeyStore::new(&db, Arc::new(SystemClock)), "local".into(), CacheLimits::default());
    vault.create("f").await?;
    vault.rotate("f").await?;
    let cold =
        KeyVault::new(kms.clone(), KeyStore::new(&db, Arc::new(SystemClock)), "local".into(), CacheLimits::default());
    assert_eq!(cold.get("f", Some(1)).await?.version(), 1);
    let stored = KeyStore::new(&db, Arc::new(SystemClock)).find("f", Some(1)).await?.expect("stored");
    let rejected = |r: Result<DataKey, KmsError>| matches!(r, Err(KmsError::Rejected(_)));
    assert!(rejected(kms.unwrap(&stored.wrapped, KeyContext { folder_id: "g", version: 1 }).await), "other folder");
    assert!(rejected(kms.unwrap(&stored.wrapped, KeyContext { folder_id: "f", version: 2 }).await), "other version");
    let other_master = LocalKms::new([8; 32]);
    let r = other_master.unwrap(&stored.wrapped, KeyContext { folder_id: "f", version: 1 }).await;
    assert!(rejected(r), "other master key");
    // The control: the right context opens it.
    assert_eq!(kms.unwrap(&stored.wrapped, KeyContext { folder_id: "f", version: 1 }).await?.version(), 1);
    Ok(())
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A key's state as KMS spells it (`Enabled`, `Disabled`, `PendingDeletion`).
async fn key_state(client: &aws_sdk_kms::Client, key_id: &str) -> anyhow::Result<String> {
    let out = client.describe_key().key_id(key_id).send().await?;
    Ok(out.key_metadata().and_then(|m| m.key_state()).map(|s| s.as_str().to_owned()).unwrap_or_default())
}

#[tokio::test]
async fn retiring_the_old_master_key_disables_it_then_schedules_its_deletion_after_the_backup_window()
-> anyhow::Result<()> {
    let s = setup().await?;
    let clock = ManualClock::default();
    let vault = KeyVault::new(
        s.kms.clone(),
        KeyStore::new(&s.db, Arc::new(clock.clone())),
        s.master.clone(),
        CacheLimits::default(),
    );
    vault.create("f1").await?;
    vault.create("f2").await?;
    let old_arn = s.kms.resolve(&s.master).await?;

    // The key new data keys are made under is never retired.
    let err = vault.retire_master_key(&s.master, 30, 7).await.unwrap_err();
    assert!(matches!(&err, VaultError::Precondition(m) if m.contains("current master key")), "{err:?}");
    // Nor is a key that still wraps a stored data key: the refusal says how many.
    let new_master = create_kms_key(&s.client).await?;
    assert_eq!(vault.rewrap_all(&new_master, Some(1)).await?.remaining, 1);
    let err = vault.retire_master_key(&s.master, 30, 7).await.unwrap_err();
    assert!(matches!(&err, VaultError::Precondition(m) if m.starts_with("1 stored data keys")), "{err:?}");
    assert_eq!(key_state(&s.client, &s.master).await?, "Enabled");
    assert_eq!(vault.rewrap_all(&new_master, None).await?.remaining, 0);
    // AWS KMS allows a pending window of 7 to 30 days only.
    assert!(matches!(vault.retire_master_key(&s.master, 30, 6).await, Err(VaultError::Precondition(_))));

    let new_arn = s.kms.resolve(&new_master).await?;
    let status = vault.master_key_status().await?;
    assert_eq!((status.current.as_str(), status.configured.as_str()), (new_arn.as_str(), s.master.as_str()));
    assert_eq!(status.wrapped, vec![(new_arn.clone(), 2)]);
    assert!(status.retirements.is_empty());

    let disabled = vault.retire_master_key(&s.master, 30, 7).await?;
    assert_eq!(disabled.step, RetireStep::Disabled);
    assert_eq!(disabled.retirement.master_key_id, old_arn);
    assert_eq!(disabled.next_step_at, Some(disabled.retirement.disabled_at + DAY * 30));
    assert_eq!(key_state(&s.client, &s.master).await?, "Disabled");

    // Enabled again by hand (to restore an old backup, say): disabled again, and the backup
    // retention window starts over.
    clock.advance(DAY * 10);
    s.client.enable_key().key_id(&s.master).send().await?;
    let again = vault.retire_master_key(&s.master, 30, 7).await?;
    assert_eq!(again.step, RetireStep::Disabled);
    assert_eq!(again.next_step_at, Some(clock_now(&clock) + DAY * 30));
    assert_eq!(key_state(&s.client, &s.master).await?, "Disabled");

    clock.advance(DAY * 29);
    let waiting = vault.retire_master_key(&s.master, 30, 7).await?;
    assert_eq!(waiting.step, RetireStep::Waiting);
    assert_eq!(key_state(&s.client, &s.master).await?, "Disabled");

    clock.advance(DAY * 2);
    let scheduled = vault.retire_master_key(&s.master, 30, 7).await?;
    assert_eq!(scheduled.step, RetireStep::DeletionScheduled);
    assert_eq!(scheduled.next_step_at, None);
    assert!(scheduled.retirement.deletion_scheduled_at.is_some() && scheduled.retirement.kms_deletion_date.is_some());
    assert_eq!(key_state(&s.client, &s.master).await?, "PendingDeletion");

    let done = vault.retire_master_key(&s.master, 30, 7).await?;
    assert_eq!((done.step, done.kms_state.as_deref()), (RetireStep::Done, Some("PendingDeletion")));
    let status = vault.master_key_status().await?;
    assert_eq!(status.retirements.len(), 1);
    assert_eq!(status.retirements[0].master_key_id, old_arn);
    assert!(status.retirements[0].deletion_scheduled_at.is_some());

    // Live data never needed the old key: every folder still reads, under the new one.
    let cold = s.vault(s.kms.clone());
    assert_eq!(cold.get("f1", Some(1)).await?.version(), 1);
    assert_eq!(cold.get("f2", Some(1)).await?.version(), 1);
    Ok(())
}

fn clock_now(clock: &ManualClock) -> SystemTime {
    use ts_contract::clock::Clock;
    clock.now()
}

#[tokio::test]
async fn the_local_provider_has_no_master_key_to_retire() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let kms: Arc<dyn Kms> = Arc::new(LocalKms::new([9; 32]));
    let vault = KeyVault::new(kms, KeyStore::new(&db, Arc::new(SystemClock)), "local".into(), CacheLimits::default());
    vault.create("f").await?;
    let err = vault.retire_master_key("local", 30, 30).await.unwrap_err();
    assert!(matches!(&err, VaultError::Precondition(m) if m == ts_keyvault::kms::LOCAL_CANNOT_RETIRE), "{err:?}");
    Ok(())
}
