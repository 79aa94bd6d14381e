//! Schema versions. What a service's code expects of its collections (today: its indexes) is
//! made once per version by `teamshare migrate`, which records the version in
//! `schema_migrations` (`{_id: "<service>", version, applied_at}`); a replica's start only
//! reads that record. Creating indexes on every start made each rolling restart of every
//! replica a burst of `createIndexes` commands, and made a new index on a large collection a
//! race between replicas instead of one step an operator watches.
//!
//! At start ([`Schema::check_at_start`]): the code's version recorded → go on. Older or no
//! record → with `production = true` refuse to start (run `teamshare migrate` first); without
//! it, migrate right there, so development and tests need no extra step. A newer record (this
//! is an older build, after a rollback) → warn and go on: every migration only adds, so the
//! previous build runs on the next version's schema. Rolling back further than one version is
//! not supported.

use std::future::Future;

use mongodb::Database;
use mongodb::bson::{Bson, DateTime, Document, doc};

/// The collection that records each service's schema version.
pub const MIGRATIONS: &str = "schema_migrations";

/// A service's schema: the service's name (the record's `_id`) and the version its code
/// expects. Raise the version whenever the service's migration step changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    /// The service, such as `folders`.
    pub service: &'static str,
    /// The version this build's code expects.
    pub version: u32,
}

/// What [`Schema::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migration {
    /// The step ran and this build's version is recorded; `from` is what was recorded before.
    Applied {
        /// The version recorded before, if any.
        from: Option<u32>,
    },
    /// This build's version was already recorded: nothing ran.
    Current,
    /// A newer version is recorded (this is an older build): nothing ran, nothing changed.
    Newer(u32),
}

/// Why a service cannot use, or migrate, its database's schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The record in `schema_migrations` could not be read or written.
    #[error("cannot read or record the {service} schema version in `schema_migrations`: {source}")]
    Record {
        /// The service.
        service: &'static str,
        /// The store's error.
        source: mongodb::error::Error,
    },
    /// The migration step failed (for example, an index could not be created).
    #[error("cannot migrate the {service} schema to version {version}: {source}")]
    Step {
        /// The service.
        service: &'static str,
        /// The version being migrated to.
        version: u32,
        /// The store's error.
        source: mongodb::error::Error,
    },
    /// With `production = true`, a start found an older schema (or none): it never migrates.
    #[error(
        "the database holds {found} of the {service} schema but this build needs version {version}; run \
         `teamshare migrate` with this build and this configuration, then start it again (with production = true \
         a service never changes the schema at start)"
    )]
    NotMigrated {
        /// The service.
        service: &'static str,
        /// What is recorded, in words ("version 1", "no version").
        found: String,
        /// The version this build needs.
        version: u32,
    },
}

impl Schema {
    /// The schema of `service` at `version`.
    pub const fn new(service: &'static str, version: u32) -> Self {
        Schema { service, version }
    }

    /// The version recorded for this service in `db`, if any. A record whose version is not a
    /// whole number in range (edited by hand) reads as none.
    pub async fn recorded(&self, db: &Database) -> Result<Option<u32>, SchemaError> {
        let found = db
            .collection::<Document>(MIGRATIONS)
            .find_one(doc! { "_id": self.service })
            .await
            .map_err(|source| SchemaError::Record { service: self.service, source })?;
        Ok(found.as_ref().and_then(|d| d.get("version")).and_then(whole_version))
    }

    /// `teamshare migrate`: runs `step` (which must be idempotent, as creating an index that
    /// exists is) and records this build's version, unless this version or a newer one is
    /// recorded already. Safe to run twice, or from two places at once: both may run the
    /// step, and the record only ever rises.
    pub async fn migrate<F>(&self, db: &Database, step: F) -> Result<Migration, SchemaError>
    where
        F: Future<Output = mongodb::error::Result<()>>,
    {
        match self.recorded(db).await? {
            Some(found) if found == self.version => Ok(Migration::Current),
            Some(found) if found > self.version => Ok(Migration::Newer(found)),
            from => {
                self.apply(db, step).await?;
                Ok(Migration::Applied { from })
            }
        }
    }

