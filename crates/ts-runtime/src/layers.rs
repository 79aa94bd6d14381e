//! The tower layers every server runs around its routes, outermost first. Each does one
//! thing and is tested on its own:
//!
//! 1. [`RequestContext`]: the request id (taken from the caller only on internal
//!    servers, whose callers are our own services), the caller's service identity from its
//!    client certificate, and the RPC name, in request extensions; the server span, joined to
//!    the caller's trace; the request id on the response and on the task, for outgoing calls.
//! 2. [`RpcMetrics`]: counts and times every RPC by method and final status code.
//! 3. [`DecodeErrors`]: a request that does not decode (invalid UTF-8 in a string, a
//!    bad wire type) is the caller's fault: INVALID_ARGUMENT, not tonic's INTERNAL. It
//!    recognises the mark the codec puts on decode failures, not any message text.
//! 4. [`CallerAllowlist`]: on internal servers, the caller's identity must be allowed to call
//!    the service; anyone else gets PERMISSION_DENIED before any handler runs.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tracing::Instrument;
use ts_contract::identity::{Allowlist, Peer};
use ts_proto::codec::UNDECODABLE;

use crate::server::{CURRENT_REQUEST_ID, REQUEST_ID_HEADER, RequestId, RpcName};
use crate::telemetry;

type Request = http::Request<Body>;
type Response = http::Response<Body>;

/// The service identities of the client certificates seen, by the certificate's exact DER
/// bytes: every request of a connection carries the same certificate, and parsing it (an
/// X.509 decode with its allocations) on each request was wasted work.
#[derive(Debug, Default)]
struct PeerNames {
    seen: std::sync::Mutex<std::collections::HashMap<Box<[u8]>, Option<Peer>>>,
}

/// Most certificates remembered; more (a rotation, a flood of one-off certificates from the
/// internal CA) empties the memory and starts again.
const PEER_NAMES_MAX: usize = 256;

impl PeerNames {
    /// The service identity named by the caller's client certificate, if any.
    fn of(&self, req: &Request) -> Option<Peer> {
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
        let certs = info.peer_certs()?;
        let der = certs.first()?.as_ref();
        if let Some(known) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(der) {
            return *known;
        }
        let peer = Peer::from_cert_der(der);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= PEER_NAMES_MAX {
            seen.clear();
        }
        seen.insert(der.into(), peer);
        peer
    }
}

/// `/pkg.Service/Method` as (`pkg.Service`, `Method`).
pub fn split_path(path: &str) -> (&str, &str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    (parts.next().unwrap_or_default(), parts.next().unwrap_or_default())
}

/// Whether a request id handed over by a peer is safe to log and pass on.
pub fn valid_request_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The gRPC status code of a response: unary errors travel trailers-only, so the status is in
/// the headers; a response without one ended with grpc-status 0 in its trailers.
pub fn status_code(response: &Response) -> i32 {
    response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).unwrap_or(0)
}

/// What one layer does around a call: given the inner service (ready) and the request, the
/// response. [`Layered`] supplies the tower plumbing, so a layer is only this.
pub trait Around: Clone + Send + Sync + 'static {
    /// Handles `req`, calling `inner` or not.
    fn call<S>(&self, inner: S, req: Request) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static;
}

/// A tower layer made of an [`Around`].
#[derive(Debug, Clone)]
pub struct Layered<A>(pub A);

impl<A: Around, S> tower::Layer<S> for Layered<A> {
    type Service = LayeredService<A, S>;
    fn layer(&self, inner: S) -> Self::Service {
        LayeredService { around: self.0.clone(), inner }
    }
}

/// The service of a [`Layered`].
#[derive(Debug, Clone)]
pub struct LayeredService<A, S> {
    around: A,
    inner: S,
}

impl<A, S> tower::Service<Request> for LayeredService<A, S>
where
    A: Around,
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // Take the ready service and leave a fresh clone behind, as tower requires.
        let clone = self.inner.clone();
        self.around.call(std::mem::replace(&mut self.inner, clone), req)
    }
}

