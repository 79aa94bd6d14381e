//! Accepting connections: TCP without Nagle's delay, an optional PROXY protocol v2 header,
//! then the TLS handshake with the configuration in use at that moment (so a renewed
//! certificate serves the next connection). Handshakes run in their own tasks, bounded in
//! time: a slow or silent client holds up nobody else's connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::tls::HANDSHAKE_TIMEOUT;

/// An accepted TCP connection and the client's address: the peer's, or the one a PROXY
/// header named.
#[derive(Debug)]
pub struct Accepted {
    tcp: TcpStream,
    local: Option<SocketAddr>,
    remote: Option<SocketAddr>,
}

impl Connected for Accepted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo { local_addr: self.local, remote_addr: self.remote }
    }
}

impl AsyncRead for Accepted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Accepted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// How connections are accepted.
#[derive(Clone)]
pub struct Accept {
    /// The TLS configuration in use now (called once per connection).
    pub tls: Arc<dyn Fn() -> Arc<ServerConfig> + Send + Sync>,
    /// When set, every connection starts with a PROXY protocol v2 header, believed only from
    /// a peer in these networks (the load balancers); a connection from anywhere else is
    /// refused, so no workload that reaches the port can name its own address.
    pub proxy_from: Option<Arc<[ipnet::IpNet]>>,
    /// Labels logs.
    pub service: &'static str,
}

/// At most this many handshakes (PROXY header and TLS) run at once per listener; a
/// connection beyond them is closed at once, so a flood of silent or trickling clients costs
/// bounded memory and descriptors and leaves the established connections alone.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// How long a PROXY header may take to arrive (a load balancer sends it at once).
const PROXY_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Accepted TLS connections, as `serve_with_incoming` takes them.
pub type Incoming = ReceiverStream<io::Result<TlsStream<Accepted>>>;

/// TLS connections accepted on `listener`, as a stream for `serve_with_incoming`. Accepting
/// stops when the stream is dropped (the server stopped).
pub fn incoming(listener: TcpListener, accept: Accept) -> Incoming {
    let (tx, rx) = mpsc::channel(128);
    let meter = opentelemetry::global::meter("teamshare");
    let refused = meter
        .u64_counter("tls.handshakes.refused")
        .with_description("Connections closed before or during their handshake, by why")
        .build();
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: pause rather than spin.
                        tracing::warn!(service = accept.service, error = %e, "cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let why = |reason: &'static str| [opentelemetry::KeyValue::new("reason", reason)];
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                refused.add(1, &why("too_many_pending"));
                continue; // dropped: closed at once
            };
            let (tx, accept, refused) = (tx.clone(), accept.clone(), refused.clone());
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, peer, &accept)).await;
                drop(permit);
                match outcome {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        refused.add(1, &why("failed"));
                        tracing::debug!(service = accept.service, %peer, error = %e, "handshake failed");
                    }
                    Err(_) => {
                        refused.add(1, &why("timed_out"));
                        tracing::debug!(service = accept.service, %peer, "handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(mut tcp: TcpStream, peer: SocketAddr, accept: &Accept) -> io::Result<TlsStream<Accepted>> {
    // A socket that refuses the option still serves, only slower: without it every small
    // response waits for the peer's delayed ACK (about 40 ms a call on an idle connection).
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an accepted connection");
    }
    let remote = match &accept.proxy_from {
        None => peer,
        Some(trusted) => {
            let from = peer.ip().to_canonical();
            if !trusted.iter().any(|n| n.contains(&from)) {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, "PROXY header from an untrusted peer"));
            }
            let header = tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_proxy_header(&mut tcp)).await;
            header.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))??.unwrap_or(peer)
        }
    };
    let local = tcp.local_addr().ok();
    let conn = Accepted { tcp, local, remote: Some(remote) };
    TlsAcceptor::from((accept.tls)()).accept(conn).await
}

/// The fixed start of every PROXY protocol v2 header.
const PROXY_V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];
/// The longest header accepted (addresses plus the TLVs load balancers add).
const PROXY_V2_MAX_LEN: usize = 2048;

/// Reads one PROXY protocol v2 header, exactly (nothing after it), and returns the client's
/// address it names; `None` for a LOCAL header (the load balancer's own health check) or an
/// address family without one. A connection without a valid header is refused.
pub async fn read_proxy_header<R: AsyncRead + Unpin>(conn: &mut R) -> io::Result<Option<SocketAddr>> {
    let invalid = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_owned());
    let mut header = vec![0u8; 16];
    conn.read_exact(&mut header).await?;
    if header[..12] != PROXY_V2_SIGNATURE {
        return Err(invalid("no PROXY protocol v2 header"));
    }
    let len = usize::from(u16::from_be_bytes([header[14], header[15]]));
    if len > PROXY_V2_MAX_LEN {
        return Err(invalid("PROXY protocol header too long"));
    }
    header.resize(16 + len, 0);
    conn.read_exact(&mut header[16..]).await?;
    let parsed =
        ppp::v2::Header::try_from(header.as_slice()).map_err(|e| invalid(&format!("bad PROXY header: {e}")))?;
    Ok(match (parsed.command, parsed.addresses) {
        (ppp::v2::Command::Local, _) => None,
        (_, ppp::v2::Addresses::IPv4(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        (_, ppp::v2::Addresses::IPv6(a)) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(src: &str, dst: &str) -> Vec<u8> {
        let (src, dst): (SocketAddr, SocketAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    #[tokio::test]
    async fn a_proxy_header_names_the_client_and_nothing_after_it_is_consumed() {
        let mut bytes = header("203.0.113.7:50123", "10.0.0.1:8443");
        bytes.extend_from_slice(b"\x16\x03\x01 TLS follows");
        let mut reader = bytes.as_slice();
        let addr = read_proxy_header(&mut reader).await.unwrap();
        assert_eq!(addr, Some("203.0.113.7:50123".parse().unwrap()));
        assert_eq!(reader, b"\x16\x03\x01 TLS follows");

        let v6 = header("[2001:db8::9]:4000", "[2001:db8::1]:8443");
        assert_eq!(read_proxy_header(&mut v6.as_slice()).await.unwrap(), Some("[2001:db8::9]:4000".parse().unwrap()));
    }

    #[tokio::test]
    async fn a_connection_without_a_valid_header_is_refused() {
        for bad in [
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 a TLS hello".to_vec(),
            b"PROXY TCP4 203.0.113.7 10.0.0.1 50123 8443\r\n".to_vec(),
            {
                let mut h = header("203.0.113.7:1", "10.0.0.1:2");
                h[14] = 0xff; // a length far past the end
                h[15] = 0xff;
                h
            },
            PROXY_V2_SIGNATURE.to_vec(), // cut short
        ] {
            assert!(read_proxy_header(&mut bad.as_slice()).await.is_err(), "{bad:?}");
        }
    }
}
