//! `TestCluster`: all five services in this process on port 0 with real mTLS, backed by
//! the shared real servers, with a fresh database and KMS key per cluster.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use ts_config::MailConfig;
use ts_config::{
    AccountsConfig, Config, GatewayConfig, InternalTlsConfig, KmsConfig, KmsProvider, MongoConfig, RedisConfig,
    ServiceConfig, StaticCredentials, Upstream, UpstreamsConfig,
};
use ts_contract::clock::ManualClock;
use ts_contract::identity::Peer;
use ts_devca::{DevCa, DevCertPaths, write_dev_certs};

use teamshare::Service;

use crate::procs::{SharedServers, shared};

/// A running stack for one test. Dropping it stops the services.
pub struct TestCluster {
    /// The configuration the services run with.
    pub config: Arc<Config>,
    /// Where the certificates are.
    pub certs: DevCertPaths,
    /// This cluster's MongoDB database name (unique per cluster).
    pub database: String,
    /// Each service's bound address.
    pub addrs: Vec<(Service, SocketAddr)>,
    /// The clock auth and the gateway run on; move it to expire codes and tokens.
    pub clock: ManualClock,
    /// Where the development mailer writes messages.
    pub mail_dir: std::path::PathBuf,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ts_runtime::RunError>>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("database", &self.database)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl TestCluster {
    /// Starts the shared servers if needed, then all five services.
    pub async fn start() -> anyhow::Result<TestCluster> {
        Self::start_with(|_| {}).await
    }

    /// As `start`, letting the test adjust the configuration first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<TestCluster> {
        ts_runtime::tls::install_crypto_provider();
        let servers = tokio::task::spawn_blocking(shared).await??;
        let dir = tempfile::tempdir()?;
        let certs = write_dev_certs(dir.path())?;
        let database = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mail_dir = dir.path().join("mail");
        let key_id = create_kms_key(&kms_client(servers.kms.port)).await?;

        let mut listeners = Vec::new();
        for s in Service::ALL {
            listeners.push((s, TcpListener::bind("127.0.0.1:0").await?));
        }
        let addrs = listeners.iter().map(|(s, l)| Ok((*s, l.local_addr()?))).collect::<std::io::Result<Vec<_>>>()?;
        let addr_of =
            |svc: Service| addrs.iter().find(|(s, _)| *s == svc).map(|(_, a)| *a).expect("every service is bound");
        let url = |svc: Service| Some(Upstream { url: format!("https://{}", addr_of(svc)), server_name: None });
        let section = |peer: Peer, svc: Service| {
            Some(ServiceConfig {
                listen: addr_of(svc),
                health_listen: None,
                cert: certs.cert(peer),
                key: certs.key(peer),
            })
        };
        let mut config = Config {
            internal_tls: Some(InternalTlsConfig { ca_cert: certs.ca_cert() }),
            mongodb: Some(MongoConfig {
                uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", servers.mongo.port).into(),
                database: database.clone(),
            }),
            redis: Some(RedisConfig { url: format!("redis://127.0.0.1:{}", servers.redis.port).into() }),
            kms: Some(KmsConfig {
                provider: KmsProvider::Aws,
                key_id: Some(key_id),
                region: Some(KMS_REGION.into()),
                endpoint: Some(kms_endpoint(servers)),
                local_key_file: None,
                static_credentials: Some(test_credentials()),
            }),
            auth: section(Peer::Auth, Service::Auth),
            keyvault: section(Peer::Keyvault, Service::Keyvault),
            folders: section(Peer::Folders, Service::Folders),
            invitations: section(Peer::Invitations, Service::Invitations),
            gateway: Some(GatewayConfig {
                listen: addr_of(Service::Gateway),
                health_listen: None,
                public_cert: certs.public_cert(),
                public_key: certs.public_key(),
                cert: certs.cert(Peer::Gateway),
                key: certs.key(Peer::Gateway),
                downstream_timeout_ms: 5_000,
                max_message_bytes: 4 * 1024 * 1024,
                proxy_protocol: false,
                trusted_proxies: Vec::new(),
            }),
            accounts: AccountsConfig {
                token_signing_keys: vec![certs.token_signing_key()],
                secret_key_file: Some(certs.auth_secret()),
                ..AccountsConfig::default()
            },
            mail: Some(MailConfig::File { dir: mail_dir.clone() }),
            upstreams: UpstreamsConfig {
                auth: url(Service::Auth),
                keyvault: url(Service::Keyvault),
                folders: url(Service::Folders),
                invitations: url(Service::Invitations),
            },
            ..Config::default()
        };
        adjust(&mut config);
        let config = Arc::new(config);
        let (stop, mut rx) = watch::channel(false);
        let clock = ManualClock::default();
        let task = tokio::spawn(teamshare::run_stack(config.clone(), listeners, Arc::new(clock.clone()), async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Ok(TestCluster { config, certs, database, addrs, clock, mail_dir, stop, task: Some(task), _dir: dir })
    }

    /// A service's bound address.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.addrs.iter().find(|(s, _)| *s == service).map(|(_, a)| *a).expect("every service is bound")
    }

    /// What a workload needs to drive this cluster: the gateway, auth's internal address
    /// (for operator calls), the certificates, the mail directory and the database.
    pub fn target(&self) -> crate::workload::Target {
        crate::workload::Target {
            gateway: self.addr(Service::Gateway),
            certs: self.certs.clone(),
            auth: self.addr(Service::Auth),
            mail_dir: self.mail_dir.clone(),
            mongo_uri: self.config.mongodb.as_ref().map(|m| m.uri.expose_secret().to_owned()).unwrap_or_default(),
            database: self.database.clone(),
        }
    }

    /// A client channel to the gateway's public TLS listener, trusting the dev CA.
    pub async fn gateway(&self) -> anyhow::Result<Channel> {
        self.gateway_at(self.addr(Service::Gateway)).await
    }

    /// A client channel to a gateway at `addr` (such as a second replica a test started).
    pub async fn gateway_at(&self, addr: SocketAddr) -> anyhow::Result<Channel> {
        let ca = std::fs::read(self.certs.ca_cert())?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
        Ok(Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?)
    }

    /// Starts another gateway replica on the same configuration and clock; it stops when the
    /// returned sender is dropped or sent `true`.
    pub async fn extra_gateway(&self) -> anyhow::Result<(SocketAddr, watch::Sender<bool>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, mut rx) = watch::channel(false);
        let config = self.config.clone();
        let clock: ts_contract::clock::SharedClock = Arc::new(self.clock.clone());
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = Service::Gateway.serve(&config, clock, listener, shutdown).await {
                tracing::error!(error = %e, "extra gateway failed");
            }
        });
        Ok((addr, stop))
    }

    /// An mTLS channel to an internal `service`, presenting the certificate of `as_peer`.
    pub async fn internal(&self, service: Service, as_peer: Peer) -> anyhow::Result<Channel> {
        let (cert, key) = (std::fs::read(self.certs.cert(as_peer))?, std::fs::read(self.certs.key(as_peer))?);
        self.internal_with(service, Identity::from_pem(cert, key)).await
    }

    /// The balanced, reloading channel a service of this cluster uses to call `service`,
    /// presenting the certificate of `as_peer` (as `ts_runtime::upstream` builds it).
    pub fn internal_channel(
        &self,
        service: Service,
        as_peer: Peer,
    ) -> anyhow::Result<ts_runtime::client::InternalChannel> {
        let material = ts_runtime::tls::MtlsMaterial::load(
            ("internal_tls.ca_cert", &self.certs.ca_cert()),
            ("cert", &self.certs.cert(as_peer)),
            ("key", &self.certs.key(as_peer)),
        )?;
        let upstream = Upstream { url: format!("https://{}", self.addr(service)), server_name: None };
        let settings = ts_runtime::client::Settings {
            timeout: ts_runtime::INTERNAL_CALL_TIMEOUT,
            refresh: std::time::Duration::from_secs(60),
        };
        Ok(ts_runtime::client::connect(service.name(), &upstream, &material, settings)?)
    }

    /// An mTLS channel to an internal `service`, presenting any identity (such as one from
    /// another CA), trusting the cluster's CA for the server.
    pub async fn internal_with(&self, service: Service, identity: Identity) -> anyhow::Result<Channel> {
        let ca = std::fs::read(self.certs.ca_cert())?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(identity)
            .domain_name(service.name());
        Ok(Endpoint::from_shared(format!("https://{}", self.addr(service)))?.tls_config(tls)?.connect().await?)
    }

    /// This cluster's database, for tests that inspect what was stored.
    pub async fn database(&self) -> anyhow::Result<mongodb::Database> {
        let mongo = self.config.mongodb.as_ref().context("mongodb configured")?;
        Ok(ts_stores::mongo(mongo, false, "teamshare-tests").await?.client().database(&self.database))
    }

    /// Stops every service gracefully and returns how the stack ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => Ok(task.await??),
            None => Ok(()),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A certificate and key for `peer`'s SPIFFE id, issued by a CA that the cluster does not
