//! Serving one teamshare gRPC service: TLS or mTLS, caller allowlist, request ids, server
//! spans joined to the caller's trace, RPC metrics, health, reflection and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use futures::future::BoxFuture;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;

use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::layers::{CallerAllowlist, DecodeErrors, Layered, RequestContext, RpcMetrics};
use crate::listener::{Accept, incoming};
use crate::tls::{MtlsMaterial, PublicTls};
use ts_contract::identity::{Allowlist, Peer};

/// Header that carries the request id, in requests between services and in every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The transport failed while serving.
    #[error("serving failed: {0}")]
    Transport(#[source] tonic::transport::Error),
    /// The health-only listener could not be bound.
    #[error("cannot bind health listener {addr}: {source}")]
    BindHealth {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Who may connect and how.
#[derive(Clone)]
pub enum Access {
    /// mTLS: a client certificate from the internal CA, and a caller on the allowlist.
    Internal(MtlsMaterial, Arc<Allowlist>),
    /// Server-only TLS; callers authenticate per request (access tokens).
    Public(PublicTls),
}

/// The RPC being served, `package.Service/Method`, in request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcName(pub String);

/// A request id, available to handlers through request extensions and to outgoing calls
/// through a task-local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

tokio::task_local! {
    pub(crate) static CURRENT_REQUEST_ID: RequestId;
}

/// The request id of the request being handled on this task, if any.
pub fn current_request_id() -> Option<RequestId> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// A task that runs while the server serves; its receiver turns `true` when serving ended.
type Background = Box<dyn FnOnce(watch::Receiver<bool>) -> BoxFuture<'static, ()> + Send>;

/// Everything needed to serve one service; build it with `new` and `service`. Every
/// service's `build(config, clock)` returns one, and `serve(listener, shutdown)` runs it.
pub struct ServiceServer {
    name: &'static str,
    access: Access,
    routes: Routes,
    service_names: Vec<&'static str>,
    health_listen: Option<SocketAddr>,
    drain_delay: Duration,
    max_connection_age: Option<Duration>,
    proxy_from: Option<Arc<[ipnet::IpNet]>>,
    background: Vec<Background>,
}

impl std::fmt::Debug for ServiceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceServer").field("name", &self.name).field("services", &self.service_names).finish()
    }
}

impl ServiceServer {
    /// A server for `service` (its name labels logs, spans and metrics, such as "folders").
    pub fn new(service: Peer, access: Access) -> Self {
        let name = service.name();
        ServiceServer {
            name,
            access,
            routes: Routes::default(),
            service_names: Vec::new(),
            health_listen: None,
            drain_delay: Duration::ZERO,
            max_connection_age: None,
            proxy_from: None,
            background: Vec::new(),
        }
    }

