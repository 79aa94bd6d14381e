//! Calls to internal services: mTLS, spread round-robin over every address the callee's
//! host resolves to (the pods behind a headless Service), re-resolved every
//! `upstream_dns_refresh_secs`; a call that provably never reached a server (the connection
//! was refused, the server had stopped taking new streams) is sent again to another replica;
//! connections are rebuilt with renewed certificates; every call carries the trace context
//! and the request id, and gets a client span and a `rpc.client.call.duration` measurement.
//!
//! The callee's URL may list several `https://host:port` targets separated by commas; each
//! host's addresses all join the pool. A resolution that fails or finds nothing keeps the
//! addresses known before (a DNS blip must not empty the pool).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use opentelemetry::metrics::Histogram;
use tonic::body::Body;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Uri};
use tower::{Service, ServiceExt};

use crate::layers::{RPC_DURATION_BUCKETS, rpc_attributes, split_path, status_code};
use crate::server::{REQUEST_ID_HEADER, current_request_id};
use crate::telemetry;
use crate::tls::MtlsMaterial;
use ts_config::{ConfigError, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A channel to an internal service; generated clients take it as their transport.
pub type InternalChannel = Propagate<Balanced>;

/// How calls to one internal service behave.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Every call's deadline, retries included.
    pub timeout: Duration,
    /// How often the hosts are resolved again.
    pub refresh: Duration,
}

