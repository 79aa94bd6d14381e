//! The one place that builds TLS for serving and calling: mTLS server and client
//! configurations for internal services, and the gateway's public server configuration.
//!
//! Certificates are renewed under running processes (cert-manager rewrites the mounted
//! files), so every identity here is *reloading*: a task re-reads its files every
//! `cert_reload_secs` and, when they changed and still make a usable identity (the key
//! matches the certificate, every PEM block parses), swaps them in. Servers take the current
//! configuration for each new handshake; callers rebuild their connections with it
//! (`client.rs`). Established connections and the calls on them are untouched. Files that
//! changed but do not make a usable identity (a half-written rotation) are ignored until the
//! next change, and the previous identity keeps serving. A CA file may hold several CAs: during
//! a rotation the old and the new are both trusted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::sync::watch;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use ts_config::{ConfigError, check_file};

/// Installs ring as the process-wide rustls crypto provider. Call once at start; later
/// calls are harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long a TLS handshake (and a PROXY header before it) may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a PEM file named by config entry `key`, naming the key in every error.
pub(crate) fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    check_file(key, path)?;
    let bytes =
        std::fs::read(path).map_err(|e| ConfigError::key(key, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(ConfigError::key(key, format!("{} holds no PEM block", path.display())));
    }
    Ok(bytes)
}

/// The files of one identity, with the config keys that name them in errors.
#[derive(Clone)]
struct Files {
    ca: Option<(String, PathBuf)>,
    cert: (String, PathBuf),
    key: (String, PathBuf),
}

impl Files {
    fn read(&self) -> Result<Raw, ConfigError> {
        Ok(Raw {
            ca: self.ca.as_ref().map(|(k, p)| read(k, p)).transpose()?,
            cert: read(&self.cert.0, &self.cert.1)?,
            key: read(&self.key.0, &self.key.1)?,
        })
    }
}

