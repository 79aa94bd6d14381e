//! The real stack, each service a process of its own (`teamshare serve <service>`, as in
//! Kubernetes), against the MongoDB-compatible server, Redis and the KMS API that the test
//! kit starts, with every security feature on: mTLS between services and allowlists, access
//! tokens and revocation checks at the gateway, sealed fields with data keys from KMS, audit,
//! and the invitation send limiter in Redis. Telemetry exports to the bench's receiver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use teamshare::Service;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use ts_contract::Peer;
use ts_devca::DevCertPaths;
use ts_testkit::ServerProcess;
use ts_testkit::procs::{free_port, tcp_ready};

/// How the stack is configured where the bench chooses.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The `teamshare` binary to run.
    pub binary: PathBuf,
    /// The OTLP receiver the services export to.
    pub otlp: SocketAddr,
    /// `OTEL_METRIC_EXPORT_INTERVAL` for every service.
    pub export_interval: Duration,
    /// The services' `telemetry.log_filter`.
    pub log_filter: String,
    /// Set `folders.max_items_per_folder` (only when the folders service knows the key).
    pub max_items_per_folder: Option<u64>,
    /// The binary is a benchmark-only build with the security checks off (it serves only
    /// when the environment says so).
    pub insecure: bool,
}

/// The running stack. Dropping it stops every process.
#[derive(Debug)]
pub struct Stack {
    /// Certificates, configuration and mail (removed with the stack).
    _dir: tempfile::TempDir,
    /// The development CA's files.
    pub certs: DevCertPaths,
    /// Where the development mailer writes (verification codes).
    pub mail_dir: PathBuf,
    /// The database every service uses.
    pub database: String,
    /// MongoDB-compatible server (in memory, as in the tests).
    pub mongo: ServerProcess,
    /// Redis.
    pub redis: ServerProcess,
    /// KMS API (moto).
    pub kms: ServerProcess,
    /// The five services, in start order.
    pub services: Vec<(Service, ServerProcess)>,
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn path(p: &Path) -> String {
    quoted(&p.to_string_lossy())
}

impl Stack {
    /// Starts the stores, writes certificates and the configuration, starts the five
    /// services and waits until each answers a health check.
    pub async fn start(options: &StackOptions) -> anyhow::Result<Stack> {
        let (mongo, redis, kms) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
            Ok((ServerProcess::mongo()?, ServerProcess::redis()?, ServerProcess::kms()?))
        })
        .await??;
        let key_id = ts_testkit::create_kms_key(&ts_testkit::kms_client(kms.port)).await?;
        let dir = tempfile::tempdir()?;
        let certs = ts_devca::write_dev_certs(&dir.path().join("certs")).context("cannot write certificates")?;
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir_all(&mail_dir)?;
        let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
        let ports: Vec<(Service, u16)> = Service::ALL.iter().map(|s| (*s, free_port())).collect();
        let port = |svc: Service| ports.iter().find(|(s, _)| *s == svc).map_or(0, |(_, p)| *p);

        let mut toml = format!(
            r#"# Written by ts-bench for one run.
production = false

[telemetry]
log_filter = {log_filter}
otlp_endpoint = "http://{otlp}"

[internal_tls]
ca_cert = {ca}

[mongodb]
uri = "mongodb://127.0.0.1:{mongo}/?directConnection=true"
database = "{database}"

[redis]
url = "redis://127.0.0.1:{redis}"

[kms]
provider = "aws"
key_id = {key_id}
region = "{region}"
endpoint = "http://127.0.0.1:{kms}"
static_credentials = {{ access_key_id = "testing", secret_access_key = "testing" }}

# The limits stay on; the bench signs in and invites far more than one person would.
[accounts]
token_signing_keys = [{signing}]
secret_key_file = {secret}
access_token_ttl_secs = 7200
sends_per_client_per_hour = 1000000
failed_sign_ins_per_client_per_hour = 1000000

[invitation_limits]
max_pending_per_folder = 100000000
per_inviter_per_minute = 60000
inviter_burst = 100000000
per_license_per_minute = 60000
license_burst = 100000000

[mail]
mode = "file"
dir = {mail}
"#,
            log_filter = quoted(&options.log_filter),
            otlp = options.otlp,
            ca = path(&certs.ca_cert()),
            mongo = mongo.port,
            redis = redis.port,
            kms = kms.port,
            key_id = quoted(&key_id),
            region = ts_testkit::cluster::KMS_REGION,
            signing = path(&certs.token_signing_key()),
            secret = path(&certs.auth_secret()),
            mail = path(&mail_dir),
        );
        for svc in Service::ALL {
            let peer = svc.peer();
            toml.push_str(&format!("\n[{}]\nlisten = \"127.0.0.1:{}\"\n", svc.name(), port(svc)));
            if svc == Service::Gateway {
                // The first read of a 100,000-item folder sorts the whole folder on the
                // MongoDB-compatible server (~4 s; MongoDB walks the index); later reads are
                // served from memory.
                toml.push_str("downstream_timeout_ms = 60000\n");
                toml.push_str(&format!(
                    "public_cert = {}\npublic_key = {}\n",
                    path(&certs.public_cert()),
                    path(&certs.public_key())
                ));
            }
            toml.push_str(&format!("cert = {}\nkey = {}\n", path(&certs.cert(peer)), path(&certs.key(peer))));
        }
        toml.push_str("\n[upstreams]\n");
        for svc in Service::ALL.into_iter().filter(|s| *s != Service::Gateway) {
            toml.push_str(&format!("{} = {{ url = \"https://127.0.0.1:{}\" }}\n", svc.name(), port(svc)));
        }
        let config = dir.path().join("teamshare.toml");
        std::fs::write(&config, toml).with_context(|| format!("cannot write {}", config.display()))?;