/// How many times one call is sent at most (only ever again when it never reached a server).
const ATTEMPTS: usize = 3;
/// How long a replica whose connection failed is passed over (doubling, up to the maximum).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Opens a lazily-connected, balanced mTLS channel to `upstream`, presenting `material`'s
/// identity (as it is at each new connection). `service` is the callee's name, used as the
/// expected TLS name unless overridden and in error messages.
pub fn connect(
    service: &str,
    upstream: &Upstream,
    material: &MtlsMaterial,
    settings: Settings,
) -> Result<InternalChannel, ConfigError> {
    let key = format!("upstreams.{service}.url");
    let mut targets = Vec::new();
    for url in upstream.url.split(',').map(str::trim) {
        if !url.starts_with("https://") {
            return Err(ConfigError::key(
                key,
                "internal services are reached over mTLS: every url must start with https://",
            ));
        }
        let origin: Uri = url.parse().map_err(|e: http::uri::InvalidUri| ConfigError::key(&key, e.to_string()))?;
        let host = origin.host().ok_or_else(|| ConfigError::key(&key, "no host in the url"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = origin.port_u16().unwrap_or(443);
        targets.push(Target { host, port, origin });
    }
    let shared = Arc::new(Shared {
        service: service.to_owned(),
        server_name: upstream.server_name.clone().unwrap_or_else(|| service.to_owned()),
        targets,
        material: material.clone(),
        settings,
        backends: RwLock::new(Arc::new(Vec::new())),
        next: AtomicUsize::new(0),
        resolving: tokio::sync::Mutex::new(()),
    });
    // Literal addresses are known at once; names on the first call or resolution.
    shared.install(shared.targets.iter().enumerate().filter_map(|(i, t)| Some((t.literal()?, i))).collect());
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| ConfigError::key(&key, "internal channels are opened inside the Tokio runtime"))?;
    runtime.spawn(refresh(Arc::downgrade(&shared), material.changes(), settings.refresh));
    let duration = opentelemetry::global::meter("teamshare")
        .f64_histogram("rpc.client.call.duration")
        .with_unit("s")
        .with_description("Duration of calls to internal services, by method and status code")
        .with_boundaries(RPC_DURATION_BUCKETS.to_vec())
        .build();
    Ok(Propagate { inner: Balanced { shared }, duration })
}

/// One configured `https://host:port`.
struct Target {
    host: String,
    port: u16,
    origin: Uri,
}

impl Target {
    fn literal(&self) -> Option<SocketAddr> {
        self.host.parse().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// One replica: an address and the connection to it.
struct Backend {
    addr: SocketAddr,
    target: usize,
    channel: Channel,
    /// After a failed connection: passed over until then, and the next backoff.
    down: Mutex<Option<(Instant, Duration)>>,
}

impl Backend {
    fn is_down(&self, now: Instant) -> bool {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|(until, _)| now < until)
    }

    fn failed(&self) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        let backoff = down.map_or(FIRST_BACKOFF, |(_, b)| (b * 2).min(MAX_BACKOFF));
        *down = Some((Instant::now() + backoff, backoff));
    }

    fn worked(&self) {
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some() {
            *down = None;
        }
    }
}

struct Shared {
    service: String,
    server_name: String,
    targets: Vec<Target>,
    material: MtlsMaterial,
    settings: Settings,
    backends: RwLock<Arc<Vec<Arc<Backend>>>>,
    next: AtomicUsize,
    resolving: tokio::sync::Mutex<()>,
}

impl Shared {
    fn backends(&self) -> Arc<Vec<Arc<Backend>>> {
        self.backends.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn backend(&self, addr: SocketAddr, target: usize, tls: ClientTlsConfig) -> Option<Arc<Backend>> {
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .and_then(|e| e.tls_config(tls))
            .map_err(|e| tracing::error!(service = %self.service, %addr, error = %e, "cannot build a connection"))
            .ok()?;
        let channel = endpoint
            .origin(self.targets[target].origin.clone())
            .connect_timeout(Duration::from_secs(2))
            .timeout(self.settings.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Some(Arc::new(Backend { addr, target, channel, down: Mutex::new(None) }))
    }

    /// Makes `found` the pool, keeping the connections to addresses already in it.
    fn install(&self, found: Vec<(SocketAddr, usize)>) {
        if found.is_empty() {
            return;
        }
        let tls = self.material.client_config(&self.server_name);
        let current = self.backends();
        let next: Vec<Arc<Backend>> = found
            .iter()
            .filter_map(|(addr, target)| {
                current.iter().find(|b| b.addr == *addr).cloned().or_else(|| self.backend(*addr, *target, tls.clone()))
            })
            .collect();
        let same = next.len() == current.len() && next.iter().all(|b| current.iter().any(|c| Arc::ptr_eq(b, c)));
        if !same {
            let addrs: Vec<String> = next.iter().map(|b| b.addr.to_string()).collect();
            tracing::info!(service = %self.service, replicas = ?addrs, "upstream replicas changed");
            *self.backends.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        }
    }

    /// New connections for every replica, with the certificates as they are now. Calls in
    /// flight finish on the connections they started on.
    fn reconnect_all(&self) {
        let tls = self.material.client_config(&self.server_name);
        // A replica whose connection cannot be rebuilt keeps the one it has.
        let next: Vec<Arc<Backend>> = self
            .backends()
            .iter()
            .map(|b| self.backend(b.addr, b.target, tls.clone()).unwrap_or_else(|| b.clone()))
            .collect();
        *self.backends.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        tracing::info!(service = %self.service, "certificates changed: new connections to the upstream use them");
    }

    /// Resolves every target again and installs what was found.
    async fn resolve(&self) {
        let _one_at_a_time = self.resolving.lock().await;
        let current = self.backends();
        let mut found = Vec::new();
        for (i, target) in self.targets.iter().enumerate() {
            if let Some(addr) = target.literal() {
                found.push((addr, i));
                continue;
            }
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout(Duration::from_secs(5), lookup).await {
                Ok(Ok(addrs)) => {
                    let before = found.len();
                    for addr in addrs {
                        if !found.iter().any(|(f, _)| *f == addr) {
                            found.push((addr, i));
                        }
                    }
                    if found.len() == before {
                        found.extend(current.iter().filter(|b| b.target == i).map(|b| (b.addr, i)));
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(service = %self.service, host = %target.host, error = %e, "cannot resolve the upstream; keeping its known replicas");
                    found.extend(current.iter().filter(|b| b.target == i).map(|b| (b.addr, i)));
                }
                Err(_) => {
                    tracing::warn!(service = %self.service, host = %target.host, "resolving the upstream timed out; keeping its known replicas");
                    found.extend(current.iter().filter(|b| b.target == i).map(|b| (b.addr, i)));
                }
            }
        }
        self.install(found);
    }

    /// The next replica round-robin, passing over those whose connection just failed and
    /// those `tried` already (unless nothing else is left).
    fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<Backend>> {
        let backends = self.backends();
        if backends.is_empty() {
            return None;
        }
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let nth = |k: usize| &backends[(start + k) % backends.len()];
        let fresh = |b: &Arc<Backend>| !tried.contains(&b.addr);
        (0..backends.len())
            .map(nth)
            .find(|b| fresh(b) && !b.is_down(now))
            .or_else(|| (0..backends.len()).map(nth).find(|b| fresh(b)))
            .or_else(|| Some(nth(0)))
            .cloned()
    }

    async fn call(self: Arc<Self>, req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
        // Internal requests are single messages (no client streaming): kept whole, a call can
        // be sent again.
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await?.to_bytes();
        let mut tried = Vec::new();
        let mut last: Option<BoxError> = None;
        for attempt in 0..ATTEMPTS {
            if self.backends().is_empty() {
                self.resolve().await;
            }
            let Some(backend) = self.pick(&tried) else {
                return Err(Box::new(tonic::Status::unavailable(format!(
                    "{}: no replica address known",
                    self.service
                ))));
            };
            if attempt > 0 {
                // Give a restarting replica (or the only one) a moment.
                tokio::time::sleep(Duration::from_millis(25u64 << attempt)).await;
            }
            let mut request = http::Request::new(Body::new(http_body_util::Full::new(bytes.clone())));
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            *request.extensions_mut() = parts.extensions.clone();
            let mut channel = backend.channel.clone();
            let result = match channel.ready().await {
                Ok(ready) => ready.call(request).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(response) => {
                    backend.worked();
                    return Ok(response);
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    if !never_reached_a_server(&*e) {
                        return Err(lost_mid_call(&self.service, e));
                    }
                    // Passed over for a while only when it could not be reached at all (a
                    // GOAWAY race on a healthy replica is no reason).
                    if is_connect_error(&*e) {
                        backend.failed();
                    }
                    tracing::debug!(service = %self.service, addr = %backend.addr, error = %e, "call never reached the replica; trying another");
                    tried.push(backend.addr);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Box::new(tonic::Status::unavailable("no replica answered"))))
    }
}

/// A call that may have reached a replica but got no answer: the connection closed or was
/// reset under it (the replica was killed or restarted) → UNAVAILABLE; the deadline passed →
/// DEADLINE_EXCEEDED. Either is what every caller retries or passes on as "retry later",
/// instead of the UNKNOWN "transport error" or CANCELLED "Timeout expired" the client library
/// would make of it. Any other failure (an HTTP/2 protocol error, a status) stays as it is:
/// a retry would meet it again.
fn lost_mid_call(service: &str, e: BoxError) -> BoxError {
    if e.is::<tonic::Status>() {
        return e;
    }
    if sources(&*e).any(|e| e.is::<tonic::TimeoutExpired>()) {
        return Box::new(tonic::Status::deadline_exceeded(format!("{service}: no answer before the deadline")));
    }
    if is_lost_connection(&*e) {
        tracing::debug!(service, error = %e, "connection lost mid-call");
        return Box::new(tonic::Status::unavailable(format!("{service}: connection lost mid-call")));
    }
    e
}

/// Whether `e` (or an error under it) says the connection closed or was reset under a call:
/// a peer that went away, not a peer that misbehaved (an HTTP/2 protocol or size error is
/// not this).
pub fn is_lost_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, NotConnected, UnexpectedEof};
    sources(e).any(|e| {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected
            );
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return h.is_closed() || h.is_incomplete_message() || h.is_canceled();
        }
        if let Some(h) = e.downcast_ref::<h2::Error>() {
            return h.is_io() || h.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        false
    })
}

/// `e` and every error under it.
fn sources<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    sources(e).any(|e| e.downcast_ref::<tonic::ConnectError>().is_some())
}

/// The caller's own deadline from a `grpc-timeout` header (`<digits><unit>`, gRPC's format).
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Whether a failed call provably never reached a server, so that sending it again cannot
/// do anything twice: the connection could not be made, or the server refused the stream
/// unprocessed (REFUSED_STREAM, or a GOAWAY that left it out), or the request never left.
fn never_reached_a_server(e: &(dyn std::error::Error + 'static)) -> bool {
    for e in sources(e) {
        if e.downcast_ref::<tonic::ConnectError>().is_some()
            || e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR));
        }
    }
    false
}

