//! The runtime every teamshare service runs in: the gRPC server wrapper (mTLS, allowlist,
//! request ids, metrics, health, graceful shutdown), internal mTLS clients, TLS material,
//! telemetry, and recording audit events in folders' trail.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod layers;
pub mod server;
pub mod telemetry;
pub mod tls;

use std::path::Path;

use tls::MtlsMaterial;
use ts_config::{Config, ConfigError, ServiceConfig, require};
use ts_contract::Peer;

/// Why a service could not start or stopped with an error. Displayed as one line.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad or missing configuration, naming the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    /// A store could not be prepared at start (for example, creating indexes).
    #[error("startup failed: {0}")]
    Startup(String),
}

/// Loads an internal service's mTLS material from `[internal_tls]` and its own section
/// (named after the service).
pub fn service_mtls(config: &Config, service: Peer, section: &ServiceConfig) -> Result<MtlsMaterial, ConfigError> {
    let ca = require(&config.internal_tls, "internal_tls")?;
    material(&ca.ca_cert, service.name(), &section.cert, &section.key)
}

/// Loads mTLS material naming `section.cert` and `section.key` in errors.
pub fn material(ca: &Path, section: &str, cert: &Path, key: &Path) -> Result<MtlsMaterial, ConfigError> {
    MtlsMaterial::load(
        ("internal_tls.ca_cert", ca),
        (&format!("{section}.cert"), cert),
        (&format!("{section}.key"), key),
    )
}

/// The drain delay before a server stops accepting, from `drain_delay_ms`.
pub fn drain_delay(config: &Config) -> std::time::Duration {
    std::time::Duration::from_millis(config.drain_delay_ms)
}

/// Default deadline of a call from one internal service to another.
pub const INTERNAL_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens an mTLS channel to the internal service `callee`, as configured in `[upstreams]`.
pub fn upstream(
    config: &Config,
    callee: Peer,
    material: &MtlsMaterial,
) -> Result<client::InternalChannel, ConfigError> {
    client::connect(callee.name(), config.upstreams.get(callee.name())?, material, INTERNAL_CALL_TIMEOUT)
}
