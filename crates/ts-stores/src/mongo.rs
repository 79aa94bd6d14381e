//! MongoDB, the system of record: the connection (majority, journaled writes; command
//! metrics) and how its errors are read.

use std::time::Duration;

use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use secrecy::ExposeSecret;
use ts_config::{ConfigError, MongoConfig};
use ts_contract::status::{Reason, failure};

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

/// Whether a MongoDB error is a duplicate-key violation (a unique index did its job).
pub fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => e.to_string().contains("E11000"),
    }
}

/// Whether `e` says a stored document could not be read into its type (a field missing or of
/// another type): not an outage to retry, but data to repair (DATA_LOSS).
pub fn is_unreadable(e: &mongodb::error::Error) -> bool {
    matches!(*e.kind, mongodb::error::ErrorKind::BsonDeserialization(_))
}

/// The answer to a failed store call of `service`, whose cause is logged here once and never
/// sent: DATA_LOSS for a stored document that does not fit its type (data to repair), else
/// UNAVAILABLE with `unavailable` (an outage to retry).
pub fn store_status(e: &mongodb::error::Error, service: &str, unavailable: &str) -> tonic::Status {
    if is_unreadable(e) {
        tracing::error!(error = %e, service, "a stored document cannot be read");
        return failure(tonic::Code::DataLoss, Reason::DataLoss, UNREADABLE);
    }
    tracing::error!(error = %e, service, "store failed");
    failure(tonic::Code::Unavailable, Reason::Unavailable, unavailable)
}

/// The message of a DATA_LOSS answer for an unreadable stored document.
pub const UNREADABLE: &str = "a stored document cannot be read; the operator has been alerted in the service logs";

#[cfg(test)]
mod tests {
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
