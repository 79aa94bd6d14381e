//! MongoDB, the system of record: the connection (majority reads and journaled majority
//! writes, retryable reads and writes, primary reads, TLS required in production; command
//! metrics) and how its errors are read.
//!
//! Transactions need nothing from here: every one runs through the driver's
//! `session.start_transaction().and_run(..)`, which is the convenient transaction API of the
//! drivers' specification. It retries the whole body on a `TransientTransactionError` label
//! (with jittered backoff, 5 ms growing to at most 500 ms), retries the commit alone on
//! `UnknownTransactionCommitResult`, aborts on any other error, and gives up after 120 s in
//! all (mongodb 3.9 `client/session/action.rs`). A transaction inherits the client's read and
//! write concerns and read preference set here.

use std::time::Duration;

use mongodb::options::{
    Acknowledgment, ClientOptions, ReadConcern, ReadConcernLevel, ReadPreference, SelectionCriteria, Tls,
};
use secrecy::ExposeSecret;
use ts_config::{ConfigError, MongoConfig};
use ts_contract::status::{Reason, failure};

/// The configuration key every connection problem is reported under.
const URI_KEY: &str = "mongodb.uri";

/// Opens the configured database: majority reads, majority journaled writes, retryable reads
/// and writes, reads from the primary. With `production`, a connection without verified TLS
/// is refused ([`production_check`]). `app_name` names the service in the server's logs.
pub async fn mongo(config: &MongoConfig, production: bool, app_name: &str) -> Result<mongodb::Database, ConfigError> {
    let mut opts = ClientOptions::parse(config.uri.expose_secret())
        .await
        .map_err(|e| ConfigError::key(URI_KEY, redact_mongo_error(&e)))?;
    production_check(&opts, production)?;
    pin_consistency(&mut opts)?;
    opts.app_name = Some(app_name.to_owned());
    opts.command_event_handler = Some(command_metrics());
    opts.server_selection_timeout = Some(opts.server_selection_timeout.unwrap_or(Duration::from_secs(10)));
    let client = mongodb::Client::with_options(opts).map_err(|e| ConfigError::key(URI_KEY, redact_mongo_error(&e)))?;
    Ok(client.database(&config.database))
}

/// With `production`, refuses a connection string whose connections would not be TLS with a
/// verified server certificate: no `tls=true` (or `ssl=true`), `tls=false`, or
/// `tlsInsecure`/`tlsAllowInvalidCertificates=true`. A `mongodb+srv://` string (Atlas) is TLS
/// unless it says `tls=false`: the driver's parser sets `tls` to enabled for it, so it is read
/// here as any other. The error names `mongodb.uri` and never quotes the string (it may carry
/// credentials).
pub fn production_check(options: &ClientOptions, production: bool) -> Result<(), ConfigError> {
    if !production {
        return Ok(());
    }
    match &options.tls {
        Some(Tls::Enabled(tls)) if tls.allow_invalid_certificates != Some(true) => Ok(()),
        Some(Tls::Enabled(_)) => Err(ConfigError::key(
            URI_KEY,
            "production = true refuses tlsInsecure and tlsAllowInvalidCertificates: the server's certificate \
             must be verified",
        )),
        Some(Tls::Disabled) | None => Err(ConfigError::key(
            URI_KEY,
            "production = true requires TLS to MongoDB: add tls=true to the connection string, or use \
             mongodb+srv:// (TLS unless tls=false)",
        )),
    }
}

