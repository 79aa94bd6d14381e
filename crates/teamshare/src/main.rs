//! `teamshare`: serve one service, run the whole stack on one machine, migrate the schema, or
//! write development certificates.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use teamshare::{Migration, Service, run_stack};
use ts_config::Config;

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers (HTTP/2 frames, protobuf messages, futures) across two worker threads, and the
/// system allocator's `malloc`/`free` took about a third of the gateway's CPU in the read
/// profile (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "teamshare", version, about = "teamshare: shared folders for a database GUI, as gRPC services")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service (one per Kubernetes Deployment).
    Serve {
        /// Which service.
        #[arg(value_enum)]
        service: Service,
        /// Configuration file; `TS_`-prefixed environment variables override it.
        #[arg(long, env = "TS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Run all five services in this process, each on its own loopback port, over mTLS.
    Dev {
        /// Configuration file; `TS_`-prefixed environment variables override it.
        #[arg(long, env = "TS_CONFIG", default_value = "deploy/dev.toml")]
        config: PathBuf,
    },
    /// Create every service's indexes and record its schema version in `schema_migrations`,
    /// once per version: run it before a new release's replicas start (with production = true
    /// they refuse an older schema). Idempotent; safe to run twice or concurrently.
    Migrate {
        /// Configuration file (only `[mongodb]` and `production` are read); `TS_`-prefixed
        /// environment variables override it.
        #[arg(long, env = "TS_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Write a development CA, a certificate and key per service and for the operator, the
    /// gateway's public server certificate, and a local master key.
    Certs {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Do nothing when the directory already holds a CA (never replace a CA by accident).
        #[arg(long)]
        if_missing: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ts_runtime::tls::install_crypto_provider();
    let result = match cli.command {
        Command::Certs { out, if_missing } if if_missing && out.join("ca.pem").exists() => {
            println!("{} already holds a CA; leaving it", out.display());
            Ok(())
        }
        Command::Certs { out, .. } => ts_devca::write_dev_certs(&out)
            .map(|p| println!("wrote development certificates to {}", p.dir.display()))
            .map_err(|e| format!("cannot write certificates to {}: {e}", out.display())),
        Command::Serve { service, config } => run(config, Some(service)),
        Command::Dev { config } => run(Some(config), None),
        Command::Migrate { config } => migrate(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("teamshare: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(path: Option<PathBuf>, only: Option<Service>) -> Result<(), String> {
    let config = Config::load(path.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let name = only.map_or("teamshare-dev", |s| s.name());
        let _telemetry = ts_runtime::telemetry::init(name, &config.telemetry).map_err(|e| e.to_string())?;
        let services: Vec<Service> = only.map_or(Service::ALL.to_vec(), |s| vec![s]);
        let mut listeners = Vec::new();
        for service in services {
            listeners.push((service, service.bind(&config).await.map_err(|e| e.to_string())?));
        }
        if let Some((_, gw)) = listeners.iter().find(|(s, _)| *s == Service::Gateway) {
            tracing::info!(addr = %gw.local_addr().map_err(|e| e.to_string())?, "gateway listening");
        }
        run_stack(
            Arc::new(config),
            listeners,
            Arc::new(ts_contract::clock::SystemClock),
            ts_runtime::server::shutdown_signal(),
        )
        .await
        .map_err(|e| e.to_string())
    })
}

fn migrate(path: Option<PathBuf>) -> Result<(), String> {
    let config = Config::load(path.as_deref(), std::env::vars()).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let _telemetry =
            ts_runtime::telemetry::init("teamshare-migrate", &config.telemetry).map_err(|e| e.to_string())?;
        for (service, migration) in teamshare::migrate(&config).await.map_err(|e| e.to_string())? {
            let what = match migration {
                Migration::Applied { from: None } => "indexes created; schema version recorded".to_owned(),
                Migration::Applied { from: Some(v) } => format!("migrated from schema version {v}"),
                Migration::Current => "already at this build's schema version; nothing to do".to_owned(),
                Migration::Newer(v) => {
                    format!("the database holds newer schema version {v} (this is an older build); left as is")
                }
            };
            println!("{}: {what}", service.name());
        }
        Ok(())
    })
}
