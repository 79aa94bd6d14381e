//! The runtime every teamshare service runs in: the gRPC server wrapper (mTLS, allowlist,
//! request ids, metrics, health, graceful shutdown), internal mTLS clients, TLS material,
//! telemetry, and recording audit events in folders' trail.
#![forbid(unsafe_code)]

pub mod audit;
pub mod client;
pub mod layers;
pub mod listener;
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

/// What a benchmark-only build (a service built with its `insecure-bench` feature, security
/// checks off) must find in the environment before it serves anything.
pub const INSECURE_BENCH_CONSENT: (&str, &str) = ("TEAMSHARE_INSECURE_BENCH", "measure-only-no-security");

/// Called by the build of a service whose `insecure-bench` feature is on: refuses to start
/// it without [`INSECURE_BENCH_CONSENT`] in the environment, and always with `production`.
pub fn insecure_bench_consent(service: &str, config: &Config) -> Result<(), RunError> {
    let (var, value) = INSECURE_BENCH_CONSENT;
    if config.production || std::env::var(var).as_deref() != Ok(value) {
        return Err(RunError::Startup(format!(
            "{service} is a benchmark-only build with its security checks off; it serves only with \
             {var}={value} and never with production = true"
        )));
    }
    tracing::error!(service, "BENCHMARK-ONLY BUILD: security checks are off; never expose this process");
    Ok(())
}

/// Loads an internal service's mTLS material from `[internal_tls]` and its own section
/// (named after the service), re-read every `cert_reload_secs`.
pub fn service_mtls(config: &Config, service: Peer, section: &ServiceConfig) -> Result<MtlsMaterial, ConfigError> {
    let ca = require(&config.internal_tls, "internal_tls")?;
    material(config, &ca.ca_cert, service.name(), &section.cert, &section.key)
}

/// Loads mTLS material naming `section.cert` and `section.key` in errors, re-read every
/// `cert_reload_secs`.
pub fn material(
    config: &Config,
    ca: &Path,
    section: &str,
    cert: &Path,
    key: &Path,
) -> Result<MtlsMaterial, ConfigError> {
    MtlsMaterial::reloading(
        ("internal_tls.ca_cert", ca),
        (&format!("{section}.cert"), cert),
        (&format!("{section}.key"), key),
        config.cert_reload(),
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
    upstream_with_deadline(config, callee, material, INTERNAL_CALL_TIMEOUT)
}

/// As [`upstream`], for calls that may take longer than [`INTERNAL_CALL_TIMEOUT`] (a
/// person's export or erasure): every call's deadline is `timeout` (or the caller's, if
/// sooner).
pub fn upstream_with_deadline(
    config: &Config,
    callee: Peer,
    material: &MtlsMaterial,
    timeout: std::time::Duration,
) -> Result<client::InternalChannel, ConfigError> {
    let settings = client::Settings { timeout, refresh: config.upstream_dns_refresh() };
    client::connect(callee.name(), config.upstreams.get(callee.name())?, material, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_benchmark_only_build_refuses_to_start_without_consent_and_always_in_production() {
        // Without consent (unless whoever runs the tests has exported it).
        if std::env::var(INSECURE_BENCH_CONSENT.0).is_err() {
            let err = insecure_bench_consent("folders", &Config::default()).unwrap_err().to_string();
            assert!(err.contains("benchmark-only") && err.contains(INSECURE_BENCH_CONSENT.0), "{err}");
        }
        let production = Config { production: true, ..Config::default() };
        assert!(insecure_bench_consent("gateway", &production).is_err());
    }
}