/// Sets the consistency every service is written against, whatever the connection string
/// says, and refuses a string that asks for something weaker (silently overriding an
/// operator's explicit choice would hide a mistake; an Atlas string's `retryWrites=true&
/// w=majority` agrees and passes):
///
/// - writes `w: majority, j: true`: an acknowledged write survives a failover and a crash
///   (DESIGN.md §2). Memberships, data keys and invitations must never roll back after their
///   caller was answered: a rolled-back data key would leave ciphertext nobody can open, a
///   rolled-back membership or spent invitation would undo a revocation or a cap. Every
///   collection uses the client's concern, so no collection overrides it.
/// - reads `readConcern: majority`: never an answer that a failover could roll back (a member
///   seen that is then gone). With majority writes on the primary, a read after an
///   acknowledged write sees it, so read-your-writes holds.
/// - reads from the primary: a secondary may lag, and a revocation must take effect on the
///   very next request (DESIGN.md §5).
/// - `retryWrites` and `retryReads`: one retry on a failover or a dropped connection, exactly
///   once for writes (the server deduplicates by transaction number). Refused when the
///   string turns them off; on a deployment without sessions the driver does not retry anyway.
fn pin_consistency(opts: &mut ClientOptions) -> Result<(), ConfigError> {
    let refuse = |option: &str, wanted: &str| {
        ConfigError::key(
            URI_KEY,
            format!("the connection string's `{option}` is refused: teamshare runs with {wanted}; remove the option"),
        )
    };
    if opts.retry_writes == Some(false) {
        return Err(refuse("retryWrites", "retryable writes"));
    }
    if opts.retry_reads == Some(false) {
        return Err(refuse("retryReads", "retryable reads"));
    }
    if let Some(wc) = &opts.write_concern {
        if wc.w.as_ref().is_some_and(|w| *w != Acknowledgment::Majority) {
            return Err(refuse("w", "w=majority"));
        }
        if wc.journal == Some(false) {
            return Err(refuse("journal", "journaled writes"));
        }
    }
    if opts.read_concern.as_ref().is_some_and(|rc| rc.level != ReadConcernLevel::Majority) {
        return Err(refuse("readConcernLevel", "readConcernLevel=majority"));
    }
    if !matches!(opts.selection_criteria, None | Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))) {
        return Err(refuse("readPreference", "readPreference=primary"));
    }
    // Keep the string's `wtimeoutMS`, if any: a bound on waiting for the majority.
    let mut wc = opts.write_concern.take().unwrap_or_default();
    wc.w = Some(Acknowledgment::Majority);
    wc.journal = Some(true);
    opts.write_concern = Some(wc);
    opts.read_concern = Some(ReadConcern::majority());
    opts.selection_criteria = Some(SelectionCriteria::ReadPreference(ReadPreference::Primary));
    opts.retry_writes = Some(true);
    opts.retry_reads = Some(true);
    Ok(())
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
    use mongodb::options::{
        Acknowledgment, ClientOptions, ConnectionString, ReadConcernLevel, ReadPreference, SelectionCriteria,
    };

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

    /// Options as the driver parses `uri` (no DNS: none of these is `mongodb+srv`).
    async fn parsed(uri: &str) -> ClientOptions {
        ClientOptions::parse(uri).await.unwrap()
    }

    #[tokio::test]
    async fn production_refuses_mongodb_without_verified_tls_and_never_quotes_the_uri() {
        for uri in [
            "mongodb://u:hunter2@db1.internal:27017/",
            "mongodb://u:hunter2@db1.internal/?tls=false",
            "mongodb://u:hunter2@db1.internal/?tls=true&tlsInsecure=true",
            "mongodb://u:hunter2@db1.internal/?tls=true&tlsAllowInvalidCertificates=true",
        ] {
            let opts = parsed(uri).await;
            let e = super::production_check(&opts, true).unwrap_err().to_string();
            assert!(e.contains("mongodb.uri") && e.contains("production"), "{uri}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("db1"), "{uri}: {e}");
            assert!(super::production_check(&opts, false).is_ok(), "{uri}");
        }
        for uri in [
            "mongodb://u:p@db1.internal:27017,db2.internal:27017/?replicaSet=rs0&tls=true",
            "mongodb://db1.internal/?ssl=true&authMechanism=MONGODB-AWS&authSource=$external",
        ] {
            assert!(super::production_check(&parsed(uri).await, true).is_ok(), "{uri}");
        }
        // mongodb+srv (Atlas) is TLS unless it says otherwise; checked on what the parser sets,
        // since resolving the SRV record would need DNS.
        let srv_tls = |uri: &str| ConnectionString::parse(uri).unwrap().tls;
        let mut opts = parsed("mongodb://db1.internal/").await;
        opts.tls = srv_tls("mongodb+srv://cluster0.example.net/?authMechanism=MONGODB-AWS&authSource=$external");
        assert!(super::production_check(&opts, true).is_ok());
        opts.tls = srv_tls("mongodb+srv://cluster0.example.net/?tls=false");
        assert!(super::production_check(&opts, true).is_err());
    }

    #[tokio::test]
    async fn consistency_is_pinned_and_a_weaker_choice_in_the_uri_is_refused_by_name() {
        for (option, uri) in [
            ("retryWrites", "mongodb://u:hunter2@db1/?retryWrites=false"),
            ("retryReads", "mongodb://u:hunter2@db1/?retryReads=false"),
            ("`w`", "mongodb://u:hunter2@db1/?w=1"),
            ("journal", "mongodb://u:hunter2@db1/?journal=false"),
            ("readConcernLevel", "mongodb://u:hunter2@db1/?readConcernLevel=local"),
            ("readPreference", "mongodb://u:hunter2@db1/?readPreference=secondaryPreferred"),
        ] {
            let mut opts = parsed(uri).await;
            let e = super::pin_consistency(&mut opts).unwrap_err().to_string();
            assert!(e.contains("mongodb.uri") && e.contains(option), "{uri}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("db1"), "{uri}: {e}");
        }
        let atlas_like = "mongodb://db1/?retryWrites=true&w=majority&wtimeoutMS=5000&readPreference=primary";
        let mut opts = parsed(atlas_like).await;
        super::pin_consistency(&mut opts).unwrap();
        let wc = opts.write_concern.clone().unwrap();
        assert_eq!((wc.w, wc.journal), (Some(Acknowledgment::Majority), Some(true)));
        assert_eq!(wc.w_timeout, Some(std::time::Duration::from_secs(5)), "the string's wtimeoutMS is kept");
        assert_eq!(opts.read_concern.as_ref().map(|rc| rc.level.clone()), Some(ReadConcernLevel::Majority));
        assert!(matches!(opts.selection_criteria, Some(SelectionCriteria::ReadPreference(ReadPreference::Primary))));
        assert_eq!((opts.retry_writes, opts.retry_reads), (Some(true), Some(true)));
        let mut bare = parsed("mongodb://127.0.0.1:27017/?directConnection=true").await;
        super::pin_consistency(&mut bare).unwrap();
        assert_eq!(bare.write_concern.as_ref().and_then(|wc| wc.w.clone()), Some(Acknowledgment::Majority));
    }
}
