//! The one place that builds TLS for serving and calling: mTLS server and client
//! configurations for internal services, and the gateway's public server configuration.

use std::path::Path;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use ts_config::{ConfigError, check_file};

/// Installs ring as the process-wide rustls crypto provider. Call once at start; later
/// calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    check_file(key, path)?;
    let bytes =
        std::fs::read(path).map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ConfigError::key(key, format!("{} holds no PEM block", path.display())));
    }
    Ok(bytes)
}

/// Loaded mTLS material of one internal identity: its certificate and key, and the CA.
#[derive(Clone)]
pub struct MtlsMaterial {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for MtlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsMaterial").finish_non_exhaustive()
    }
}

impl MtlsMaterial {
    /// Reads PEM files; the keys name the config entries, for error messages.
    pub fn load(ca: (&str, &Path), cert: (&str, &Path), key: (&str, &Path)) -> Result<Self, ConfigError> {
        Ok(MtlsMaterial { ca: read(ca.0, ca.1)?, cert: read(cert.0, cert.1)?, key: read(key.0, key.1)? })
    }

    /// Server side of mTLS: presents this identity and requires a client certificate
    /// chaining to the internal CA. Anything else fails the handshake.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(false)
            .timeout(std::time::Duration::from_secs(10))
    }

    /// Client side of mTLS: trusts only the internal CA, expects `server_name` in the
    /// server's certificate, and presents this identity.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .domain_name(server_name)
    }
}

/// Server-only TLS for the gateway's public listener: clients prove who they are with
/// access tokens, not certificates.
pub fn public_server_config(cert: (&str, &Path), key: (&str, &Path)) -> Result<ServerTlsConfig, ConfigError> {
    let (cert, key) = (read(cert.0, cert.1)?, read(key.0, key.1)?);
    Ok(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)).timeout(std::time::Duration::from_secs(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_cert_file_names_the_key() {
        let e = MtlsMaterial::load(
            ("internal_tls.ca_cert", Path::new("/nonexistent/ca.pem")),
            ("auth.cert", Path::new("/nonexistent/a.pem")),
            ("auth.key", Path::new("/nonexistent/a.key")),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("internal_tls.ca_cert") && e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
