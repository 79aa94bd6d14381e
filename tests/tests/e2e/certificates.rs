//! Certificates renewed and a CA rotated under a running stack, under load: new connections
//! present the new certificates, old and new CA are both trusted while the bundle holds both,
//! clients reconnect with their new certificates (connections are recycled by their maximum
//! age), and no call fails.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use teamshare::Service;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use ts_contract::identity::Peer;
use ts_devca::{DevCa, PemPair};
use ts_testkit::TestCluster;

use crate::support::load;

/// Replaces `path` the way a mounted Secret changes: a new file renamed over the old.
fn replace(path: &Path, bytes: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The certificate `addr` presents to a new connection (checked against `trusted`), and
/// whether a call with `identity` over it succeeds.
async fn served_certificate(
    addr: std::net::SocketAddr,
    name: &str,
    trusted: &str,
    identity: &PemPair,
) -> anyhow::Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(trusted.as_bytes()) {
        roots.add(cert?)?;
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes())?;
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(chain, key)?;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(ServerName::try_from(name.to_owned())?, tcp).await?;
    let served = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
    served.ok_or_else(|| anyhow::anyhow!("no certificate served"))
}

fn der(pem: &str) -> anyhow::Result<Vec<u8>> {
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())?.to_vec())
}

async fn health(cluster: &TestCluster, service: Service, trusted: &str, identity: &PemPair) -> Result<(), String> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(trusted))
        .identity(Identity::from_pem(&identity.cert, &identity.key))
        .domain_name(service.name());
    let endpoint = Endpoint::from_shared(format!("https://{}", cluster.addr(service))).map_err(|e| e.to_string())?;
    let channel = endpoint.tls_config(tls).map_err(|e| e.to_string())?.connect().await.map_err(|e| e.to_string())?;
    HealthClient::new(channel).check(HealthCheckRequest::default()).await.map(|_| ()).map_err(|s| s.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_renewed_and_a_ca_rotated_under_load_fail_no_call() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| {
        c.cert_reload_secs = Some(1);
        c.max_connection_age_secs = Some(2);
    })
    .await?;
    let certs = cluster.certs.clone();
    let old_ca = std::fs::read_to_string(certs.ca_cert())?;
    let old_operator = PemPair {
        cert: std::fs::read_to_string(certs.cert(Peer::Operator))?,
        key: std::fs::read_to_string(certs.key(Peer::Operator))?,
    };
    let new_ca = DevCa::generate("teamshare rotated CA")?;
    let bundle = format!("{old_ca}{}", new_ca.cert_pem());

    // Step 1: every process trusts both CAs.
    replace(&certs.ca_cert(), &bundle)?;
    let reloaded = Duration::from_millis(2_500);
    tokio::time::sleep(reloaded).await;

    // A client that trusts both (as every client must before the rotation), under load.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&bundle)).domain_name("localhost");
    let gateway = Endpoint::from_shared(format!("https://{}", cluster.addr(Service::Gateway)))?
        .tls_config(tls)?
        .connect()
        .await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = ts_testkit::Folders::new(&gateway, &alice).create("Rotating").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(gateway.clone(), alice.clone(), folder_id, stop.clone());

    // Step 2: every certificate is renewed by the new CA.
    let mut issued = Vec::new();
    for peer in Peer::ALL {
        let pair = new_ca.issue_service(peer)?;
        replace(&certs.key(peer), &pair.key)?;
        replace(&certs.cert(peer), &pair.cert)?;
        issued.push((peer, pair));
    }
    let public = new_ca.issue_server("teamshare gateway", &["localhost", "gateway", "teamshare.local"])?;
    replace(&certs.public_key(), &public.key)?;
    replace(&certs.public_cert(), &public.cert)?;
    let new_operator = issued.iter().find(|(p, _)| *p == Peer::Operator).map(|(_, p)| p.clone()).expect("operator");

    // New connections present the renewed certificates.
    for service in [Service::Auth, Service::Keyvault, Service::Folders, Service::Invitations] {
        let peer =
            issued.iter().find(|(p, _)| p.name() == service.name()).map(|(_, p)| p.cert.clone()).expect("issued");
        let want = der(&peer)?;
        ts_testkit::eventually(&format!("{} serves its renewed certificate", service.name()), || {
            let (bundle, operator, want) = (bundle.clone(), new_operator.clone(), want.clone());
            let addr = cluster.addr(service);
            async move { Ok((served_certificate(addr, service.name(), &bundle, &operator).await? == want).then_some(())) }
        })
        .await?;
    }
    let want = der(&public.cert)?;
    ts_testkit::eventually("the gateway serves its renewed public certificate", || {
        let (bundle, operator, want) = (bundle.clone(), new_operator.clone(), want.clone());
        let addr = cluster.addr(Service::Gateway);
        async move { Ok((served_certificate(addr, "localhost", &bundle, &operator).await? == want).then_some(())) }
    })
    .await?;
    tokio::time::sleep(reloaded).await;

    // Step 3: the old CA is retired. Connections made with old certificates age out (2 s),
    // so the callers must now present their renewed ones.
    let new_only = new_ca.cert_pem();
    replace(&certs.ca_cert(), &new_only)?;
    tokio::time::sleep(reloaded + Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let (rounds, failures) = running.await?;
    assert!(rounds > 10, "the load ran ({rounds} rounds)");
    assert!(failures.is_empty(), "calls failed during the rotation: {failures:?}");

    // The old CA is no longer trusted; the new one is.
    let refused = health(&cluster, Service::Folders, &new_only, &old_operator).await;
    assert!(refused.is_err(), "a certificate of the retired CA is still accepted");
    health(&cluster, Service::Folders, &new_only, &new_operator).await.map_err(anyhow::Error::msg)?;
    // And the stack still serves a fresh client that trusts only the new CA.
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&new_only)).domain_name("localhost");
    let fresh = Endpoint::from_shared(format!("https://{}", cluster.addr(Service::Gateway)))?
        .tls_config(tls)?
        .connect()
        .await?;
    let folder = ts_testkit::Folders::new(&fresh, &alice).create("After").await?;
    crate::support::one_round(&fresh, &alice, &folder, 1).await?;
    cluster.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mount_keeps_the_identity_in_use() -> anyhow::Result<()> {
    let cluster = TestCluster::start_with(|c| c.cert_reload_secs = Some(1)).await?;
    let certs = cluster.certs.clone();
    let ca = std::fs::read_to_string(certs.ca_cert())?;
    let operator = PemPair {
        cert: std::fs::read_to_string(certs.cert(Peer::Operator))?,
        key: std::fs::read_to_string(certs.key(Peer::Operator))?,
    };
    let serving = served_certificate(cluster.addr(Service::Folders), "folders", &ca, &operator).await?;
    let gateway = cluster.gateway().await?;
    let alice = cluster.sign_in("alice@example.com").await?;
    let folder_id = ts_testkit::Folders::new(&gateway, &alice).create("Kept").await?;

    let invitations = (
        std::fs::read_to_string(certs.cert(Peer::Invitations))?,
        std::fs::read_to_string(certs.key(Peer::Invitations))?,
    );
    let foreign = DevCa::generate("someone else's CA")?.issue_service(Peer::Folders)?;
    let wrong_mounts = [
        (
            "another service's certificate (it would act with invitations' rights)",
            invitations.0.clone(),
            invitations.1.clone(),
            ca.clone(),
        ),
        ("a certificate of a CA nobody trusts", foreign.cert.clone(), foreign.key.clone(), ca.clone()),
        (
            "a leaf in the CA bundle (its key could mint any identity)",
            std::fs::read_to_string(certs.cert(Peer::Folders))?,
            std::fs::read_to_string(certs.key(Peer::Folders))?,
            format!("{ca}{}", invitations.0),
        ),
    ];
    let (own_cert, own_key) =
        (std::fs::read_to_string(certs.cert(Peer::Folders))?, std::fs::read_to_string(certs.key(Peer::Folders))?);
    for (what, cert, key, bundle) in wrong_mounts {
        replace(&certs.key(Peer::Folders), &key)?;
        replace(&certs.cert(Peer::Folders), &cert)?;
        replace(&certs.ca_cert(), &bundle)?;
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let now = served_certificate(cluster.addr(Service::Folders), "folders", &ca, &operator).await?;
        assert_eq!(now, serving, "{what}: swapped in");
        crate::support::one_round(&gateway, &alice, &folder_id, 1).await?;
        // Put things right before the next attempt.
        replace(&certs.key(Peer::Folders), &own_key)?;
        replace(&certs.cert(Peer::Folders), &own_cert)?;
        replace(&certs.ca_cert(), &ca)?;
    }
    cluster.stop().await
}