/// Layer 1: request id, caller identity, RPC name, span.
#[derive(Debug, Clone)]
pub struct RequestContext {
    service: &'static str,
    trust_request_ids: bool,
    peers: Arc<PeerNames>,
}

impl RequestContext {
    /// For the server `service`; `trust_request_ids` only where every caller is one of ours.
    pub fn new(service: &'static str, trust_request_ids: bool) -> Self {
        RequestContext { service, trust_request_ids, peers: Arc::default() }
    }
}

impl Around for RequestContext {
    fn call<S>(&self, mut inner: S, mut req: Request) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        let path = req.uri().path().to_owned();
        let (rpc_service, rpc_method) = split_path(&path);
        let peer = self.peers.of(&req);
        let offered = req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok());
        let request_id = match offered {
            Some(id) if self.trust_request_ids && valid_request_id(id) => id.to_owned(),
            _ => uuid::Uuid::new_v4().to_string(),
        };
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = rpc_service,
            rpc.method = rpc_method,
            service = self.service,
            peer = peer.map(Peer::name).unwrap_or("-"),
            request_id = %request_id,
            rpc.grpc.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        // A trace is continued only from our own services: a public caller's `traceparent`
        // would let it choose the trace id in our logs, or join a victim's trace.
        if self.trust_request_ids {
            telemetry::set_remote_parent(&span, req.headers());
        }
        let rid = RequestId(request_id);
        req.extensions_mut().insert(rid.clone());
        req.extensions_mut().insert(RpcName(path.trim_start_matches('/').to_owned()));
        match peer {
            Some(p) => {
                req.extensions_mut().insert(p);
            }
            None => {
                // Only the TLS handshake may name a caller.
                req.extensions_mut().remove::<Peer>();
            }
        }
        let header = http::HeaderValue::from_str(&rid.0).ok();
        let fut = async move {
            let mut response = inner.call(req).await?;
            if let Some(v) = header {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            let code = status_code(&response);
            let span = tracing::Span::current();
            span.record("rpc.grpc.status_code", code);
            if server_error(code) {
                span.record("otel.status_code", "ERROR");
            }
            Ok(response)
        };
        Box::pin(CURRENT_REQUEST_ID.scope(rid, fut.instrument(span)))
    }
}

/// Layer 2: RPC latency by method and status code, as the OpenTelemetry semantic
/// conventions name it: `rpc.server.call.duration` in seconds, with `rpc.system`,
/// `rpc.service`, `rpc.method` and the numeric `rpc.grpc.status_code` (its count is the
/// number of calls).
#[derive(Clone)]
pub struct RpcMetrics {
    duration: Histogram<f64>,
}

impl std::fmt::Debug for RpcMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcMetrics").finish_non_exhaustive()
    }
}

/// Bucket bounds (seconds) of the RPC duration histograms: from a cached read (a few hundred
/// microseconds) to a call that ran into its deadline.
pub const RPC_DURATION_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 10.0];

/// The attributes of one RPC's duration.
pub fn rpc_attributes(service: &str, method: &str, code: i32) -> [KeyValue; 4] {
    [
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", service.to_owned()),
        KeyValue::new("rpc.method", method.to_owned()),
        KeyValue::new("rpc.grpc.status_code", i64::from(code)),
    ]
}

/// Whether a server span of an RPC that ended with `code` is an error: per the semantic
/// conventions, only the codes that say the server failed (a refused or invalid request is
/// the server doing its job).
pub fn server_error(code: i32) -> bool {
    use tonic::Code;
    matches!(
        Code::from_i32(code),
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

impl RpcMetrics {
    /// Instruments from the global meter provider.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("teamshare");
        RpcMetrics {
            duration: meter
                .f64_histogram("rpc.server.call.duration")
                .with_unit("s")
                .with_description("Duration of RPCs handled, by method and status code")
                .with_boundaries(RPC_DURATION_BUCKETS.to_vec())
                .build(),
        }
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Around for RpcMetrics {
    fn call<S>(&self, mut inner: S, req: Request) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        let layer = self.clone();
        let (service, method) = split_path(req.uri().path());
        let (service, method) = (service.to_owned(), method.to_owned());
        Box::pin(async move {
            let start = Instant::now();
            let response = inner.call(req).await?;
            let attrs = rpc_attributes(&service, &method, status_code(&response));
            layer.duration.record(start.elapsed().as_secs_f64(), &attrs);
            Ok(response)
        })
    }
}

/// Layer 3: decode failures answer INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecodeErrors;

impl Around for DecodeErrors {
    fn call<S>(&self, mut inner: S, req: Request) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        let fut = inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            if response.headers_mut().remove(UNDECODABLE).is_some() && status_code(&response) == 13 {
                response.headers_mut().insert("grpc-status", http::HeaderValue::from_static("3"));
            }
            Ok(response)
        })
    }
}