async fn refresh(
    shared: Weak<Shared>,
    mut certificates: tokio::sync::watch::Receiver<Arc<crate::tls::Loaded>>,
    every: Duration,
) {
    certificates.mark_unchanged();
    loop {
        match shared.upgrade() {
            Some(s) => s.resolve().await,
            None => return,
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = certificates.changed() => {
                if changed.is_err() {
                    return;
                }
                match shared.upgrade() {
                    Some(s) => s.reconnect_all(),
                    None => return,
                }
            }
        }
    }
}

/// The balanced transport under every internal client (see the module's documentation).
#[derive(Clone)]
pub struct Balanced {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balanced").field("service", &self.shared.service).finish_non_exhaustive()
    }
}

impl Balanced {
    /// The replica addresses calls are spread over now.
    pub fn replicas(&self) -> Vec<SocketAddr> {
        self.shared.backends().iter().map(|b| b.addr).collect()
    }
}

impl Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        // Attempts, pauses and connecting all fit in the caller's own deadline, when it has one.
        let deadline = grpc_timeout(req.headers()).map_or(shared.settings.timeout, |d| d.min(shared.settings.timeout));
        Box::pin(async move {
            match tokio::time::timeout(deadline, shared.call(req)).await {
                Ok(result) => result,
                Err(_) => {
                    Err(Box::new(tonic::Status::deadline_exceeded("internal call deadline exceeded")) as BoxError)
                }
            }
        })
    }
}

