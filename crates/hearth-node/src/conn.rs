//! The accept loop in front of the gRPC server. A host on the LAN needs no certificate and no
//! token to open a TCP connection, so every connection is bounded before it may cost anything:
//!
//! - at most `max_connections` are open (kept below the process's descriptor limit, read at
//!   start); at the cap, the connection that has been quiet longest is closed to make room, so
//!   a flood of idle sockets cannot lock the household (or a peer) out;
//! - the TLS handshake must finish within `handshake_timeout`;
//! - a connection on which no byte moved either way for `idle_timeout` is closed (Hearth's own
//!   clients and peers send HTTP/2 pings or heartbeats long before that).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The limits of one listener (from `[limits]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Descriptors kept free for everything else a node opens (store files, peer channels, the
/// metrics port, device connections).
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the soft descriptor limit to the hard one and returns the connection cap that fits
/// under it: `wanted`, or less when the descriptor limit is lower.
pub fn connection_cap(wanted: usize) -> usize {
    let soft = raise_nofile_limit();
    let fits = soft.saturating_sub(RESERVED_DESCRIPTORS).max(16);
    let cap = wanted
        .min(usize::try_from(fits).unwrap_or(usize::MAX))
        .max(1);
    if cap < wanted {
        tracing::warn!(
            wanted,
            cap,
            nofile = soft,
            "the open-files limit allows only {cap} client connections; raise LimitNOFILE"
        );
    }
    cap
}

#[cfg(unix)]
fn raise_nofile_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: l.rlim_max,
                rlim_max: l.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l.rlim_cur = l.rlim_max;
            }
        }
    }
    l.rlim_cur
}

#[cfg(not(unix))]
fn raise_nofile_limit() -> u64 {
    1024
}

struct Slot {
    /// Milliseconds since the registry started, at the last byte read or written.
    last: AtomicU64,
    closed: AtomicBool,
    /// The other side proved who it is (a node certificate, or a call with a valid token):
    /// closed to make room only when no unproven connection is left.
    proven: AtomicBool,
    remote: Option<std::net::SocketAddr>,
    waker: AtomicWaker,
}

impl Slot {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}

/// The open connections of one listener.
pub struct Registry {
    start: Instant,
    next: AtomicU64,
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    by_remote: Mutex<HashMap<std::net::SocketAddr, u64>>,
    /// Connections closed to make room, and for being idle (for tests and logs).
    pub evicted: AtomicU64,
    pub idle_closed: AtomicU64,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            next: AtomicU64::new(0),
            slots: Mutex::default(),
            by_remote: Mutex::default(),
            evicted: AtomicU64::new(0),
            idle_closed: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn admit(
        self: &Arc<Self>,
        cap: usize,
        remote: Option<std::net::SocketAddr>,
    ) -> (u64, Arc<Slot>) {
        let slot = Arc::new(Slot {
            last: AtomicU64::new(self.now()),
            closed: AtomicBool::new(false),
            proven: AtomicBool::new(false),
            remote,
            waker: AtomicWaker::new(),
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        while g.len() >= cap {
            // Unproven connections go first, the quietest of them; a proven one only when
            // nothing else is left.
            let Some((&quiet, _)) = g.iter().min_by_key(|(_, s)| {
                (
                    s.proven.load(Ordering::Relaxed),
                    s.last.load(Ordering::Relaxed),
                )
            }) else {
                break;
            };
            if let Some(s) = g.remove(&quiet) {
                s.close();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        g.insert(id, slot.clone());
        if let Some(r) = remote {
            self.by_remote
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(r, id);
        }
        (id, slot)
    }

    /// The connection from `remote` proved who it is (a call with a valid token).
    pub fn prove(&self, remote: std::net::SocketAddr) {
        let id = self
            .by_remote
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&remote)
            .copied();
        if let Some(id) = id
            && let Some(s) = self
                .slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
        {
            s.proven.store(true, Ordering::Relaxed);
        }
    }

    fn sweep(&self, idle: Duration) {
        let now = self.now();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let mut g = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|_, s| {
            let quiet = now.saturating_sub(s.last.load(Ordering::Relaxed));
            if quiet >= idle {
                s.close();
                self.idle_closed.fetch_add(1, Ordering::Relaxed);
                false
            } else {
                true
            }
        });
    }

    fn remove(&self, id: u64) {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let mut g = self.by_remote.lock().unwrap_or_else(|p| p.into_inner());
        match slot.and_then(|s| s.remote) {
            Some(r) if g.get(&r) == Some(&id) => {
                g.remove(&r);
            }
            Some(_) => {}
            // Closed by the sweep or to make room before it was dropped: find it by id.
            None => g.retain(|_, v| *v != id),
        }
    }
}

/// A TCP connection that counts as active while bytes move and that the registry can close.
pub struct Tracked {
    inner: TcpStream,
    id: u64,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

impl Tracked {
    fn check(&self, cx: &mut Context<'_>) -> Result<(), io::Error> {
        self.slot.waker.register(cx.waker());
        if self.slot.closed.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by the node (idle, or room needed for a new connection)",
            ));
        }
        Ok(())
    }