        let mut env = vec![
            ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), options.export_interval.as_millis().to_string()),
            ("OTEL_TRACES_SAMPLER".to_owned(), "always_off".to_owned()),
        ];
        if options.insecure {
            env.push((
                ts_runtime::INSECURE_BENCH_CONSENT.0.to_owned(),
                ts_runtime::INSECURE_BENCH_CONSENT.1.to_owned(),
            ));
        }
        if let Some(max) = options.max_items_per_folder {
            env.push(("TS_FOLDERS__MAX_ITEMS_PER_FOLDER".to_owned(), max.to_string()));
        }
        let mut services = Vec::new();
        for svc in Service::ALL {
            let config = config.to_string_lossy().into_owned();
            let args = ["serve", svc.name(), "--config", config.as_str()];
            let process = ServerProcess::start_on(svc.name(), &options.binary, &args, &env, port(svc), tcp_ready)
                .with_context(|| format!("cannot start {}", svc.name()))?;
            services.push((svc, process));
        }
        let stack = Stack { _dir: dir, certs, mail_dir, database, mongo, redis, kms, services };
        stack.wait_healthy().await?;
        Ok(stack)
    }

    /// Waits until every service answers a health check (a service binds its port before
    /// it has connected to its stores and built itself).
    async fn wait_healthy(&self) -> anyhow::Result<()> {
        for (svc, process) in &self.services {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            loop {
                let attempt = async {
                    let channel = match svc {
                        Service::Gateway => self.gateway().await?,
                        _ => self.internal(*svc, Peer::Operator).await?,
                    };
                    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(())) => break,
                    _ if tokio::time::Instant::now() >= deadline => {
                        bail!("{} did not become healthy; log: {}", svc.name(), process.log_path().display())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    /// The process of `service`.
    pub fn service(&self, service: Service) -> anyhow::Result<&ServerProcess> {
        self.services.iter().find(|(s, _)| *s == service).map(|(_, p)| p).context("service not started")
    }

    /// A new connection to the gateway's public TLS listener, trusting the dev CA.
    pub async fn gateway(&self) -> anyhow::Result<Channel> {
        let port = self.service(Service::Gateway)?.port;
        public_channel(&self.certs, port).await
    }

    /// A new mTLS connection to an internal `service`, presenting `as_peer`'s certificate.
    pub async fn internal(&self, service: Service, as_peer: Peer) -> anyhow::Result<Channel> {
        let (cert, key) = (std::fs::read(self.certs.cert(as_peer))?, std::fs::read(self.certs.key(as_peer))?);
        let ca = std::fs::read(self.certs.ca_cert())?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(service.name());
        let port = self.service(service)?.port;
        Ok(Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(tls)?.connect().await?)
    }

    /// The stack's database, for seeding rows that need no encryption.
    pub async fn database(&self) -> anyhow::Result<mongodb::Database> {
        let config = ts_config::MongoConfig {
            uri: format!("mongodb://127.0.0.1:{}/?directConnection=true", self.mongo.port).into(),
            database: self.database.clone(),
        };
        Ok(ts_stores::mongo(&config, false, "ts-bench").await?)
    }

    /// Every process of the stack, by name, for the memory report.
    pub fn processes(&self) -> Vec<(&'static str, &ServerProcess)> {
        let mut all: Vec<(&'static str, &ServerProcess)> = self.services.iter().map(|(s, p)| (s.name(), p)).collect();
        all.extend([("mongo", &self.mongo), ("redis", &self.redis), ("kms (moto)", &self.kms)]);
        all
    }
}

/// A new TLS connection to a server on loopback `port` that presents a certificate for
/// `localhost` from the dev CA (the gateway's public listener, the echo, the forwarder).
pub async fn public_channel(certs: &DevCertPaths, port: u16) -> anyhow::Result<Channel> {
    let ca = std::fs::read(certs.ca_cert())?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    Ok(Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?.tls_config(tls)?.tcp_nodelay(true).connect().await?)
}
