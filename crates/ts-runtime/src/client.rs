//! mTLS channels to internal services, carrying trace context and the request id on
//! every call.

use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};

use crate::server::{REQUEST_ID_HEADER, current_request_id};
use crate::telemetry;
use crate::tls::MtlsMaterial;
use ts_config::{ConfigError, Upstream};

/// A channel to an internal service; generated clients take it as their transport.
pub type InternalChannel = Propagate<Channel>;

/// Opens a lazily-connected mTLS channel to `upstream`, presenting `material`'s identity.
/// `service` is the callee's name, used as the expected TLS name unless overridden and
/// in error messages. Every call gets `timeout` as its deadline.
pub fn connect(
    service: &str,
    upstream: &Upstream,
    material: &MtlsMaterial,
    timeout: Duration,
) -> Result<InternalChannel, ConfigError> {
    let key = format!("upstreams.{service}.url");
    if !upstream.url.starts_with("https://") {
        return Err(ConfigError::key(key, "internal services are reached over mTLS: the url must start with https://"));
    }
    let server_name = upstream.server_name.as_deref().unwrap_or(service);
    let channel = Endpoint::from_shared(upstream.url.clone())
        .map_err(|e| ConfigError::key(&key, e.to_string()))?
        .tls_config(material.client_config(server_name))
        .map_err(|e| ConfigError::key(&key, e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(Propagate { inner: channel })
}

/// Tower middleware that adds `traceparent` and `x-request-id` to outgoing requests.
#[derive(Debug, Clone)]
pub struct Propagate<S> {
    inner: S,
}

impl<S> Propagate<S> {
    /// Wraps a transport.
    pub fn new(inner: S) -> Self {
        Propagate { inner }
    }
}

impl<S> tower::Service<http::Request<Body>> for Propagate<S>
where
    S: tower::Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        telemetry::inject_current(req.headers_mut());
        if let Some(id) = current_request_id()
            && let Ok(v) = http::HeaderValue::from_str(&id.0)
        {
            req.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        self.inner.call(req)
    }
}