/// trust.
pub fn foreign_identity(peer: Peer) -> anyhow::Result<Identity> {
    let ca = DevCa::generate("some other CA")?;
    let pair = ca.issue_service(peer)?;
    Ok(Identity::from_pem(pair.cert, pair.key))
}

/// Region used with the test KMS.
pub const KMS_REGION: &str = "us-east-1";

fn test_credentials() -> StaticCredentials {
    StaticCredentials { access_key_id: "testing".into(), secret_access_key: "testing".to_owned().into() }
}

/// The KMS endpoint of the shared servers.
pub fn kms_endpoint(servers: &SharedServers) -> String {
    format!("http://127.0.0.1:{}", servers.kms.port)
}

/// A KMS client for a test KMS server on `port`.
pub fn kms_client(port: u16) -> aws_sdk_kms::Client {
    use aws_sdk_kms::config::{BehaviorVersion, Credentials, Region};
    let conf = aws_sdk_kms::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(KMS_REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "teamshare-tests"))
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// Creates a fresh symmetric KMS key and returns its id.
pub async fn create_kms_key(client: &aws_sdk_kms::Client) -> anyhow::Result<String> {
    let out = client.create_key().description("teamshare test master key").send().await?;
    out.key_metadata().map(|m| m.key_id().to_owned()).context("CreateKey returned no key id")
}

/// A fresh, uniquely named database on the shared MongoDB-compatible server.
pub async fn fresh_database() -> anyhow::Result<mongodb::Database> {
    let servers = tokio::task::spawn_blocking(shared).await??;
    let config = MongoConfig {
        uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", servers.mongo.port).into(),
        database: format!("t_{}", uuid::Uuid::new_v4().simple()),
    };
    Ok(ts_stores::mongo(&config, false, "teamshare-tests").await?)
}
