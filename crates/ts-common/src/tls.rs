//! The one place that builds TLS: development certificates, mTLS server and client
//! configurations for internal services, and the gateway's public server configuration.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ConfigError, check_file};
use crate::identity::Peer;

/// Installs ring as the process-wide rustls crypto provider. Call once at start; later
/// calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct PemPair {
    /// Certificate chain, PEM.
    pub cert: String,
    /// Private key, PEM.
    pub key: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").field("key", &"<redacted>").finish_non_exhaustive()
    }
}

/// A certificate authority that can issue service certificates.
pub struct DevCa {
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

impl DevCa {
    /// Creates a new self-signed CA with the given common name.
    pub fn generate(common_name: &str) -> Result<DevCa, rcgen::Error> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "teamshare development");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, 3650);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(DevCa { key, cert })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's certificate and key, PEM.
    pub fn pem_pair(&self) -> PemPair {
        PemPair { cert: self.cert.pem(), key: self.key.serialize_pem() }
    }

    /// Issues a certificate for an internal identity: URI SAN `spiffe://teamshare/<name>`,
    /// DNS names for the service in Kubernetes and on loopback, usable as server and client.
    pub fn issue_service(&self, peer: Peer) -> Result<PemPair, rcgen::Error> {
        let name = peer.name();
        let dns = vec![
            name.to_owned(),
            format!("{name}.teamshare.svc"),
            format!("{name}.teamshare.svc.cluster.local"),
            "localhost".to_owned(),
        ];
        let uri = rcgen::Ia5String::try_from(peer.spiffe_id())?;
        self.issue(
            name,
            dns,
            vec![SanType::URI(uri)],
            &[ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// Issues a TLS server certificate for the given DNS names (and loopback addresses).
    pub fn issue_server(&self, common_name: &str, dns: &[&str]) -> Result<PemPair, rcgen::Error> {
        let dns = dns.iter().map(|s| s.to_string()).collect();
        self.issue(common_name, dns, vec![], &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    fn issue(
        &self,
        common_name: &str,
        dns: Vec<String>,
        extra_sans: Vec<SanType>,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<PemPair, rcgen::Error> {
        let mut params = CertificateParams::new(dns)?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.subject_alt_names.extend(extra_sans);
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params.extended_key_usages = usages.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        set_validity(&mut params, 365);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(PemPair { cert: cert.pem(), key: key.serialize_pem() })
    }
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Paths of the files `write_dev_certs` creates.
#[derive(Debug, Clone)]
pub struct DevCertPaths {
    /// Directory holding them all.
    pub dir: PathBuf,
}

impl DevCertPaths {
    /// The internal CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// An identity's certificate.
    pub fn cert(&self, peer: Peer) -> PathBuf {
        self.dir.join(format!("{}.pem", peer.name()))
    }
    /// An identity's private key.
    pub fn key(&self, peer: Peer) -> PathBuf {
        self.dir.join(format!("{}.key", peer.name()))
    }
    /// The gateway's public server certificate.
    pub fn public_cert(&self) -> PathBuf {
        self.dir.join("gateway-public.pem")
    }
    /// The gateway's public server key.
    pub fn public_key(&self) -> PathBuf {
        self.dir.join("gateway-public.key")
    }
    /// The `local` KMS provider's master key.
    pub fn local_master_key(&self) -> PathBuf {
        self.dir.join("local-master.key")
    }
    /// auth's access-token signing key (Ed25519, PKCS#8 PEM).
    pub fn token_signing_key(&self) -> PathBuf {
        self.dir.join("token-signing.pem")
    }
    /// auth's secret for hashing verification codes.
    pub fn auth_secret(&self) -> PathBuf {
        self.dir.join("auth-secret.key")
    }
}

/// Writes a development CA, one certificate and key per identity (services and operator),
/// a public server certificate for the gateway, and a local master key. Keys are written
/// with mode 0600.
pub fn write_dev_certs(dir: &Path) -> std::io::Result<DevCertPaths> {
    let paths = DevCertPaths { dir: dir.to_owned() };
    std::fs::create_dir_all(dir)?;
    let err = |e: rcgen::Error| std::io::Error::other(e.to_string());
    let ca = DevCa::generate("teamshare development CA").map_err(err)?;
    let ca_pair = ca.pem_pair();
    std::fs::write(paths.ca_cert(), &ca_pair.cert)?;
    write_private(&dir.join("ca.key"), ca_pair.key.as_bytes())?;
    for peer in Peer::ALL {
        let pair = ca.issue_service(peer).map_err(err)?;
        std::fs::write(paths.cert(peer), &pair.cert)?;
        write_private(&paths.key(peer), pair.key.as_bytes())?;
    }
    let public = ca.issue_server("teamshare gateway", &["localhost", "gateway", "teamshare.local"]).map_err(err)?;
    std::fs::write(paths.public_cert(), &public.cert)?;
    write_private(&paths.public_key(), public.key.as_bytes())?;
    for path in [paths.local_master_key(), paths.auth_secret()] {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_private(&path, &secret)?;
    }
    write_private(&paths.token_signing_key(), generate_signing_key().map_err(err)?.as_bytes())?;
    Ok(paths)
}

/// A new Ed25519 private key for signing access tokens, PKCS#8 PEM.
pub fn generate_signing_key() -> Result<String, rcgen::Error> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ED25519)?.serialize_pem())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)
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

    /// From PEM text already in memory.
    pub fn from_pem(ca: &str, pair: &PemPair) -> Self {
        MtlsMaterial {
            ca: ca.as_bytes().to_vec(),
            cert: pair.cert.as_bytes().to_vec(),
            key: pair.key.as_bytes().to_vec(),
        }
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
    fn service_certificates_name_their_identity() {
        let ca = DevCa::generate("test").unwrap();
        for peer in Peer::ALL {
            let pair = ca.issue_service(peer).unwrap();
            let der = rustls_pemfile_first(&pair.cert);
            assert_eq!(Peer::from_cert_der(&der), Some(peer));
        }
        let public = ca.issue_server("gw", &["localhost"]).unwrap();
        assert_eq!(Peer::from_cert_der(&rustls_pemfile_first(&public.cert)), None);
    }

    fn rustls_pemfile_first(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    #[test]
    fn dev_certs_are_written_with_private_keys_locked_down() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = write_dev_certs(dir.path()).unwrap();
        let mode = std::fs::metadata(paths.key(Peer::Auth)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(paths.local_master_key()).unwrap().len(), 32);
    }

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
