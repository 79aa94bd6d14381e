//! Schema migrations (issue 13, item 4): `teamshare migrate` creates every service's indexes
//! once per version and records it in `schema_migrations`, safely twice or concurrently; a
//! start with production = true only reads the record (refusing an older schema, going on with
//! a newer one), one without it migrates by itself; and production refuses a store without TLS.

use std::sync::atomic::{AtomicBool, Ordering};

use bson::{Document, doc};
use futures::TryStreamExt;
use teamshare::{Migration, Service};
use ts_config::{Config, MongoConfig};
use ts_stores::MIGRATIONS;
use ts_testkit::{fresh_database, shared};

/// A configuration that names only a fresh database on the shared server.
async fn fresh_config() -> anyhow::Result<Config> {
    let servers = tokio::task::spawn_blocking(shared).await??;
    Ok(Config {
        mongodb: Some(MongoConfig {
            uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", servers.mongo.port).into(),
            database: format!("t_{}", uuid::Uuid::new_v4().simple()),
        }),
        ..Config::default()
    })
}

/// A migration step that must not run.
async fn must_not_run() -> mongodb::error::Result<()> {
    panic!("the migration step ran where it must not")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_records_every_service_once_and_is_safe_to_repeat_or_race() -> anyhow::Result<()> {
    let config = fresh_config().await?;
    let (first, second) = tokio::join!(teamshare::migrate(&config), teamshare::migrate(&config));
    for (service, migration) in first?.iter().chain(second?.iter()) {
        assert!(
            matches!(migration, Migration::Applied { from: None } | Migration::Current),
            "{service:?}: {migration:?}"
        );
    }
    let again = teamshare::migrate(&config).await?;
    let services: Vec<Service> = again.iter().map(|(s, _)| *s).collect();
    assert_eq!(services, [Service::Auth, Service::Keyvault, Service::Folders, Service::Invitations]);
    assert!(again.iter().all(|(_, m)| *m == Migration::Current), "a second run changes nothing: {again:?}");

    let db = ts_stores::mongo(config.mongodb.as_ref().expect("configured"), false, "teamshare-tests").await?;
    let records: Vec<Document> = db.collection::<Document>(MIGRATIONS).find(doc! {}).await?.try_collect().await?;
    assert_eq!(records.len(), 4, "one record per service with collections: {records:?}");
    for r in &records {
        assert!(r.get_i64("version").is_ok() && r.get_datetime("applied_at").is_ok(), "{r:?}");
    }
    // The unique indexes that guard emails, memberships and data keys are there.
    for (collection, index) in
        [("users", "email_unique"), ("members", "folder_user_unique"), ("data_keys", "folder_version_unique")]
    {
        let names = db.collection::<Document>(collection).list_index_names().await?;
        assert!(names.iter().any(|n| n == index), "{collection}: {names:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_start_reads_the_recorded_schema_and_never_migrates() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let schema = ts_folders::store::SCHEMA;
    let records = db.collection::<Document>(MIGRATIONS);

    // Nothing recorded, then an older version: refused, naming the command to run.
    let e = schema.check_at_start(&db, true, must_not_run()).await.unwrap_err().to_string();
    assert!(e.contains("teamshare migrate") && e.contains("no version"), "{e}");
    let older = i64::from(schema.version) - 1;
    records.insert_one(doc! { "_id": schema.service, "version": older }).await?;
    let e = schema.check_at_start(&db, true, must_not_run()).await.unwrap_err().to_string();
    assert!(e.contains("teamshare migrate") && e.contains(&format!("version {older}")), "{e}");

    // `teamshare migrate` runs the step and raises the record; production then starts as is.
    let ran = AtomicBool::new(false);
    let step = async {
        ran.store(true, Ordering::SeqCst);
        Ok::<(), mongodb::error::Error>(())
    };
    let from = u32::try_from(older).ok();
    assert_eq!(schema.migrate(&db, step).await?, Migration::Applied { from });
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(schema.recorded(&db).await?, Some(schema.version));
    schema.check_at_start(&db, true, must_not_run()).await?;

    // A newer schema (this build is one version behind, after a rollback): start goes on,
    // migrate leaves it, and the record is never lowered.
    let newer = schema.version + 1;
    records.update_one(doc! { "_id": schema.service }, doc! { "$set": { "version": i64::from(newer) } }).await?;
    schema.check_at_start(&db, true, must_not_run()).await?;
    assert_eq!(schema.migrate(&db, must_not_run()).await?, Migration::Newer(newer));
    assert_eq!(schema.recorded(&db).await?, Some(newer));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_development_start_migrates_by_itself() -> anyhow::Result<()> {
    let db = fresh_database().await?;
    let schema = ts_auth::store::SCHEMA;
    let ran = AtomicBool::new(false);
    let step = async {
        ran.store(true, Ordering::SeqCst);
        Ok::<(), mongodb::error::Error>(())
    };
    schema.check_at_start(&db, false, step).await?;
    assert!(ran.load(Ordering::SeqCst));
    assert_eq!(schema.recorded(&db).await?, Some(schema.version));
    // The next start finds it current and runs nothing.
    schema.check_at_start(&db, false, must_not_run()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_mongodb_without_tls_naming_the_key_and_never_the_uri() -> anyhow::Result<()> {
    let mut config = fresh_config().await?;
    config.production = true;
    let e = teamshare::migrate(&config).await.unwrap_err().to_string();
    assert!(e.contains("mongodb.uri") && e.contains("TLS"), "{e}");
    assert!(!e.contains("127.0.0.1") && !e.contains("directConnection"), "{e}");
    Ok(())
}

/// What `teamshare migrate` makes of a fresh database, one line per index (collection, name,
/// keys and options) and per service's recorded version, sorted.
async fn schema_of(config: &Config) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    teamshare::migrate(config).await?;
    let db = ts_stores::mongo(config.mongodb.as_ref().expect("configured"), false, "teamshare-tests").await?;
    let mut indexes = Vec::new();
    for collection in db.list_collection_names().await? {
        if collection == MIGRATIONS {
            continue;
        }
        let mut cursor = db.collection::<Document>(&collection).list_indexes().await?;
        while let Some(index) = cursor.try_next().await? {
            let options = index.options.as_ref();
            indexes.push(format!(
                "index {collection} {} keys={} unique={} ttl={:?} partial={}",
                options.and_then(|o| o.name.clone()).unwrap_or_default(),
                index.keys,
                options.and_then(|o| o.unique).unwrap_or(false),
                options.and_then(|o| o.expire_after).map(|d| d.as_secs()),
                options.and_then(|o| o.partial_filter_expression.clone()).map(|p| p.to_string()).unwrap_or_default(),
            ));
        }
    }
    let mut versions: Vec<String> = db
        .collection::<Document>(MIGRATIONS)
        .find(doc! {})
        .await?
        .try_collect::<Vec<_>>()
        .await?
        .iter()
        .map(|r| format!("version {} {}", r.get_str("_id").unwrap_or("?"), r.get_i64("version").unwrap_or(-1)))
        .collect();
    indexes.sort();
    versions.sort();
    Ok((versions, indexes))
}

/// Production never creates an index its recorded version says it has, so an index added
/// without raising its service's `SCHEMA` version would never reach an existing database
/// (and a unique index is what stops a duplicate membership). This test holds the indexes a
/// fresh migration makes against `tests/schema.snapshot`: a change of indexes must come with a
/// change of version. After raising the version, `UPDATE_SCHEMA_SNAPSHOT=1` rewrites it.
#[tokio::test]
async fn an_index_change_needs_a_new_schema_version() -> anyhow::Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.snapshot");
    let (versions, indexes) = schema_of(&fresh_config().await?).await?;
    let now: Vec<String> = versions.iter().chain(&indexes).cloned().collect();
    let recorded = std::fs::read_to_string(&path).unwrap_or_default();
    let was: Vec<String> =
        recorded.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(str::to_owned).collect();
    let was_versions: Vec<&String> = was.iter().filter(|l| l.starts_with("version ")).collect();
    let was_indexes: Vec<&String> = was.iter().filter(|l| l.starts_with("index ")).collect();
    let same_versions = was_versions == versions.iter().collect::<Vec<_>>();
    let same_indexes = was_indexes == indexes.iter().collect::<Vec<_>>();
    if same_versions && same_indexes {
        return Ok(());
    }
    anyhow::ensure!(
        !same_versions || recorded.is_empty(),
        "the indexes changed but no SCHEMA version did: raise the version of the service whose \
         store changed (its `SCHEMA` constant), so `teamshare migrate` runs on existing databases, \
         then run this test with UPDATE_SCHEMA_SNAPSHOT=1.\nnow:\n{}",
        now.join("\n")
    );
    if std::env::var("UPDATE_SCHEMA_SNAPSHOT").is_ok() {
        let header = "# What `teamshare migrate` makes of a fresh database (tests/tests/e2e/migrations.rs).\n";
        std::fs::write(&path, format!("{header}{}\n", now.join("\n")))?;
        return Ok(());
    }
    anyhow::bail!("a SCHEMA version changed: run this test with UPDATE_SCHEMA_SNAPSHOT=1 to record\n{}", now.join("\n"))
}
