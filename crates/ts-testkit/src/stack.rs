//! The real stack, each service a process of its own (`teamshare serve <service>`, as in
//! Kubernetes), against the MongoDB-compatible server, Redis and the KMS API that the test
//! kit starts, with every security feature on: mTLS between services and allowlists, access
//! tokens and revocation checks at the gateway, sealed fields with data keys from KMS, audit,
//! and the invitation send limiter in Redis. Telemetry exports to an OTLP receiver when one
//! is given (`crate::otlp`).
//!
//! The bench measures it; fault tests break it: a service can be killed and started again,
//! MongoDB (durable, when asked) and Redis stopped and restarted on the same ports, and with
//! `faults` each dependency sits behind a `FaultProxy` that can take it down, slow or hang it.

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

use crate::ServerProcess;
use crate::faults::FaultProxy;
use crate::procs::{free_port, tcp_ready};

/// How long a service may take from binding its port to answering a health check.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);

/// How the stack is configured where the caller chooses. `StackOptions::new` gives the
/// defaults; set the fields that matter to the test.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The `teamshare` binary to run.
    pub binary: PathBuf,
    /// The OTLP receiver the services export to (`telemetry.otlp_endpoint`); none exports
    /// nothing.
    pub otlp: Option<SocketAddr>,
    /// `OTEL_METRIC_EXPORT_INTERVAL` for every service.
    pub export_interval: Duration,
    /// The services' `telemetry.log_filter`.
    pub log_filter: String,
    /// Set `folders.max_items_per_folder` (only when the folders service knows the key).
    pub max_items_per_folder: Option<u64>,
    /// The binary is a benchmark-only build with the security checks off (it serves only
    /// when the environment says so).
    pub insecure: bool,
    /// Put MongoDB, Redis and KMS each behind a `FaultProxy` (the services' configuration
    /// names the proxies' ports).
    pub faults: bool,
    /// Run the MongoDB-compatible server on disk (in the stack's directory) with every
    /// commit synced, so that `stop_mongo`/`start_mongo` keep every acknowledged write;
    /// otherwise it runs in memory and restarts empty.
    pub durable_mongo: bool,
    /// TOML merged into the configuration the stack writes: its keys override the stack's
    /// (a table's keys one by one), so a test can set limits and timeouts, such as
    /// `"[gateway]\ndownstream_timeout_ms = 2000\n"`.
    pub extra_toml: String,
    /// Extra environment for every service (`TS_…` overrides and the like).
    pub env: Vec<(String, String)>,
}

impl StackOptions {
    /// Options for a stack of `binary` with the defaults: log filter `info`, metrics
    /// exported every second (once an `otlp` receiver is set), no receiver, no faults,
    /// MongoDB in memory, the security checks on, nothing extra.
    pub fn new(binary: PathBuf) -> StackOptions {
        StackOptions {
            binary,
            otlp: None,
            export_interval: Duration::from_secs(1),
            log_filter: "info".to_owned(),
            max_items_per_folder: None,
            insecure: false,
            faults: false,
            durable_mongo: false,
            extra_toml: String::new(),
            env: Vec::new(),
        }
    }
}