/// Tower middleware that adds `traceparent` and `x-request-id` to outgoing requests, and
/// wraps each call in a client span and a duration measurement (ended when the response's
/// status is known: its trailers, or the headers of an error).
#[derive(Clone)]
pub struct Propagate<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Propagate<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Propagate").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> Propagate<S> {
    /// The transport under the middleware.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S> Service<http::Request<Body>> for Propagate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        telemetry::inject_span(&span, req.headers_mut());
        if let Some(id) = current_request_id()
            && let Ok(v) = http::HeaderValue::from_str(&id.0)
        {
            req.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        let call = Call {
            span,
            start: Instant::now(),
            service: service.to_owned(),
            method: method.to_owned(),
            duration: self.duration.clone(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(response) => {
                    let code = response.headers().get("grpc-status").map(|_| status_code(&response));
                    match code {
                        Some(code) => {
                            call.end(code);
                            Ok(response)
                        }
                        None => Ok(response.map(|body| Body::new(Observed { inner: body, call: Some(call) }))),
                    }
                }
                Err(e) => {
                    let e: BoxError = e.into();
                    call.end(error_code(&*e));
                    Err(e)
                }
            }
        })
    }
}

/// The status code a client sees for a call that failed without a response: the status the
/// error carries, else UNAVAILABLE for a connection or HTTP/2 failure, else UNKNOWN.
fn error_code(e: &(dyn std::error::Error + 'static)) -> i32 {
    for e in sources(e) {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return status.code() as i32;
        }
        if e.downcast_ref::<tonic::ConnectError>().is_some()
            || e.downcast_ref::<hyper::Error>().is_some()
            || e.downcast_ref::<h2::Error>().is_some()
        {
            return tonic::Code::Unavailable as i32;
        }
    }
    tonic::Code::Unknown as i32
}

/// One call being measured.
struct Call {
    span: tracing::Span,
    start: Instant,
    service: String,
    method: String,
    duration: Histogram<f64>,
}

impl Call {
    fn end(self, code: i32) {
        self.span.record("rpc.grpc.status_code", code);
        if code != 0 {
            // A client span is an error whenever the call did not succeed.
            self.span.record("otel.status_code", "ERROR");
        }
        self.duration.record(self.start.elapsed().as_secs_f64(), &rpc_attributes(&self.service, &self.method, code));
    }
}

/// A response body that ends its call's measurement when the status arrives in the
/// trailers (or the body ends or is dropped without one: CANCELLED).
struct Observed {
    inner: Body,
    call: Option<Call>,
}

impl http_body::Body for Observed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame
                .trailers_ref()
                .map(|t| t.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(2)),
            Poll::Ready(Some(Err(status))) => Some(status.code() as i32),
            Poll::Ready(None) => Some(tonic::Code::Unknown as i32),
            Poll::Pending => None,
        };
        if let (Some(code), Some(call)) = (code, self.call.take()) {
            call.end(code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.end(tonic::Code::Cancelled as i32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_calls_that_never_reached_a_server_are_sent_again() {
        let refused = tonic::ConnectError(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(never_reached_a_server(&refused));
        let refused_stream = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert!(never_reached_a_server(&refused_stream));
        // Reset in the middle of a call: it may have been processed.
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(!never_reached_a_server(&reset));
        let cancelled = h2::Error::from(h2::Reason::CANCEL);
        assert!(!never_reached_a_server(&cancelled));
        assert!(!never_reached_a_server(&tonic::Status::deadline_exceeded("late")));
    }

    #[test]
    fn the_callers_deadline_is_read_in_every_unit_and_nonsense_is_none() {
        let header = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("grpc-timeout", v.parse().unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(header("300m"), Some(Duration::from_millis(300)));
        assert_eq!(header("2S"), Some(Duration::from_secs(2)));
        assert_eq!(header("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(header("5u"), Some(Duration::from_micros(5)));
        assert_eq!(header("m"), None);
        assert_eq!(header("12x"), None);
        assert_eq!(header(""), None);
    }
}