/// The bytes of one reading.
#[derive(Clone, PartialEq, Eq)]
struct Raw {
    ca: Option<Vec<u8>>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// One checked reading of an identity's files, ready to serve and call with.
pub(crate) struct Loaded {
    raw: Raw,
    server: Arc<ServerConfig>,
    not_after: Option<i64>,
    /// The names the certificate carries (its SANs): a renewal keeps them.
    identity: Vec<String>,
}

impl Loaded {
    fn check(files: &Files, raw: Raw) -> Result<Loaded, ConfigError> {
        let (cert_key, key_key) = (&files.cert.0, &files.key.0);
        let chain = CertificateDer::pem_slice_iter(&raw.cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::key(cert_key, format!("unreadable certificate: {e}")))?;
        let leaf = chain.first().ok_or_else(|| ConfigError::key(cert_key, "no certificate in the file"))?.clone();
        let (not_after, identity) = x509_parser::parse_x509_certificate(&leaf)
            .map(|(_, c)| {
                let names = c
                    .subject_alternative_name()
                    .ok()
                    .flatten()
                    .map(|san| san.value.general_names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap_or_default();
                (c.validity().not_after.timestamp(), names)
            })
            .map_err(|_| ConfigError::key(cert_key, "unreadable certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&raw.key)
            .map_err(|e| ConfigError::key(key_key, format!("unreadable private key: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::key(cert_key, e.to_string()))?;
        let builder = match (&files.ca, &raw.ca) {
            (Some((ca_key, _)), Some(ca)) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    let cert = cert.map_err(|e| ConfigError::key(ca_key, format!("unreadable CA certificate: {e}")))?;
                    // A leaf pasted into the bundle would let its key holder mint any identity.
                    if !is_ca(&cert) {
                        return Err(ConfigError::key(
                            ca_key,
                            "holds a certificate that is not a CA (basicConstraints CA:TRUE, keyCertSign)",
                        ));
                    }
                    roots.add(cert).map_err(|e| ConfigError::key(ca_key, format!("unusable CA certificate: {e}")))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| ConfigError::key(ca_key, e.to_string()))?;
                // Our own certificate must chain to the bundle it is read with (and be valid
                // now): a mis-mounted Secret is refused, not served.
                let intermediates = chain.get(1..).unwrap_or_default();
                verifier.verify_client_cert(&leaf, intermediates, rustls::pki_types::UnixTime::now()).map_err(|e| {
                    ConfigError::key(cert_key, format!("does not chain to {ca_key} or is not valid now: {e}"))
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(chain, key)
            .map_err(|e| ConfigError::key(key_key, format!("does not fit the certificate in {cert_key}: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Loaded { raw, server: Arc::new(server), not_after: Some(not_after), identity })
    }

    /// Client side of mTLS with this identity: trusts only the CA bundle, expects
    /// `server_name` in the server's certificate.
    pub(crate) fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        let mut tls =
            ClientTlsConfig::new().identity(Identity::from_pem(&self.raw.cert, &self.raw.key)).domain_name(server_name);
        if let Some(ca) = &self.raw.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        tls
    }
}

/// Whether `der` is a CA certificate: basicConstraints CA:TRUE and, when key usage is
/// stated, keyCertSign.
fn is_ca(der: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return false };
    let ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let signs = cert.key_usage().ok().flatten().is_none_or(|k| k.value.key_cert_sign());
    ca && signs
}

/// An identity whose files are re-read while anything holds it.
#[derive(Clone)]
struct Reloading {
    current: Arc<watch::Sender<Arc<Loaded>>>,
    name: Arc<str>,
}

impl Reloading {
    fn load(files: Files) -> Result<Reloading, ConfigError> {
        let loaded = Loaded::check(&files, files.read()?)?;
        let name: Arc<str> = Arc::from(files.cert.0.as_str());
        let reloading = Reloading { current: Arc::new(watch::Sender::new(Arc::new(loaded))), name };
        reloading.report_expiry();
        Ok(reloading)
    }

    /// Starts re-reading the files every `every` (inside a Tokio runtime; a no-op outside
    /// one). The task ends when the last holder of this identity is dropped.
    fn watch(self, files: Files, every: Duration) -> Self {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watch_files(files, Arc::downgrade(&self.current), every, self.name.clone()));
        }
        self
    }

    fn now(&self) -> Arc<Loaded> {
        self.current.borrow().clone()
    }

    /// Seconds until the certificate in use expires, as a gauge: an alert fires long before
    /// a renewal that never arrived (or never got read) ends the service.
    fn report_expiry(&self) {
        let weak = Arc::downgrade(&self.current);
        let name = self.name.clone();
        let _gauge = opentelemetry::global::meter("teamshare")
            .f64_observable_gauge("tls.certificate.time_to_expiry")
            .with_unit("s")
            .with_description("Seconds until the certificate in use expires")
            .with_callback(move |observer| {
                let Some(current) = weak.upgrade() else { return };
                let Some(not_after) = current.borrow().not_after else { return };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0);
                observer.observe(
                    (not_after - now) as f64,
                    &[opentelemetry::KeyValue::new("tls.identity", name.to_string())],
                );
            })
            .build();
    }
}

async fn watch_files(files: Files, current: Weak<watch::Sender<Arc<Loaded>>>, every: Duration, name: Arc<str>) {
    let mut seen: Option<Raw> = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(current) = current.upgrade() else { return };
        // Off the runtime's workers: a hung volume must not stall serving.
        let reading = files.clone();
        let read = tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(move || reading.read()));
        let raw = match read.await {
            Ok(Ok(Ok(raw))) => raw,
            Ok(Ok(Err(e))) => {
                tracing::warn!(identity = %name, error = %e, "cannot re-read certificate files; keeping the ones in use");
                continue;
            }
            _ => {
                tracing::warn!(identity = %name, "re-reading certificate files hung; keeping the ones in use");
                continue;
            }
        };
        if current.borrow().raw == raw || seen.as_ref() == Some(&raw) {
            continue;
        }
        let checked = Loaded::check(&files, raw.clone())
            .and_then(|loaded| keeps_identity(&current.borrow(), loaded, &files.cert.0));
        match checked {
            Ok(loaded) => {
                current.send_replace(Arc::new(loaded));
                seen = None;
                tracing::info!(identity = %name, "certificate files changed: new connections use them");
            }
            Err(e) => {
                // A rotation caught half-written: the next change completes it.
                tracing::warn!(identity = %name, error = %e, "certificate files changed but do not make a usable identity; keeping the ones in use");
                seen = Some(raw);
            }
        }
    }
}

/// A renewal is the same identity, valid now: another service's certificate mounted by
/// mistake, or an expired one from a backup, is refused (serving it would be an outage, or
/// this process acting as someone else).
fn keeps_identity(current: &Loaded, next: Loaded, cert_key: &str) -> Result<Loaded, ConfigError> {
    if next.identity != current.identity {
        return Err(ConfigError::key(
            cert_key,
            format!("names {:?}, not {:?} as the certificate in use", next.identity, current.identity),
        ));
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    if next.not_after.is_some_and(|end| end <= now) {
        return Err(ConfigError::key(cert_key, "has expired"));
    }
    Ok(next)
}

/// The mTLS material of one internal identity: its certificate and key, and the CA bundle,
/// as they are now (see the module's documentation).
#[derive(Clone)]
pub struct MtlsMaterial {
    inner: Reloading,
}

impl std::fmt::Debug for MtlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsMaterial").field("identity", &self.inner.name).finish_non_exhaustive()
    }
}

impl MtlsMaterial {
    /// Reads PEM files once; the keys name the config entries, for error messages.
    pub fn load(ca: (&str, &Path), cert: (&str, &Path), key: (&str, &Path)) -> Result<Self, ConfigError> {
        Ok(MtlsMaterial { inner: Reloading::load(mtls_files(ca, cert, key))? })
    }

    /// Reads PEM files and re-reads them every `every` while the material is held.
    pub fn reloading(
        ca: (&str, &Path),
        cert: (&str, &Path),
        key: (&str, &Path),
        every: Duration,
    ) -> Result<Self, ConfigError> {
        let files = mtls_files(ca, cert, key);
        Ok(MtlsMaterial { inner: Reloading::load(files.clone())?.watch(files, every) })
    }

    /// Server side of mTLS as the files are now: presents this identity and requires a
    /// client certificate chaining to the CA bundle. Anything else fails the handshake.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.now().server.clone()
    }

    /// Client side of mTLS as the files are now: trusts only the CA bundle, expects
    /// `server_name` in the server's certificate, and presents this identity.
    pub fn client_config(&self, server_name: &str) -> ClientTlsConfig {
        self.inner.now().client_config(server_name)
    }

    /// Tells of every change of the files (for callers that rebuild their connections).
    pub(crate) fn changes(&self) -> watch::Receiver<Arc<Loaded>> {
        self.inner.current.subscribe()
    }
}

fn mtls_files(ca: (&str, &Path), cert: (&str, &Path), key: (&str, &Path)) -> Files {
    Files {
        ca: Some((ca.0.to_owned(), ca.1.to_owned())),
        cert: (cert.0.to_owned(), cert.1.to_owned()),
        key: (key.0.to_owned(), key.1.to_owned()),
    }
}

/// Server-only TLS for the gateway's public listener (clients prove who they are with access
/// tokens, not certificates), re-read every `every`.
#[derive(Clone)]
pub struct PublicTls {
    inner: Reloading,
}

impl std::fmt::Debug for PublicTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicTls").field("identity", &self.inner.name).finish_non_exhaustive()
    }
}

impl PublicTls {
    /// Reads the certificate and key, and re-reads them every `every` while held.
    pub fn reloading(cert: (&str, &Path), key: (&str, &Path), every: Duration) -> Result<Self, ConfigError> {
        let files =
            Files { ca: None, cert: (cert.0.to_owned(), cert.1.to_owned()), key: (key.0.to_owned(), key.1.to_owned()) };
        Ok(PublicTls { inner: Reloading::load(files.clone())?.watch(files, every) })
    }

