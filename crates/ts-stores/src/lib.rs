//! Connections to the stores: MongoDB (system of record) and Redis (cache and counters).
//! Both accept TLS and credentials in their URLs; neither is contacted until first use, so
//! a service starts even while a store is briefly away.

use std::time::Duration;

use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use secrecy::ExposeSecret;

use ts_config::{ConfigError, MongoConfig, RedisConfig};

/// Opens the configured database with `w: majority, j: true` writes.
pub async fn mongo(config: &MongoConfig, app_name: &str) -> Result<mongodb::Database, ConfigError> {
    let mut opts = ClientOptions::parse(config.uri.expose_secret())
        .await
        .map_err(|e| ConfigError::key("mongodb.uri", redact_mongo_error(&e)))?;
    opts.app_name = Some(app_name.to_owned());
    opts.command_event_handler = Some(command_metrics());
    opts.write_concern = Some(WriteConcern::builder().w(Acknowledgment::Majority).journal(true).build());
    opts.server_selection_timeout = Some(opts.server_selection_timeout.unwrap_or(Duration::from_secs(10)));
    let client =
        mongodb::Client::with_options(opts).map_err(|e| ConfigError::key("mongodb.uri", redact_mongo_error(&e)))?;
    Ok(client.database(&config.database))
}

/// Latency and failures of every MongoDB command, by command name (never its contents).
fn command_metrics() -> mongodb::event::EventHandler<mongodb::event::command::CommandEvent> {
    use mongodb::event::command::CommandEvent;
    use opentelemetry::KeyValue;
    let meter = opentelemetry::global::meter("teamshare");
    let duration = meter
        .f64_histogram("mongodb.command.duration")
        .with_unit("ms")
        .with_description("MongoDB command latency")
        .build();
    let commands =
        meter.u64_counter("mongodb.commands").with_description("MongoDB commands by name and outcome").build();
    mongodb::event::EventHandler::callback(move |event| {
        let (name, elapsed, outcome) = match &event {
            CommandEvent::Succeeded(e) => (e.command_name.clone(), e.duration, "ok"),
            CommandEvent::Failed(e) => (e.command_name.clone(), e.duration, "error"),
            _ => return,
        };
        let attrs = [KeyValue::new("command", name), KeyValue::new("outcome", outcome)];
        duration.record(elapsed.as_secs_f64() * 1000.0, &attrs);
        commands.add(1, &attrs);
    })
}

fn redact_mongo_error(e: &mongodb::error::Error) -> String {
    // The driver's parse errors can quote the URI; never echo it back.
    format!("invalid connection string ({})", e.kind.as_ref().to_string().split(':').next().unwrap_or("parse error"))
}

/// Builds a Redis client for the configured URL and starts connecting (and reconnecting)
/// in the background. Callers must treat Redis as optional: it is a cache and a home for
/// shared counters, never the system of record; every command fails within 500 ms.
pub fn redis(config: &RedisConfig) -> Result<fred::clients::Client, ConfigError> {
    use fred::prelude::*;
    let mut cfg = fred::types::config::Config::from_url(config.url.expose_secret())
        .map_err(|_| ConfigError::key("redis.url", "invalid redis URL"))?;
    // Redis down when a service starts must not mean "never connect": the reconnect policy
    // applies to the first connection too (fred's default gives up after one try).
    cfg.fail_fast = false;
    let client = Builder::from_config(cfg)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(2);
            c.internal_command_timeout = Duration::from_secs(2);
            c.max_command_attempts = 1;
        })
        // A cache must fail fast: callers fall back to MongoDB or in-process limits.
        .with_performance_config(|p| p.default_command_timeout = Duration::from_millis(500))
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()
        .map_err(|_| ConfigError::key("redis.url", "invalid redis configuration"))?;
    let _connection_task = client.connect();
    Ok(client)
}

/// Whether a MongoDB error is a duplicate-key violation (a unique index did its job).
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

pub mod cache;
pub mod testing;

/// One page of `coll` matching `filter` in `sort` order (one document more is read to know
/// whether more follow).
pub async fn find_page(
    coll: &mongodb::Collection<bson::Document>,
    filter: bson::Document,
    sort: bson::Document,
    size: usize,
) -> mongodb::error::Result<(Vec<bson::Document>, bool)> {
    use futures::TryStreamExt;
    let limit = i64::try_from(size).unwrap_or(i64::MAX).saturating_add(1);
    let mut docs: Vec<bson::Document> = coll.find(filter).sort(sort).limit(limit).await?.try_collect().await?;
    let more = docs.len() > size;
    docs.truncate(size);
    Ok((docs, more))
}

/// A stored BSON date as a protobuf timestamp.
pub fn doc_timestamp(d: &bson::Document, field: &str) -> Option<prost_types::Timestamp> {
    d.get_datetime(field).ok().map(|t| prost_types::Timestamp::from(t.to_system_time()))
}

/// Whether `e` says a stored document could not be read into its type (a field missing or of
/// another type): not an outage to retry, but data to repair (DATA_LOSS).
pub fn is_unreadable(e: &mongodb::error::Error) -> bool {
    matches!(*e.kind, mongodb::error::ErrorKind::BsonDeserialization(_))
}

/// The message of a DATA_LOSS answer for an unreadable stored document.
pub const UNREADABLE: &str = "a stored document cannot be read; the operator has been alerted in the service logs";

#[cfg(test)]
mod unreadable_tests {
    #[test]
    fn only_documents_that_do_not_fit_their_type_are_unreadable() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Item {
            version: i64,
        }
        let wrong: mongodb::error::Error =
            bson::from_document::<Item>(bson::doc! { "version": "seven" }).unwrap_err().into();
        assert!(super::is_unreadable(&wrong));
        let down = mongodb::error::Error::custom("connection refused");
        assert!(!super::is_unreadable(&down));
    }
}
