//! A TCP proxy on loopback that counts the bytes it carries and can be pointed elsewhere or
//! cut off: it stands between a caller and one replica, as the network of a pod does, so a
//! test sees which replicas serve and can make one vanish the way a killed pod does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy; dropping it cuts every connection and stops listening.
#[derive(Debug)]
pub struct CountingProxy {
    /// Where callers connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    upstream_bytes: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    proxy_header: Arc<Mutex<Option<SocketAddr>>>,
    cut: watch::Sender<bool>,
}

impl CountingProxy {
    /// Listens on a free loopback port; connections are refused (closed) until a target is
    /// set.
    pub async fn start() -> anyhow::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let target = Arc::new(Mutex::new(None));
        let upstream_bytes = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let proxy_header = Arc::new(Mutex::new(None));
        let (cut, cut_rx) = watch::channel(false);
        let (t, bytes, count, header) =
            (target.clone(), upstream_bytes.clone(), connections.clone(), proxy_header.clone());
        tokio::spawn(async move {
            let mut stop = cut_rx.clone();
            loop {
                let (client, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(pair) => pair, Err(_) => continue },
                    _ = stop.wait_for(|c| *c) => return,
                };
                count.fetch_add(1, Ordering::SeqCst);
                let to = *t.lock().unwrap_or_else(|p| p.into_inner());
                let source = *header.lock().unwrap_or_else(|p| p.into_inner());
                let (bytes, mut stop) = (bytes.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    let Some(to) = to else { return };
                    let Ok(mut server) = TcpStream::connect(to).await else { return };
                    if let Some(source) = source {
                        let header = ppp::v2::Builder::with_addresses(
                            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                            ppp::v2::Protocol::Stream,
                            (source, to),
                        )
                        .build();
                        let Ok(header) = header else { return };
                        if server.write_all(&header).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = pipe(client, server, bytes) => {}
                        _ = stop.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(CountingProxy { addr, target, upstream_bytes, connections, proxy_header, cut })
    }

    /// Sends new connections to `to`.
    pub fn point_to(&self, to: SocketAddr) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(to);
    }

    /// Starts every new connection to the target with a PROXY protocol v2 header naming
    /// `source` as the client, as a load balancer with proxy protocol on does.
    pub fn send_proxy_header(&self, source: SocketAddr) {
        *self.proxy_header.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Bytes carried from callers to the target so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Cuts every connection at once and stops listening, as a killed pod's address does.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, upstream: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    upstream.fetch_add(n as u64, Ordering::SeqCst);
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}