    /// At a replica's start: goes on when this build's version (or, with a warning, a newer
    /// one) is recorded. Otherwise, with `production`, refuses with
    /// [`SchemaError::NotMigrated`]; without it, runs `step` and records the version, as
    /// `teamshare migrate` would. `step` is not run (nor polled) when the schema is current.
    pub async fn check_at_start<F>(&self, db: &Database, production: bool, step: F) -> Result<(), SchemaError>
    where
        F: Future<Output = mongodb::error::Result<()>>,
    {
        match self.recorded(db).await? {
            Some(found) if found == self.version => Ok(()),
            Some(found) if found > self.version => {
                tracing::warn!(
                    service = self.service,
                    recorded = found,
                    expected = self.version,
                    "the database's schema is newer than this build's; going on (a rollback by one version is \
                     supported)"
                );
                Ok(())
            }
            found if production => Err(SchemaError::NotMigrated {
                service: self.service,
                found: found.map_or_else(|| "no version".to_owned(), |v| format!("version {v}")),
                version: self.version,
            }),
            found => {
                tracing::info!(
                    service = self.service,
                    recorded = ?found,
                    expected = self.version,
                    "migrating the schema at start (production = false)"
                );
                self.apply(db, step).await
            }
        }
    }

    /// Runs `step`, then records this version.
    async fn apply<F>(&self, db: &Database, step: F) -> Result<(), SchemaError>
    where
        F: Future<Output = mongodb::error::Result<()>>,
    {
        step.await.map_err(|source| SchemaError::Step { service: self.service, version: self.version, source })?;
        self.record(db).await.map_err(|source| SchemaError::Record { service: self.service, source })
    }

    /// Records this version, never lowering a newer one. Two statements, each idempotent,
    /// so that runs in any interleaving end with a record at this version or above: create
    /// the record if there is none (a concurrent run that creates it first makes this one's
    /// insert fail on `_id`, which is fine: the record exists either way), then raise it if
    /// it is older.
    async fn record(&self, db: &Database) -> mongodb::error::Result<()> {
        let records = db.collection::<Document>(MIGRATIONS);
        let version = i64::from(self.version);
        let now = DateTime::now();
        records
            .update_one(
                doc! { "_id": self.service },
                doc! { "$setOnInsert": { "version": version, "applied_at": now } },
            )
            .upsert(true)
            .await
            .map(drop)
            .or_else(|e| if crate::is_duplicate_key(&e) { Ok(()) } else { Err(e) })?;
        records
            .update_one(
                doc! { "_id": self.service, "version": { "$lt": version } },
                doc! { "$set": { "version": version, "applied_at": now } },
            )
            .await?;
        Ok(())
    }
}

/// A recorded version as a `u32`, whichever numeric BSON type a hand edit stored it as.
fn whole_version(value: &Bson) -> Option<u32> {
    match value {
        Bson::Int32(v) => u32::try_from(*v).ok(),
        Bson::Int64(v) => u32::try_from(*v).ok(),
        Bson::Double(v) if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(v) => Some(*v as u32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::Bson;

    #[test]
    fn a_recorded_version_reads_from_any_whole_number_and_nothing_else() {
        assert_eq!(super::whole_version(&Bson::Int64(3)), Some(3));
        assert_eq!(super::whole_version(&Bson::Int32(2)), Some(2));
        assert_eq!(super::whole_version(&Bson::Double(1.0)), Some(1));
        assert_eq!(super::whole_version(&Bson::Double(1.5)), None);
        assert_eq!(super::whole_version(&Bson::Int32(-1)), None);
        assert_eq!(super::whole_version(&Bson::String("1".into())), None);
    }

    #[test]
    fn not_migrated_names_the_command_to_run() {
        let e = super::SchemaError::NotMigrated { service: "folders", found: "no version".into(), version: 2 };
        let e = e.to_string();
        assert!(e.contains("teamshare migrate") && e.contains("folders") && e.contains("version 2"), "{e}");
    }
}