/// Layer 4: the caller allowlist of an internal server (`None`: a public server, where
/// callers prove who they are with access tokens instead).
#[derive(Clone)]
pub struct CallerAllowlist {
    allowlist: Option<Arc<Allowlist>>,
    denied: Counter<u64>,
}

impl std::fmt::Debug for CallerAllowlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerAllowlist").field("allowlist", &self.allowlist).finish_non_exhaustive()
    }
}

impl CallerAllowlist {
    /// Checks callers against `allowlist`, when there is one.
    pub fn new(allowlist: Option<Arc<Allowlist>>) -> Self {
        let denied = opentelemetry::global::meter("teamshare")
            .u64_counter("rpc.server.peer_denied")
            .with_description("RPCs refused by the caller allowlist")
            .build();
        CallerAllowlist { allowlist, denied }
    }
}

impl Around for CallerAllowlist {
    fn call<S>(&self, mut inner: S, req: Request) -> BoxFuture<'static, Result<Response, S::Error>>
    where
        S: tower::Service<Request, Response = Response> + Send + 'static,
        S::Future: Send + 'static,
    {
        let Some(allowlist) = &self.allowlist else {
            return Box::pin(inner.call(req));
        };
        let peer = req.extensions().get::<Peer>().copied();
        if let Some(p) = peer
            && allowlist.check(req.uri().path(), p)
        {
            return Box::pin(inner.call(req));
        }
        let (service, _) = split_path(req.uri().path());
        self.denied.add(1, &[KeyValue::new("rpc.service", service.to_owned())]);
        tracing::warn!(peer = peer.map(Peer::name).unwrap_or("unknown"), "caller not on allowlist");
        let who = peer.map(Peer::name).unwrap_or("a certificate without a teamshare identity");
        let denied = tonic::Status::permission_denied(format!("{who} may not call {service}")).into_http();
        Box::pin(async move { Ok(denied) })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    fn request(path: &str) -> Request {
        http::Request::builder().uri(format!("http://x{path}")).body(Body::empty()).unwrap()
    }

    type Handler = tower::util::BoxCloneService<Request, Response, Infallible>;

    fn answering(status: tonic::Status) -> Handler {
        let status = Arc::new(status);
        Handler::new(tower::service_fn(move |_req: Request| {
            let status = status.clone();
            async move { Ok::<_, Infallible>(clone_status(&status).into_http()) }
        }))
    }

    fn clone_status(s: &tonic::Status) -> tonic::Status {
        tonic::Status::with_metadata(s.code(), s.message(), s.metadata().clone())
    }

    fn ok() -> Handler {
        Handler::new(tower::service_fn(|_req: Request| async {
            Ok::<_, Infallible>(http::Response::new(Body::empty()))
        }))
    }

    #[test]
    fn request_ids_from_peers_are_checked() {
        assert!(valid_request_id("0b8c5f7e-1a2b-4c3d-9e8f-001122334455"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("a b"));
        assert!(!valid_request_id(&"x".repeat(65)));
    }

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(split_path("/teamshare.v1.FolderService/GetFolder"), ("teamshare.v1.FolderService", "GetFolder"));
        assert_eq!(split_path("/bad"), ("bad", ""));
    }

    #[tokio::test]
    async fn the_allowlist_admits_listed_peers_only_and_public_servers_pass_everything() {
        let allow = Arc::new(Allowlist::new().allow("teamshare.internal.v1.KeyVaultService", &[Peer::Folders]));
        let mut svc = Layered(CallerAllowlist::new(Some(allow))).layer(ok());
        let path = "/teamshare.internal.v1.KeyVaultService/GetDataKey";

        let mut admitted = request(path);
        admitted.extensions_mut().insert(Peer::Folders);
        assert_eq!(status_code(&svc.ready().await.unwrap().call(admitted).await.unwrap()), 0);

        let mut other = request(path);
        other.extensions_mut().insert(Peer::Gateway);
        let denied = svc.ready().await.unwrap().call(other).await.unwrap();
        assert_eq!(status_code(&denied), tonic::Code::PermissionDenied as i32);
        let message = denied.headers().get("grpc-message").unwrap().to_str().unwrap().to_owned();
        assert!(message.contains("gateway"), "{message}");

        let anonymous = svc.ready().await.unwrap().call(request(path)).await.unwrap();
        assert_eq!(status_code(&anonymous), tonic::Code::PermissionDenied as i32);

        let mut public = Layered(CallerAllowlist::new(None)).layer(ok());
        assert_eq!(status_code(&public.ready().await.unwrap().call(request(path)).await.unwrap()), 0);
    }

    #[tokio::test]
    async fn only_marked_decode_failures_become_invalid_argument() {
        let marked = ts_proto::codec::mark_undecodable(tonic::Status::internal("whatever tonic says"));
        let mut svc = Layered(DecodeErrors).layer(answering(marked));
        let response = svc.ready().await.unwrap().call(request("/a.B/C")).await.unwrap();
        assert_eq!(status_code(&response), tonic::Code::InvalidArgument as i32);
        assert!(response.headers().get(UNDECODABLE).is_none(), "the mark does not leave the server");

        // Tonic's old wording without the mark is an ordinary INTERNAL.
        let unmarked = tonic::Status::internal("failed to decode Protobuf message");
        let mut svc = Layered(DecodeErrors).layer(answering(unmarked));
        let response = svc.ready().await.unwrap().call(request("/a.B/C")).await.unwrap();
        assert_eq!(status_code(&response), tonic::Code::Internal as i32);
    }

    #[tokio::test]
    async fn request_ids_are_trusted_from_our_services_only_and_reach_the_handler() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let handler = Handler::new(tower::service_fn(move |req: Request| {
            let record = record.clone();
            async move {
                let id = req.extensions().get::<RequestId>().unwrap().0.clone();
                let task = crate::server::current_request_id().unwrap().0;
                let peer = req.extensions().get::<Peer>().copied();
                record.lock().unwrap().push((id, task, peer, req.extensions().get::<RpcName>().unwrap().0.clone()));
                Ok::<_, Infallible>(http::Response::new(Body::empty()))
            }
        }));
        let mut offered = request("/a.B/C");
        offered.headers_mut().insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("abc-1"));
        // A client cannot name itself by sending a Peer: only the TLS handshake does.
        offered.extensions_mut().insert(Peer::Operator);

        let mut internal = Layered(RequestContext::new("folders", true)).layer(handler.clone());
        let response = internal.ready().await.unwrap().call(offered).await.unwrap();
        assert_eq!(response.headers().get(REQUEST_ID_HEADER).unwrap(), "abc-1");

        let mut offered = request("/a.B/C");
        offered.headers_mut().insert(REQUEST_ID_HEADER, http::HeaderValue::from_static("abc-1"));
        let mut public = Layered(RequestContext::new("gateway", false)).layer(handler);
        let response = public.ready().await.unwrap().call(offered).await.unwrap();
        let fresh = response.headers().get(REQUEST_ID_HEADER).unwrap().to_str().unwrap().to_owned();
        assert_ne!(fresh, "abc-1");

        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], ("abc-1".to_owned(), "abc-1".to_owned(), None, "a.B/C".to_owned()));
        assert_eq!((seen[1].0.as_str(), seen[1].1.as_str()), (fresh.as_str(), fresh.as_str()));
    }
}
