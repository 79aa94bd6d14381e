//! The ceilings the real stack is compared with: a bare tonic server answering
//! `grpc.health.v1.Health/Check` over TLS (the echo), and a bare one-hop forwarder (TLS in,
//! each Check passed on to an echo over mTLS, as the gateway passes calls on). No layers, no
//! stores: only the transport the stack also pays for. Each runs as a process of its own
//! (this binary, under a hidden subcommand), as the services do.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use ts_config::Upstream;
use ts_contract::Peer;
use ts_devca::DevCertPaths;
use ts_runtime::client::InternalChannel;
use ts_runtime::tls::MtlsMaterial;
use ts_testkit::ServerProcess;
use ts_testkit::procs::{free_port, tcp_ready};

/// Answers every Check with SERVING and nothing else.
#[derive(Debug, Clone, Copy, Default)]
struct Echo;

#[tonic::async_trait]
impl Health for Echo {
    async fn check(&self, _request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse { status: ServingStatus::Serving as i32 }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the bench echo answers Check only"))
    }
}

/// Passes every Check on to the upstream echo and its answer back.
#[derive(Debug, Clone)]
struct Forwarder {
    upstream: HealthClient<InternalChannel>,
}

#[tonic::async_trait]
impl Health for Forwarder {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let reply = self.upstream.clone().check(request.into_inner()).await?;
        Ok(Response::new(reply.into_inner()))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(&self, _request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("the bench forwarder answers Check only"))
    }
}

/// How a ceiling server listens: TLS with the gateway's public certificate, or mTLS with an
/// internal identity (then `client_ca` is the CA callers must chain to).
#[derive(Debug, Clone, clap::Args)]
pub struct Listen {
    /// Address to listen on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// PEM server certificate.
    #[arg(long)]
    pub cert: PathBuf,
    /// PEM key of the certificate.
    #[arg(long)]
    pub key: PathBuf,
    /// Require client certificates from this CA (mTLS).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
}

/// Where the forwarder sends each call, and as whom.
#[derive(Debug, Clone, clap::Args)]
pub struct Upstreams {
    /// The echo's URL, `https://127.0.0.1:PORT`.
    #[arg(long)]
    pub upstream: String,
    /// The internal CA.
    #[arg(long)]
    pub ca: PathBuf,
    /// PEM client certificate to present.
    #[arg(long)]
    pub client_cert: PathBuf,
    /// PEM key of the client certificate.
    #[arg(long)]
    pub client_key: PathBuf,
}

/// The listener's connections, accepted as the services accept theirs (`ts_runtime::listener`).
fn incoming(listen: &Listen, listener: TcpListener) -> anyhow::Result<ts_runtime::listener::Incoming> {
    let every = Duration::from_secs(3600);
    let tls: std::sync::Arc<dyn Fn() -> _ + Send + Sync> = match &listen.client_ca {
        Some(ca) => {
            let m = MtlsMaterial::reloading(("client_ca", ca), ("cert", &listen.cert), ("key", &listen.key), every)?;
            std::sync::Arc::new(move || m.server_config())
        }
        None => {
            let p = ts_runtime::tls::PublicTls::reloading(("cert", &listen.cert), ("key", &listen.key), every)?;
            std::sync::Arc::new(move || p.server_config())
        }
    };
    let accept = ts_runtime::listener::Accept { tls, proxy_from: None, service: "bench" };
    Ok(ts_runtime::listener::incoming(listener, accept))
}

/// Serves the echo until the process is stopped.
pub async fn serve_echo(listen: Listen) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen.listen).await.with_context(|| format!("cannot bind {}", listen.listen))?;
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(Echo))
        .serve_with_incoming(incoming(&listen, listener)?)
        .await?;
    Ok(())
}

/// Serves the forwarder until the process is stopped. Its upstream channel is built exactly
/// as the services build theirs (`ts_runtime::client::connect`).
pub async fn serve_forwarder(listen: Listen, upstreams: Upstreams) -> anyhow::Result<()> {
    let material = MtlsMaterial::load(
        ("ca", &upstreams.ca),
        ("client_cert", &upstreams.client_cert),
        ("client_key", &upstreams.client_key),
    )?;
    let upstream = Upstream { url: upstreams.upstream, server_name: Some(Peer::Folders.name().to_owned()) };
    let settings = ts_runtime::client::Settings { timeout: Duration::from_secs(10), refresh: Duration::from_secs(60) };
    let channel = ts_runtime::client::connect("echo", &upstream, &material, settings)?;
    let forwarder = Forwarder { upstream: HealthClient::new(channel) };
    let listener = TcpListener::bind(listen.listen).await.with_context(|| format!("cannot bind {}", listen.listen))?;
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(forwarder))
        .serve_with_incoming(incoming(&listen, listener)?)
        .await?;
    Ok(())
}

/// The three ceiling processes: the echo behind TLS, the echo behind mTLS, and the forwarder
/// from TLS to the mTLS echo.
#[derive(Debug)]
pub struct Ceilings {
    /// Echo, TLS (the public certificate, name `localhost`).
    pub echo: ServerProcess,
    /// Echo, mTLS (the folders identity), the forwarder's upstream.
    pub echo_mtls: ServerProcess,
    /// Forwarder, TLS in (the public certificate), mTLS out (the gateway identity).
    pub forwarder: ServerProcess,
}

impl Ceilings {
    /// Starts them from this very binary, with certificates from `certs`.
    pub fn start(certs: &DevCertPaths) -> anyhow::Result<Ceilings> {
        let me = std::env::current_exe().context("cannot find the ts-bench binary")?;
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let start = |name: &'static str, role: &str, extra: Vec<String>| -> anyhow::Result<ServerProcess> {
            let port = free_port();
            let mut args = vec![role.to_owned(), "--listen".to_owned(), format!("127.0.0.1:{port}")];
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ServerProcess::start_on(name, &me, &args, &[], port, tcp_ready)
        };
        let public = vec!["--cert".into(), text(&certs.public_cert()), "--key".into(), text(&certs.public_key())];
        let echo = start("echo", "echo", public.clone())?;
        let echo_mtls = start(
            "echo-mtls",
            "echo",
            vec![
                "--cert".into(),
                text(&certs.cert(Peer::Folders)),
                "--key".into(),
                text(&certs.key(Peer::Folders)),
                "--client-ca".into(),
                text(&certs.ca_cert()),
            ],
        )?;
        let mut forward = public;
        forward.extend([
            "--upstream".into(),
            format!("https://127.0.0.1:{}", echo_mtls.port),
            "--ca".into(),
            text(&certs.ca_cert()),
            "--client-cert".into(),
            text(&certs.cert(Peer::Gateway)),
            "--client-key".into(),
            text(&certs.key(Peer::Gateway)),
        ]);
        let forwarder = start("forwarder", "forward", forward)?;
        Ok(Ceilings { echo, echo_mtls, forwarder })
    }
}

/// A `Check` as a load-generator call over `channels` (worker `w` uses channel `w % n`).
pub fn check_call(channels: Vec<tonic::transport::Channel>) -> crate::load::Call {
    let clients: Vec<HealthClient<tonic::transport::Channel>> = channels.into_iter().map(HealthClient::new).collect();
    crate::load::call(move |worker, _| {
        let mut client = clients[worker % clients.len()].clone();
        async move {
            client.check(HealthCheckRequest { service: String::new() }).await?;
            Ok(())
        }
    })
}