    /// The server configuration as the files are now.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.now().server.clone()
    }
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

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_picked_up_and_a_half_written_one_is_ignored() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (c1, k1) = pair("one");
        std::fs::write(&cert, &c1).unwrap();
        std::fs::write(&key, &k1).unwrap();
        let tls = PublicTls::reloading(
            ("gateway.public_cert", &cert),
            ("gateway.public_key", &key),
            Duration::from_millis(20),
        )
        .unwrap();
        let first = tls.inner.now().raw.cert.clone();

        // The certificate is replaced but its key not yet: not usable, the old one stays.
        let (c2, k2) = pair("one");
        std::fs::write(&cert, &c2).unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(tls.inner.now().raw.cert, first, "a certificate without its key was swapped in");

        std::fs::write(&key, &k2).unwrap();
        let mut changes = tls.inner.current.subscribe();
        tokio::time::timeout(Duration::from_secs(5), changes.wait_for(|l| l.raw.cert == c2.as_bytes()))
            .await
            .expect("the renewed certificate is picked up")
            .unwrap();

        // Someone else's certificate (another name) mounted by mistake is not served.
        let (c3, k3) = pair("someone-else");
        std::fs::write(&key, &k3).unwrap();
        std::fs::write(&cert, &c3).unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(tls.inner.now().raw.cert, c2.as_bytes(), "another identity was swapped in");
    }

    #[test]
    fn a_leaf_in_the_ca_bundle_and_a_certificate_from_another_ca_are_refused() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = ts_devca_like::ca("ca");
        let (leaf, leaf_key) = ts_devca_like::issue(&ca, "folders");
        let files = |ca_pem: &str, cert: &str, key: &str| {
            std::fs::write(dir.path().join("ca.crt"), ca_pem).unwrap();
            std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
            std::fs::write(dir.path().join("tls.key"), key).unwrap();
            MtlsMaterial::load(
                ("internal_tls.ca_cert", &dir.path().join("ca.crt")),
                ("folders.cert", &dir.path().join("tls.crt")),
                ("folders.key", &dir.path().join("tls.key")),
            )
        };
        assert!(files(&ca.0, &leaf, &leaf_key).is_ok(), "the control: a leaf of the CA in the bundle");
        let e = files(&format!("{}{leaf}", ca.0), &leaf, &leaf_key).unwrap_err().to_string();
        assert!(e.contains("internal_tls.ca_cert") && e.contains("not a CA"), "{e}");
        let other = ts_devca_like::ca("other");
        let (foreign, foreign_key) = ts_devca_like::issue(&other, "folders");
        let e = files(&ca.0, &foreign, &foreign_key).unwrap_err().to_string();
        assert!(e.contains("folders.cert") && e.contains("does not chain"), "{e}");
    }

    /// A CA and its leaves, as cert-manager makes them.
    mod ts_devca_like {
        pub fn ca(name: &str) -> (String, rcgen::Certificate, rcgen::KeyPair) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), cert, key)
        }

        pub fn issue(ca: &(String, rcgen::Certificate, rcgen::KeyPair), name: &str) -> (String, String) {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
            params.extended_key_usages =
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &ca.1, &ca.2).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_names_the_key_entry() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (c1, _) = pair("one");
        let (_, k2) = pair("two");
        std::fs::write(&cert, c1).unwrap();
        std::fs::write(&key, k2).unwrap();
        let e =
            PublicTls::reloading(("g.cert", &cert), ("g.key", &key), Duration::from_secs(1)).unwrap_err().to_string();
        assert!(e.contains("g.key"), "{e}");
    }
}