/// The running stack. Dropping it stops every process (the services first).
#[derive(Debug)]
pub struct ProcessStack {
    /// The five services, in start order.
    pub services: Vec<(Service, ServerProcess)>,
    /// MongoDB-compatible server (in memory unless `durable_mongo`).
    pub mongo: ServerProcess,
    /// Redis.
    pub redis: ServerProcess,
    /// KMS API (moto).
    pub kms: ServerProcess,
    /// The development CA's files.
    pub certs: DevCertPaths,
    /// Where the development mailer writes (verification codes).
    pub mail_dir: PathBuf,
    /// The database every service uses.
    pub database: String,
    mongo_proxy: Option<FaultProxy>,
    redis_proxy: Option<FaultProxy>,
    kms_proxy: Option<FaultProxy>,
    /// What a service is started with again.
    binary: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    ports: Vec<(Service, u16)>,
    /// The durable MongoDB-compatible server's storage.
    mongo_dir: Option<PathBuf>,
    /// Certificates, configuration, mail and storage (removed with the stack, last).
    _dir: tempfile::TempDir,
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn path(p: &Path) -> String {
    quoted(&p.to_string_lossy())
}

/// A loopback address.
fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Merges `extra` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(inner)), toml::Value::Table(extra)) => merge(inner, extra),
            (Some(slot), value) => *slot = value,
            (None, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Starts one service process on its configured `port` and waits until it binds.
fn start_service_process(
    service: Service,
    binary: &Path,
    config: &Path,
    env: &[(String, String)],
    port: u16,
) -> anyhow::Result<ServerProcess> {
    let config = config.to_string_lossy().into_owned();
    let args = ["serve", service.name(), "--config", config.as_str()];
    ServerProcess::start_on(service.name(), binary, &args, env, port, tcp_ready)
        .with_context(|| format!("cannot start {}", service.name()))
}

impl ProcessStack {
    /// Starts the stores (and their proxies, with `faults`), writes certificates and the
    /// configuration, starts the five services and waits until each answers a health check.
    pub async fn start(options: &StackOptions) -> anyhow::Result<ProcessStack> {
        let dir = tempfile::tempdir()?;
        let mongo_dir = options.durable_mongo.then(|| dir.path().join("mongo"));
        let durable = mongo_dir.clone();
        let (mongo, redis, kms) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let mongo = match &durable {
                Some(dir) => ServerProcess::mongo_durable(dir)?,
                None => ServerProcess::mongo()?,
            };
            Ok((mongo, ServerProcess::redis()?, ServerProcess::kms()?))
        })
        .await??;
        let key_id = crate::cluster::create_kms_key(&crate::cluster::kms_client(kms.port)).await?;
        let (mongo_proxy, redis_proxy, kms_proxy) = if options.faults {
            (
                Some(FaultProxy::start(loopback(mongo.port)).await?),
                Some(FaultProxy::start(loopback(redis.port)).await?),
                Some(FaultProxy::start(loopback(kms.port)).await?),
            )
        } else {
            (None, None, None)
        };
        // The ports the services are told: the proxies' when there are proxies.
        let via = |proxy: &Option<FaultProxy>, port: u16| proxy.as_ref().map_or(port, |p| p.addr.port());
        let certs = ts_devca::write_dev_certs(&dir.path().join("certs")).context("cannot write certificates")?;
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir_all(&mail_dir)?;
        let database = format!("stack_{}", uuid::Uuid::new_v4().simple());
        let ports: Vec<(Service, u16)> = Service::ALL.iter().map(|s| (*s, free_port())).collect();
        let port = |svc: Service| ports.iter().find(|(s, _)| *s == svc).map_or(0, |(_, p)| *p);

        let otlp = match options.otlp {
            Some(otlp) => format!("otlp_endpoint = \"http://{otlp}\"\n"),
            None => String::new(),
        };
        let mut text = format!(
            r#"# Written by the test kit for one ProcessStack.
production = false

[telemetry]
log_filter = {log_filter}
{otlp}
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
            ca = path(&certs.ca_cert()),
            mongo = via(&mongo_proxy, mongo.port),
            redis = via(&redis_proxy, redis.port),
            kms = via(&kms_proxy, kms.port),
            key_id = quoted(&key_id),
            region = crate::cluster::KMS_REGION,
            signing = path(&certs.token_signing_key()),
            secret = path(&certs.auth_secret()),
            mail = path(&mail_dir),
        );
        for svc in Service::ALL {
            let peer = svc.peer();
            text.push_str(&format!("\n[{}]\nlisten = \"127.0.0.1:{}\"\n", svc.name(), port(svc)));
            if svc == Service::Gateway {
                // The first read of a 100,000-item folder sorts the whole folder on the
                // MongoDB-compatible server (~4 s; MongoDB walks the index); later reads are
                // served from memory.
                text.push_str("downstream_timeout_ms = 60000\n");
                text.push_str(&format!(
                    "public_cert = {}\npublic_key = {}\n",
                    path(&certs.public_cert()),
                    path(&certs.public_key())
                ));
            }
            text.push_str(&format!("cert = {}\nkey = {}\n", path(&certs.cert(peer)), path(&certs.key(peer))));
        }
        text.push_str("\n[upstreams]\n");
        for svc in Service::ALL.into_iter().filter(|s| *s != Service::Gateway) {
            text.push_str(&format!("{} = {{ url = \"https://127.0.0.1:{}\" }}\n", svc.name(), port(svc)));
        }
        if !options.extra_toml.trim().is_empty() {
            let mut table: toml::Table = text.parse().context("the stack's own configuration does not parse")?;
            let extra: toml::Table = options.extra_toml.parse().context("StackOptions::extra_toml is not TOML")?;
            merge(&mut table, extra);
            text = toml::to_string(&table)?;
        }
        let config = dir.path().join("teamshare.toml");
        std::fs::write(&config, text).with_context(|| format!("cannot write {}", config.display()))?;

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
        env.extend(options.env.iter().cloned());
        let mut services = Vec::new();
        for svc in Service::ALL {
            services.push((svc, start_service_process(svc, &options.binary, &config, &env, port(svc))?));
        }
        let stack = ProcessStack {
            services,
            mongo,
            redis,
            kms,
            certs,
            mail_dir,
            database,
            mongo_proxy,
            redis_proxy,
            kms_proxy,
            binary: options.binary.clone(),
            config,
            env,
            ports,
            mongo_dir,
            _dir: dir,
        };
        for svc in Service::ALL {
            stack.wait_service_healthy(svc).await?;
        }
        Ok(stack)
    }

    /// Waits until `service` answers a health check (a service binds its port before it has
    /// connected to its stores and built itself).
    pub async fn wait_service_healthy(&self, service: Service) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let attempt = async {
                let channel = match service {
                    Service::Gateway => self.gateway().await?,
                    _ => self.internal(service, Peer::Operator).await?,
                };
                HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
                anyhow::Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(())) => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    let log = self.service(service).map(|p| p.log_path().display().to_string()).unwrap_or_default();
                    bail!("{} did not become healthy; log: {log}", service.name())
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The process of `service`.
    pub fn service(&self, service: Service) -> anyhow::Result<&ServerProcess> {
        self.services.iter().find(|(s, _)| *s == service).map(|(_, p)| p).context("service not started")
    }

    fn service_mut(&mut self, service: Service) -> anyhow::Result<&mut ServerProcess> {
        self.services.iter_mut().find(|(s, _)| *s == service).map(|(_, p)| p).context("service not started")
    }

    /// Where `service` listens (its port stays the same across `kill_service` and
    /// `start_service`).
    pub fn addr(&self, service: Service) -> SocketAddr {
        loopback(self.ports.iter().find(|(s, _)| *s == service).map_or(0, |(_, p)| *p))
    }

    /// Kills `service` the hard way (SIGKILL, as when its pod or node dies: no draining),
    /// and waits until it is gone. `start_service` starts it again.
    pub async fn kill_service(&mut self, service: Service) -> anyhow::Result<()> {
        self.service_mut(service)?.kill();
        Ok(())
    }

    /// Starts `service` again after `kill_service`, on the same port with the same
    /// configuration and environment, and waits until it answers a health check.
    pub async fn start_service(&mut self, service: Service) -> anyhow::Result<()> {
        if self.service(service)?.server_pid().is_some() {
            bail!("{} is still running: kill it first", service.name());
        }
        let (binary, config, env) = (self.binary.clone(), self.config.clone(), self.env.clone());
        let port = self.addr(service).port();
        let process =
            tokio::task::spawn_blocking(move || start_service_process(service, &binary, &config, &env, port)).await??;
        *self.service_mut(service)? = process;
        self.wait_service_healthy(service).await
    }

    /// Kills the MongoDB-compatible server the hard way (SIGKILL: only what it synced
    /// survives) and waits until it is gone. The services see their connections end and new
    /// ones refused (with `faults`, accepted by the proxy and closed at once).
    pub async fn stop_mongo(&mut self) -> anyhow::Result<()> {
        self.mongo.kill();
        Ok(())
    }

    /// Starts the MongoDB-compatible server again on the same port (and, when durable, the
    /// same storage, so that every acknowledged write is back) and waits until it accepts
    /// connections.
    pub async fn start_mongo(&mut self) -> anyhow::Result<()> {
        if self.mongo.server_pid().is_some() {
            bail!("mongo is still running: stop it first");
        }
        let (port, dir) = (self.mongo.port, self.mongo_dir.clone());
        self.mongo = tokio::task::spawn_blocking(move || match dir {
            Some(dir) => ServerProcess::mongo_durable_on(port, &dir),
            None => ServerProcess::mongo_on(port),
        })
        .await??;
        Ok(())
    }

    /// Kills Redis (SIGKILL) and waits until it is gone.
    pub async fn stop_redis(&mut self) -> anyhow::Result<()> {
        self.redis.kill();
        Ok(())
    }

    /// Starts Redis again on the same port, empty (it keeps nothing on disk), and waits until
    /// it answers.
    pub async fn start_redis(&mut self) -> anyhow::Result<()> {
        if self.redis.server_pid().is_some() {
            bail!("redis is still running: stop it first");
        }
        let port = self.redis.port;
        self.redis = tokio::task::spawn_blocking(move || ServerProcess::redis_on(port)).await??;
        Ok(())
    }

    /// The proxy in front of MongoDB (with `faults`).
    pub fn mongo_proxy(&self) -> Option<&FaultProxy> {
        self.mongo_proxy.as_ref()
    }

    /// The proxy in front of Redis (with `faults`).
    pub fn redis_proxy(&self) -> Option<&FaultProxy> {
        self.redis_proxy.as_ref()
    }

    /// The proxy in front of the KMS API (with `faults`).
    pub fn kms_proxy(&self) -> Option<&FaultProxy> {
        self.kms_proxy.as_ref()
    }

    /// What a workload needs to drive this stack: the gateway, auth's internal address (for
    /// operator calls), the certificates, the mail directory and the database, read through
    /// the real MongoDB-compatible server (never through its proxy).
    pub fn target(&self) -> crate::workload::Target {
        crate::workload::Target {
            gateway: self.addr(Service::Gateway),
            certs: self.certs.clone(),
            auth: self.addr(Service::Auth),
            mail_dir: self.mail_dir.clone(),
            mongo_uri: mongo_uri(self.mongo.port),
            database: self.database.clone(),
        }
    }

    /// A new connection to the gateway's public TLS listener, trusting the dev CA.
    pub async fn gateway(&self) -> anyhow::Result<Channel> {
        public_channel(&self.certs, self.addr(Service::Gateway).port()).await
    }

    /// A new mTLS connection to an internal `service`, presenting `as_peer`'s certificate.
    pub async fn internal(&self, service: Service, as_peer: Peer) -> anyhow::Result<Channel> {
        let (cert, key) = (std::fs::read(self.certs.cert(as_peer))?, std::fs::read(self.certs.key(as_peer))?);
        let ca = std::fs::read(self.certs.ca_cert())?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(service.name());
        let addr = self.addr(service);
        Ok(Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?)
    }

    /// The stack's database (through the real server, not its proxy), for seeding rows that
    /// need no encryption and for reading what was stored.
    pub async fn database(&self) -> anyhow::Result<mongodb::Database> {
        let config = ts_config::MongoConfig { uri: mongo_uri(self.mongo.port).into(), database: self.database.clone() };
        Ok(ts_stores::mongo(&config, false, "ts-testkit-stack").await?)
    }

    /// Every process of the stack, by name, for the memory report and for finding pids.
    pub fn processes(&self) -> Vec<(&'static str, &ServerProcess)> {
        let mut all: Vec<(&'static str, &ServerProcess)> = self.services.iter().map(|(s, p)| (s.name(), p)).collect();
        all.extend([("mongo", &self.mongo), ("redis", &self.redis), ("kms (moto)", &self.kms)]);
        all
    }
}

/// A direct connection string for the MongoDB-compatible server on loopback `port`.
fn mongo_uri(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

/// A new TLS connection to a server on loopback `port` that presents a certificate for
/// `localhost` from the dev CA (the gateway's public listener, the echo, the forwarder).
pub async fn public_channel(certs: &DevCertPaths, port: u16) -> anyhow::Result<Channel> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    Ok(public_endpoint(certs, addr)?.tcp_nodelay(true).connect().await?)
}

/// The endpoint of a server at `addr` that presents a certificate for `localhost` from the
/// dev CA, for callers that set their own timeouts or connect lazily.
pub fn public_endpoint(certs: &DevCertPaths, addr: SocketAddr) -> anyhow::Result<Endpoint> {
    let ca = std::fs::read(certs.ca_cert()).context("reading the CA certificate")?;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
    Ok(Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?)
}
