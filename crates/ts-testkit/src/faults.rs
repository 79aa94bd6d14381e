//! `FaultProxy`: a loopback TCP proxy in front of one dependency (MongoDB, Redis, KMS) that
//! a test can take down, slow or hang, the way a real dependency fails. The services'
//! configuration names the proxy's port; the proxy forwards to the real server's port.
//!
//! - down: the port refuses new connections and every open one is cut at once (a dead
//!   host); back up, the same address listens again;
//! - delay: each chunk forwarded in either direction waits first (a slow network or server);
//! - stall: connections are accepted and kept open but nothing is forwarded (a hung server).

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What every connection follows; changed through the proxy's setters.
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// How long each chunk waits before it is forwarded.
    delay: Duration,
    /// Forward nothing while set.
    stall: bool,
    /// How many times the proxy went down; a connection accepted before a cut ends with it.
    cuts: u64,
}

/// The listening side, behind a lock so that `set_down` closes and reopens the port before
/// it returns.
#[derive(Debug, Default)]
struct Listening {
    /// The port, while up.
    active: Option<TcpListener>,
    /// A socket bound by `set_down(false)`, registered with the runtime on the next poll
    /// (the setter may run outside one).
    bound: Option<std::net::TcpListener>,
    /// The accept loop, to wake when the port changes.
    waker: Option<Waker>,
    /// Cuts so far (as `Behaviour::cuts`, counted under this lock so that an accepted
    /// connection knows exactly which cuts it has seen).
    cuts: u64,
    /// The proxy was dropped: the accept loop ends.
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    listening: Mutex<Listening>,
    accepted: AtomicU64,
    open: AtomicU64,
}

impl Shared {
    fn listening(&self) -> MutexGuard<'_, Listening> {
        // Nothing is left half-changed under this lock by a panic: still usable.
        self.listening.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next connection and the cuts made before it was accepted; `None` once closed.
    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<(TcpStream, u64)>>> {
        let mut listening = self.listening();
        if listening.closed {
            return Poll::Ready(None);
        }
        listening.waker = Some(cx.waker().clone());
        if let Some(bound) = listening.bound.take() {
            match TcpListener::from_std(bound) {
                Ok(listener) => listening.active = Some(listener),
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
        let cuts = listening.cuts;
        match &listening.active {
            Some(listener) => listener.poll_accept(cx).map(|accepted| Some(accepted.map(|(stream, _)| (stream, cuts)))),
            None => Poll::Pending,
        }
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running fault proxy on a loopback port; dropping it stops listening and cuts every
/// connection.
#[derive(Debug)]
pub struct FaultProxy {
    /// Where clients connect (the address to put in the services' configuration).
    pub addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    behaviour: watch::Sender<Behaviour>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `target`, at full
    /// speed until told otherwise.
    pub async fn start(target: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared.listening().active = Some(listener);
        let (behaviour, rx) = watch::channel(Behaviour::default());
        tokio::spawn(accept_loop(shared.clone(), target, rx));
        Ok(FaultProxy { addr, target, shared, behaviour })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The real server the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Down (`true`): the port is closed before this returns, so new connections are
    /// refused, and every open connection is cut at once. Up (`false`): the same address
    /// listens again before this returns. Setting the state it is already in does nothing.
    pub fn set_down(&self, down: bool) {
        let mut listening = self.shared.listening();
        let is_down = listening.active.is_none() && listening.bound.is_none();
        if down == is_down {
            return;
        }
        if down {
            listening.active = None;
            listening.bound = None;
            listening.cuts += 1;
            let cuts = listening.cuts;
            drop(listening);
            self.behaviour.send_modify(|b| b.cuts = cuts);
        } else {
            match bind_again(self.addr) {
                Ok(bound) => listening.bound = Some(bound),
                Err(e) => tracing::warn!(addr = %self.addr, error = %e, "fault proxy cannot listen again"),
            }
            if let Some(waker) = listening.waker.take() {
                waker.wake();
            }
        }
    }

    /// Makes each chunk forwarded in either direction wait `delay` first, on open
    /// connections too; `Duration::ZERO` forwards at once.
    pub fn set_delay(&self, delay: Duration) {
        self.behaviour.send_modify(|b| b.delay = delay);
    }

    /// Stalled (`true`): connections are still accepted and kept open, but nothing is
    /// forwarded either way, as with a hung server. Unstalled, what was held back goes on.
    pub fn set_stall(&self, stall: bool) {
        self.behaviour.send_modify(|b| b.stall = stall);
    }

    /// Connection pairs (client and server side) alive right now.
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let mut listening = self.shared.listening();
        listening.closed = true;
        listening.active = None;
        listening.bound = None;
        if let Some(waker) = listening.waker.take() {
            waker.wake();
        }
        // The connections end when the behaviour's sender (this proxy's) goes away.
    }
}

/// Binds `addr` again right after it was closed (std sets `SO_REUSEADDR` on Unix, so
/// connections of the old socket in TIME_WAIT do not hold the port), retrying briefly.
fn bind_again(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let mut attempt = 0;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => {
                listener.set_nonblocking(true)?;
                return Ok(listener);
            }
            Err(e) if attempt >= 20 => return Err(e),
            Err(_) => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, target: SocketAddr, behaviour: watch::Receiver<Behaviour>) {
    loop {
        let (client, cuts) = match poll_fn(|cx| shared.poll_accept(cx)).await {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                // Out of file descriptors and the like: try again shortly.
                tracing::debug!(error = %e, "fault proxy accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        shared.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(shared.clone());
        tokio::spawn(carry(client, target, cuts, behaviour.clone(), guard));
    }
}

/// Carries one connection until either side is done with it, or the proxy goes down or
/// away.
async fn carry(
    client: TcpStream,
    target: SocketAddr,
    cuts: u64,
    behaviour: watch::Receiver<Behaviour>,
    _open: OpenGuard,
) {
    let cut = {
        let mut behaviour = behaviour.clone();
        async move {
            // An error means the proxy was dropped: a cut too.
            let _ = behaviour.wait_for(|b| b.cuts > cuts).await;
        }
    };
    let forward = async move {
        let Ok(server) = TcpStream::connect(target).await else { return };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let up = pump(client_read, server_write, behaviour.clone());
        let down = pump(server_read, client_write, behaviour.clone());
        tokio::join!(up, down);
    };
    tokio::select! {
        () = forward => {}
        () = cut => {}
    }
}

/// Copies one direction chunk by chunk, each waiting out the delay and any stall first;
/// shuts the writing side down when the reading side ends.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut behaviour: watch::Receiver<Behaviour>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = behaviour.borrow().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if behaviour.wait_for(|b| !b.stall).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
