//! The development certificate authority: an internal CA, one certificate per service
//! identity, the public listener's certificate and the development secrets, written with
//! private files locked down. For `teamshare certs`, `make dev` and the tests; production
//! certificates come from cert-manager (k8s/).
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use ts_contract::Peer;

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
}
