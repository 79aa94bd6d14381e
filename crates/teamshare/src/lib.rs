//! The `teamshare` binary's library half: starting one service or the whole stack from a
//! configuration, and migrating every service's schema, shared by `main` and by the test kit.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use ts_config::{Config, ConfigError, require};
use ts_contract::Peer;
use ts_contract::clock::SharedClock;
use ts_runtime::RunError;
use ts_runtime::server::ServiceServer;
pub use ts_stores::Migration;

/// One of the five services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// Users, sessions, licenses.
    Auth,
    /// Data keys.
    Keyvault,
    /// Folders, members, items, audit.
    Folders,
    /// Invitations.
    Invitations,
    /// The public endpoint.
    Gateway,
}

impl Service {
    /// All five, in start order (callees before callers, though connections are lazy).
    pub const ALL: [Service; 5] =
        [Service::Auth, Service::Keyvault, Service::Folders, Service::Invitations, Service::Gateway];

    /// The config section and short name.
    pub fn name(self) -> &'static str {
        self.peer().name()
    }

    /// The service's identity, whose name is also its config section and upstream key.
    pub fn peer(self) -> Peer {
        match self {
            Service::Auth => Peer::Auth,
            Service::Keyvault => Peer::Keyvault,
            Service::Folders => Peer::Folders,
            Service::Invitations => Peer::Invitations,
            Service::Gateway => Peer::Gateway,
        }
    }

    /// The configured listen address.
    pub fn listen_addr(self, config: &Config) -> Result<SocketAddr, ConfigError> {
        Ok(match self {
            Service::Auth => require(&config.auth, "auth")?.listen,
            Service::Keyvault => require(&config.keyvault, "keyvault")?.listen,
            Service::Folders => require(&config.folders, "folders")?.listen,
            Service::Invitations => require(&config.invitations, "invitations")?.listen,
            Service::Gateway => require(&config.gateway, "gateway")?.listen,
        })
    }

    /// Binds the configured listen address, naming the key when that fails.
    pub async fn bind(self, config: &Config) -> Result<TcpListener, ConfigError> {
        let addr = self.listen_addr(config)?;
        TcpListener::bind(addr)
            .await
            .map_err(|e| ConfigError::key(format!("{}.listen", self.name()), format!("cannot bind {addr}: {e}")))
    }

    /// Builds this service from `config`; `clock` is its time source (the system clock
    /// outside tests).
    pub async fn build(self, config: &Config, clock: SharedClock) -> Result<ServiceServer, RunError> {
        match self {
            Service::Auth => ts_auth::build(config, clock).await,
            Service::Keyvault => ts_keyvault::build(config, clock).await,
            Service::Folders => ts_folders::build(config, clock).await,
            Service::Invitations => ts_invitations::build(config, clock).await,
            Service::Gateway => ts_gateway::build(config, clock).await,
        }
    }

    /// `teamshare migrate` for this service: makes its indexes and records its schema version,
    /// unless that version (or a newer one) is recorded already. `None` for the gateway,
    /// which owns no collections.
    pub async fn migrate(self, config: &Config) -> Result<Option<Migration>, RunError> {
        Ok(Some(match self {
            Service::Auth => ts_auth::migrate(config).await?,
            Service::Keyvault => ts_keyvault::migrate(config).await?,
            Service::Folders => ts_folders::migrate(config).await?,
            Service::Invitations => ts_invitations::migrate(config).await?,
            Service::Gateway => return Ok(None),
        }))
    }

    /// Builds this service, then serves it on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        config: &Config,
        clock: SharedClock,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), RunError> {
        self.build(config, clock).await?.serve(listener, shutdown).await?;
        Ok(())
    }
}

/// `teamshare migrate`: brings every service's collections to this build's schema, one
/// service after the other, and says what each did. Run it once per release, before the new
/// replicas start (with `production = true` they refuse an older schema); it is idempotent,
/// and safe to run twice or from two places at once. Reads `[mongodb]` (and `production`).
pub async fn migrate(config: &Config) -> Result<Vec<(Service, Migration)>, RunError> {
    let mut done = Vec::new();
    for service in Service::ALL {
        if let Some(migration) = service.migrate(config).await? {
            tracing::info!(service = service.name(), ?migration, "schema migration");
            done.push((service, migration));
        }
    }
    Ok(done)
}

/// Runs all five services in this process, each on its own listener and still talking over
/// mTLS, until `shutdown` completes. If one fails, the others are stopped and its error is
/// returned.
pub async fn run_stack(
    config: Arc<Config>,
    listeners: Vec<(Service, TcpListener)>,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for (service, listener) in listeners {
        let config = config.clone();
        let clock = clock.clone();
        let mut rx = stop_rx.clone();
        tasks.spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            (service, service.serve(&config, clock, listener, stop).await)
        });
    }
    let trigger = stop_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = trigger.send(true);
    });
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, Ok(()))) => {}
            Ok((service, Err(e))) => {
                tracing::error!(service = service.name(), error = %e, "service failed; stopping the stack");
                let _ = stop_tx.send(true);
                first_error.get_or_insert(e);
            }
            Err(join) => {
                tracing::error!(error = %join, "service task panicked; stopping the stack");
                let _ = stop_tx.send(true);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
