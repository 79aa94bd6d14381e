//! Calling internal services on behalf of a public caller: a fresh request carrying only the
//! message and the verified identity, a deadline, and errors mapped to what a public client
//! may see.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use tonic::{Code, Request, Response, Status};
use ts_contract::user::CLIENT_ADDR_HEADER;
use ts_contract::user::UserContext;
use ts_runtime::server::current_request_id;

use ts_contract::status::{self, Reason, UNAVAILABLE_RETRY, ensure_reason, reason_of, retry_delay};

/// Forwards `request`'s message through `call`, with `user` attached and a deadline of the
/// smaller of the client's and `limit`. Client metadata is not forwarded, so a client
/// cannot forge identity headers.
pub async fn forward<Q, R, F, Fut>(
    request: Request<Q>,
    user: Option<UserContext>,
    limit: Duration,
    trusted_proxies: &[IpNet],
    call: F,
) -> Result<Response<R>, Status>
where
    F: FnOnce(Request<Q>) -> Fut,
    Fut: Future<Output = Result<Response<R>, Status>>,
{
    let deadline = client_deadline(&request).map_or(limit, |d| d.min(limit));
    let client_addr = client_addr(&request, trusted_proxies).map(|a| a.to_string());
    let mut out = Request::new(request.into_inner());
    if let Some(user) = &user {
        user.attach(out.metadata_mut());
    }
    if let Some(addr) = client_addr.and_then(|a| a.parse().ok()) {
        out.metadata_mut().insert(CLIENT_ADDR_HEADER, addr);
    }
    out.set_timeout(deadline);
    match call(out).await {
        Ok(response) => Ok(Response::new(response.into_inner())),
        Err(status) => Err(public_status(status)),
    }
}

/// The client's address, as per-client limits count it: the peer's (or the one its trusted
/// PROXY header named), unless the peer is a trusted proxy; then the right-most address in
/// `x-forwarded-for` that is not a trusted proxy (each proxy appends the address it saw, so
/// anything left of that is the client's to invent). An entry that does not parse ends the
/// walk at the last trusted hop. An IPv6 client is its /64: one host can take any address of
/// its prefix, so a finer key would give it endless budgets.
pub fn client_addr<T>(request: &Request<T>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request.remote_addr()?.ip().to_canonical();
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    if !is_trusted(&peer) {
        return Some(per_client(peer));
    }
    // Read as bytes: one header line with a stray non-ASCII byte must not hide the address
    // a trusted proxy appended to it.
    let lines: Vec<String> = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_encoded_bytes()).into_owned())
        .collect();
    let mut hop = peer;
    for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')).map(str::trim) {
        let parsed = entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()));
        let Some(addr) = parsed.map(|a| a.to_canonical()) else { return Some(per_client(hop)) };
        if !is_trusted(&addr) {
            return Some(per_client(addr));
        }
        hop = addr;
    }
    Some(per_client(hop))
}

/// The key one client is counted under: an IPv4 address, or an IPv6 address's /64.
fn per_client(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod client_addr_tests {
    use super::*;

    fn request(peer: &str, forwarded: &[&[u8]]) -> Request<()> {
        let mut r = Request::new(());
        let peer: SocketAddr = peer.parse().unwrap();
        r.extensions_mut()
            .insert(tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: Some(peer) });
        for f in forwarded {
            r.metadata_mut().append("x-forwarded-for", tonic::metadata::MetadataValue::try_from(*f).unwrap());
        }
        r
    }

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies_and_ipv6_by_its_64() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let addr = |peer: &str, f: &[&[u8]]| client_addr(&request(peer, f), &trusted).unwrap().to_string();
        assert_eq!(addr("203.0.113.1:5", &[b"198.51.100.7"]), "203.0.113.1", "an untrusted peer's header is ignored");
        assert_eq!(addr("10.0.0.2:5", &[b"198.51.100.7, 203.0.113.5"]), "203.0.113.5", "right-most untrusted");
        assert_eq!(addr("10.0.0.2:5", &[b"203.0.113.5, 10.0.0.9"]), "203.0.113.5", "trusted hops are skipped");
        assert_eq!(addr("10.0.0.2:5", &[b"198.51.100.7", b"203.0.113.5"]), "203.0.113.5", "header lines in order");
        assert_eq!(addr("10.0.0.2:5", &[b"\xFF-junk, 203.0.113.5"]), "203.0.113.5", "a stray byte hides nothing");
        assert_eq!(addr("10.0.0.2:5", &[b"not-an-address"]), "10.0.0.2", "garbage ends at the last trusted hop");
        assert_eq!(addr("10.0.0.2:5", &[b"203.0.113.5:443"]), "203.0.113.5");
        assert_eq!(addr("10.0.0.2:5", &[b"::ffff:203.0.113.5"]), "203.0.113.5", "IPv4-mapped is IPv4");
        assert_eq!(addr("10.0.0.2:5", &[b"2001:db8:1:2:aaaa::1"]), "2001:db8:1:2::");
        assert_eq!(addr("[2001:db8:1:2::9]:5", &[]), "2001:db8:1:2::", "one /64, one client");
    }
}