    fn touch(&self) {
        self.slot.last.store(self.registry.now(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check(cx)?;
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(cx)?;
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for Tracked {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The connections a server gets: plain, or after a TLS handshake that finished in time.
pub type Incoming<IO> = Pin<Box<dyn futures::Stream<Item = Result<IO, io::Error>> + Send>>;

/// The running accept loop; dropping it stops accepting (and frees the port).
pub struct Acceptor {
    pub registry: Arc<Registry>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn start<IO, F, Fut>(
    listener: TcpListener,
    limits: ConnLimits,
    registry: Arc<Registry>,
    wrap: F,
) -> (Acceptor, Incoming<IO>)
where
    IO: Send + 'static,
    F: Fn(Tracked) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<IO>> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<IO>(64);
    let wrap = Arc::new(wrap);
    let accept = {
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut last_error_log: Option<Instant> = None;
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and the like: log once in a while, let descriptors free up.
                        if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "cannot accept connections");
                            last_error_log = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (id, slot) = registry.admit(limits.max_connections, Some(remote));
                let tracked = Tracked {
                    inner: tcp,
                    id,
                    slot,
                    registry: registry.clone(),
                };
                let tx = tx.clone();
                let wrap = wrap.clone();
                tokio::spawn(async move {
                    if let Some(io) = wrap(tracked).await {
                        let _ = tx.send(io).await;
                    }
                });
            }
        })
    };
    let sweeper = {
        let registry = registry.clone();
        let every =
            (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                registry.sweep(limits.idle_timeout);
            }
        })
    };
    let incoming: Incoming<IO> = Box::pin(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok))
    }));
    (
        Acceptor {
            registry,
            tasks: vec![accept, sweeper],
        },
        incoming,
    )
}

/// Plain-text connections (clusters with `insecure = true`).
pub fn plain(
    listener: TcpListener,
    limits: ConnLimits,
    registry: Arc<Registry>,
) -> (Acceptor, Incoming<Tracked>) {
    start(listener, limits, registry, |t| async move { Some(t) })
}

/// TLS connections whose handshake finished within `limits.handshake_timeout`.
pub fn tls(
    listener: TcpListener,
    limits: ConnLimits,
    registry: Arc<Registry>,
    config: Arc<rustls::ServerConfig>,
) -> (Acceptor, Incoming<tokio_rustls::server::TlsStream<Tracked>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    start(listener, limits, registry, move |t| {
        let acceptor = acceptor.clone();
        async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(t)).await {
                Ok(Ok(s)) => {
                    // A certificate from the cluster CA (rustls checked it): a node.
                    let (tracked, session) = s.get_ref();
                    if session.peer_certificates().is_some_and(|c| !c.is_empty()) {
                        tracked.slot.proven.store(true, Ordering::Relaxed);
                    }
                    Some(s)
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!("TLS handshake not finished in time: connection closed");
                    None
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_closes_the_quietest_connection() {
        let r = Registry::new();
        let (a, sa) = r.admit(2, None);
        let (_b, sb) = r.admit(2, None);
        // a moved a byte after b.
        sa.last.store(r.now() + 10, Ordering::Relaxed);
        let (_c, sc) = r.admit(2, None);
        assert!(sb.closed.load(Ordering::SeqCst), "the quietest goes");
        assert!(!sa.closed.load(Ordering::SeqCst));
        assert!(!sc.closed.load(Ordering::SeqCst));
        assert_eq!(r.open(), 2);
        assert_eq!(r.evicted.load(Ordering::Relaxed), 1);
        r.remove(a);
        assert_eq!(r.open(), 1);
    }

    #[test]
    fn proven_connections_are_closed_for_room_only_when_nothing_else_is_left() {
        let r = Registry::new();
        let addr: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        // A peer (or a client whose token was accepted), quiet for a while …
        let (_p, sp) = r.admit(3, Some(addr));
        r.prove(addr);
        assert!(sp.proven.load(Ordering::Relaxed));
        // … and a flood of newer, unproven connections.
        let mut flood = Vec::new();
        for _ in 0..10 {
            flood.push(r.admit(3, None).1);
        }
        assert!(
            !sp.closed.load(Ordering::SeqCst),
            "the proven one was closed for room"
        );
        assert_eq!(r.open(), 3);
        assert_eq!(
            flood
                .iter()
                .filter(|s| s.closed.load(Ordering::SeqCst))
                .count(),
            8
        );
        // Only proven ones left: the quietest of them goes.
        let r = Registry::new();
        let (_a, sa) = r.admit(1, None);
        sa.proven.store(true, Ordering::Relaxed);
        let (_b, sb) = r.admit(1, None);
        assert!(sa.closed.load(Ordering::SeqCst) && !sb.closed.load(Ordering::SeqCst));
    }

    #[test]
    fn idle_connections_are_swept() {
        let r = Registry::new();
        let (_a, sa) = r.admit(10, None);
        r.sweep(Duration::from_secs(3600));
        assert!(!sa.closed.load(Ordering::SeqCst));
        r.sweep(Duration::ZERO);
        assert!(sa.closed.load(Ordering::SeqCst));
        assert_eq!(r.open(), 0);
    }
}