    /// Runs `task` beside the server (such as auth's revocation outbox). It is started when
    /// serving starts, told through its receiver when serving has ended, and awaited.
    pub fn background<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.background.push(Box::new(move |stopped| Box::pin(task(stopped))));
        self
    }

    /// Adds a generated gRPC service; health and reflection report it by name.
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Also serves health (only) in plaintext on `addr`, for kubelet probes, which cannot
    /// present a client certificate.
    pub fn health_listen(mut self, addr: Option<SocketAddr>) -> Self {
        self.health_listen = addr;
        self
    }

    /// How long health reports NOT_SERVING before the listener closes, so that load
    /// balancers stop sending new requests first.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// The deployment-wide connection settings: the drain delay and the maximum connection
    /// age.
    pub fn configured(self, config: &ts_config::Config) -> Self {
        self.drain_delay(crate::drain_delay(config)).max_connection_age(config.max_connection_age())
    }

    /// Closes each connection gracefully (GOAWAY; calls in flight finish) once it is `age`
    /// old, so that callers connect again and spread over the replicas there are now.
    pub fn max_connection_age(mut self, age: Duration) -> Self {
        self.max_connection_age = Some(age);
        self
    }

    /// Expects a PROXY protocol v2 header before TLS on every connection, from a peer in
    /// `trusted` (refusing any other), and takes the client's address from it.
    pub fn proxy_protocol_from(mut self, trusted: Option<Arc<[ipnet::IpNet]>>) -> Self {
        self.proxy_from = trusted;
        self
    }

    /// Serves until `shutdown` completes, then turns health NOT_SERVING, waits the drain
    /// delay, stops accepting, and lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        for name in self.service_names.iter().copied().chain([""]) {
            reporter.set_service_status(name, ServingStatus::Serving).await;
        }
        // The public endpoint describes the public API only; internal ports describe all.
        let descriptors = match self.access {
            Access::Internal(..) => ts_proto::FILE_DESCRIPTOR_SET,
            Access::Public(_) => ts_proto::PUBLIC_FILE_DESCRIPTOR_SET,
        };
        let routes = self
            .routes
            .add_service(health.clone())
            .add_service(
                reflection_builder(descriptors, &self.service_names)
                    .build_v1()
                    .expect("embedded descriptors are valid"),
            )
            .add_service(
                reflection_builder(descriptors, &self.service_names)
                    .build_v1alpha()
                    .expect("embedded descriptors are valid"),
            );

        let (tls, allowlist): (Arc<dyn Fn() -> _ + Send + Sync>, _) = match self.access {
            Access::Internal(tls, allow) => (Arc::new(move || tls.server_config()), Some(allow)),
            Access::Public(tls) => (Arc::new(move || tls.server_config()), None),
        };
        let public = allowlist.is_none();
        let accept = Accept { tls, proxy_from: self.proxy_from.clone(), service: self.name };
        let trust_request_ids = allowlist.is_some();
        let guard = tower::ServiceBuilder::new()
            .layer(Layered(RequestContext::new(self.name, trust_request_ids)))
            .layer(Layered(RpcMetrics::new()))
            .layer(Layered(DecodeErrors))
            .layer(Layered(CallerAllowlist::new(allowlist)))
            .service(routes.prepare());

        let (stop_tx, stop_rx) = watch::channel(false);
        let health_task = match self.health_listen {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|source| ServeError::BindHealth { addr, source })?;
                let mut rx = stop_rx.clone();
                let svc = health.clone();
                Some(tokio::spawn(async move {
                    Server::builder()
                        .add_service(svc)
                        .serve_with_incoming_shutdown(TcpListenerStream::new(l), async move {
                            let _ = rx.wait_for(|s| *s).await;
                        })
                        .await
                }))
            }
            None => None,
        };

        let (ended, ended_rx) = watch::channel(false);
        let background: Vec<_> = self.background.into_iter().map(|task| tokio::spawn(task(ended_rx.clone()))).collect();
        let addr = listener.local_addr().ok();
        tracing::info!(service = self.name, addr = ?addr, "serving");
        let name = self.name;
        let names = self.service_names.clone();
        let drain = self.drain_delay;
        let signal = drain_then_stop(shutdown, reporter, names, drain, name, stop_tx);
        // Bounds per connection: streams at once, a dead peer found by keepalive, and (on the
        // public port) how long one request may take, so that a client that trickles a body
        // without a deadline cannot hold a stream, its buffer or a drain forever.
        let mut builder = Server::builder()
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)));
        if public {
            builder = builder.timeout(PUBLIC_REQUEST_TIMEOUT);
        }
        if let Some(age) = self.max_connection_age {
            // GOAWAY at that age; calls in flight finish. No `max_connection_age_grace`: in
            // tonic 0.14 setting it replaces the graceful close by a forced one at age + grace
            // (a connection is then never drained, only cut, calls and all). Calls in flight
            // are bounded by their deadlines instead.
            builder = builder.max_connection_age(age);
        }
        let result = builder
            .serve_with_incoming_shutdown(guard, incoming(listener, accept), signal)
            .await
            .map_err(ServeError::Transport);
        if let Some(task) = health_task {
            let _ = task.await;
        }
        let _ = ended.send(true);
        for task in background {
            let _ = task.await;
        }
        tracing::info!(service = name, "stopped");
        result
    }
}

/// Streams one connection may have open at once.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The longest a public request may take until its response starts (downstream deadlines
/// are far shorter; a body still arriving after this is cut off).
pub const PUBLIC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

async fn drain_then_stop(
    shutdown: impl Future<Output = ()>,
    reporter: HealthReporter,
    names: Vec<&'static str>,
    drain: Duration,
    name: &'static str,
    stop: watch::Sender<bool>,
) {
    shutdown.await;
    tracing::info!(service = name, "shutting down: health is NOT_SERVING, draining in-flight requests");
    for n in names.into_iter().chain([""]) {
        reporter.set_service_status(n, ServingStatus::NotServing).await;
    }
    tokio::time::sleep(drain).await;
    let _ = stop.send(true);
}

fn reflection_builder(
    descriptors: &'static [u8],
    names: &[&'static str],
) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(
            <tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService> as NamedService>::NAME,
        );
    for n in names {
        b = b.with_service_name(*n);
    }
    b
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("received ctrl-c"),
        _ = term => tracing::info!("received SIGTERM"),
    }
}