/// The client's own deadline from its `grpc-timeout` header.
fn client_deadline<T>(request: &Request<T>) -> Option<Duration> {
    ts_runtime::client::grpc_timeout(request.metadata().as_ref())
}

/// Maps an internal service's error to what a public client sees: caller-facing codes keep
/// their message (and retry hint); internal failures become a bare INTERNAL or UNAVAILABLE
/// naming only the request id, with the cause logged here.
pub fn public_status(status: Status) -> Status {
    let request_id = current_request_id().map(|r| r.0).unwrap_or_default();
    // The connection to the backend broke mid-call (it was killed or restarted): the client
    // library's own UNKNOWN "transport error", never one of our services' answers (those
    // always carry an ErrorInfo). A retry reaches a live replica.
    let code = if lost_connection(&status) { Code::Unavailable } else { status.code() };
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated
        | Code::ResourceExhausted => {
            // Our services' details (ErrorInfo, RetryInfo, BadRequest) pass through;
            // metadata does not.
            ensure_reason(Status::with_details(status.code(), status.message(), status.details().to_vec().into()))
        }
        // CANCELLED from a backend is its own server giving up at the deadline this gateway
        // set ("Timeout expired"): no service answers it on purpose, and the client can
        // retry it like any other deadline.
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
            tracing::warn!(code = ?status.code(), message = status.message(), "backend unavailable");
            let not_yet = reason_of(&status).is_some_and(|r| r == status::reason_name(Reason::NotYetEverywhere));
            let reason = if not_yet { Reason::NotYetEverywhere } else { Reason::Unavailable };
            let message = format!("a backend service is unavailable, retry later (request id {request_id})");
            let wait = retry_delay(&status).unwrap_or(UNAVAILABLE_RETRY);
            status::retry_after(Code::Unavailable, reason, &message, wait)
        }
        _ => {
            tracing::error!(code = ?status.code(), message = status.message(), "backend failed");
            status::failure(Code::Internal, Reason::Internal, format!("internal error (request id {request_id})"))
        }
    }
}

/// Whether `status` is the client library's report of a connection that closed or was reset
/// mid-call (UNKNOWN or INTERNAL, no ErrorInfo, the transport's error as its source saying
/// so). An HTTP/2 protocol error or a bare UNKNOWN stays INTERNAL: a retry meets it again.
fn lost_connection(status: &Status) -> bool {
    matches!(status.code(), Code::Unknown | Code::Internal)
        && reason_of(status).is_none()
        && std::error::Error::source(status).is_some_and(ts_runtime::client::is_lost_connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_mid_call_is_unavailable_and_a_bare_unknown_stays_internal() {
        let broken = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let lost = Status::from_error(Box::new(broken));
        assert_eq!(lost.code(), Code::Unknown, "what tonic makes of a broken connection");
        let s = public_status(lost);
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(retry_delay(&s), Some(UNAVAILABLE_RETRY));
        assert!(!s.message().contains("reset"));
        assert_eq!(public_status(Status::unknown("no source")).code(), Code::Internal);
        let protocol = std::io::Error::other("frame with invalid size");
        assert_eq!(public_status(Status::from_error(Box::new(protocol))).code(), Code::Internal, "not a lost peer");
    }

    #[test]
    fn internal_detail_never_reaches_the_client() {
        let s = public_status(Status::internal("mongodb at 10.0.0.3: connection reset"));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("10.0.0.3"));
        let s = public_status(Status::unknown("h2 protocol error: broken pipe"));
        assert_eq!(s.code(), Code::Internal);
        let s = public_status(Status::deadline_exceeded("keyvault timed out"));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("keyvault"));
        // A backend's server giving up at the gateway's deadline answers CANCELLED.
        let s = public_status(Status::cancelled("Timeout expired"));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(retry_delay(&s), Some(UNAVAILABLE_RETRY));
    }

    #[test]
    fn caller_facing_errors_keep_message_and_details() {
        let mut s = status::resource_exhausted(Reason::RateLimited, "too many invitations", Duration::from_secs(30));
        s.metadata_mut().insert("x-internal", "secret".parse().unwrap());
        let out = public_status(s);
        assert_eq!(out.code(), Code::ResourceExhausted);
        assert_eq!(out.message(), "too many invitations; retry in 30 s");
        assert_eq!(retry_delay(&out), Some(Duration::from_secs(30)));
        assert_eq!(reason_of(&out).as_deref(), Some("RATE_LIMITED"));
        assert!(out.metadata().get("x-internal").is_none());
        let out = public_status(Status::failed_precondition("no reason given"));
        assert_eq!(reason_of(&out).as_deref(), Some("INTERNAL"), "a code without details gets one");
        let out = public_status(Status::unavailable("mongodb at 10.0.0.3 down"));
        assert_eq!(reason_of(&out).as_deref(), Some("UNAVAILABLE"));
        assert_eq!(retry_delay(&out), Some(UNAVAILABLE_RETRY));
    }

    #[test]
    fn client_deadlines_are_parsed() {
        let mut r = Request::new(());
        r.metadata_mut().insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(client_deadline(&r), Some(Duration::from_millis(250)));
        r.metadata_mut().insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(client_deadline(&r), None);
    }
}
