//! Listeners: accept connections, terminate TLS, put the framing guard in front, hand the
//! connection to hyper (HTTP/1.1 and HTTP/2 on one port), and drain on stop.
//!
//! A listener takes an already bound `TcpListener` (never an address), so tests bind port 0.
//! Its TLS configuration sits behind an `ArcSwap` so a reload changes certificates for new
//! handshakes without closing the socket.

pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::edge::guard::{ConnShared, GuardLimits, H1Guard};
use crate::proxy::{self, ConnInfo};
use crate::server::Gateway;
use crate::snapshot::Snapshot;

/// A running listener.
pub struct RunningListener {
    pub name: String,
    pub bind: String,
    pub local_addr: SocketAddr,
    pub tls: Arc<ArcSwapOption<rustls::ServerConfig>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningListener {
    pub fn start(
        gw: Arc<Gateway>,
        name: String,
        bind: String,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        conn_limit: Arc<Semaphore>,
    ) -> std::io::Result<RunningListener> {
        let local_addr = listener.local_addr()?;
        let tls = Arc::new(ArcSwapOption::new(tls));
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(gw, listener, tls.clone(), conn_limit, stop.clone(), local_addr.port()));
        Ok(RunningListener { name, bind, local_addr, tls, stop, task })
    }

    /// Stops accepting and waits (up to `grace`) for its connections to finish.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// hyper's `DEFAULT_MAX_HEADERS` (its on-stack parse arrays).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The hyper connection builder for a snapshot's limits.
pub fn http_builder(s: &Snapshot) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    let l = &s.edge.limits;
    let mut h1 = b.http1();
    h1.timer(TokioTimer::new())
        // The guard owns the header deadline (408) and the idle timeout; hyper's own 30 s
        // default would otherwise close idle keep-alive connections regardless of the config.
        .header_read_timeout(None)
        .keep_alive(true)
        // The guard enforces the configured limits with problem+json answers; hyper's own
        // limits sit above them as a backstop.
        .max_buf_size((l.header_bytes + l.uri_bytes + 8192).max(16 * 1024));
    // hyper parses up to 100 header fields in arrays on the stack; any explicit maximum makes it
    // allocate two arrays of that size for every request head (two large mallocs per request),
    // so one is set only when the configured limit needs more room than the default.
    if l.headers > HYPER_DEFAULT_MAX_HEADERS {
        h1.max_headers(l.headers + 1);
    }
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(s.edge.h2_max_streams)
        .max_header_list_size(l.header_bytes as u32)
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn accept_loop(
    gw: Arc<Gateway>,
    listener: TcpListener,
    tls: Arc<ArcSwapOption<rustls::ServerConfig>>,
    conn_limit: Arc<Semaphore>,
    stop: CancellationToken,
    local_port: u16,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = conn_limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls_config = tls.load_full();
        let watcher = graceful.watcher();
        let stop_conn = stop.clone();
        let gw = gw.clone();
        tokio::spawn(async move {
            serve_connection(gw, stream, peer, local_port, tls_config, watcher, stop_conn).await;
            drop(permit);
        });
    }
    drop(listener);
    // Connections drain on `stop` (see `run_http`), whichever way the loop ended.
    stop.cancel();
    let grace = gw.active().snapshot.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?grace, "Connections still open after the grace period were closed.");
    }
}

async fn serve_connection(
    gw: Arc<Gateway>,
    stream: TcpStream,
    peer: SocketAddr,
    local_port: u16,
    tls: Option<Arc<rustls::ServerConfig>>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: CancellationToken,
) {
    let active = gw.active();
    let limits: GuardLimits = active.snapshot.edge.limits.clone();
    let shared = Arc::new(ConnShared::default());
    let hook = active.reject_hook(peer, local_port);
    match tls {
        None => {
            let io = H1Guard::new(stream, limits, shared.clone(), hook, false);
            run_http(gw, active, io, peer, local_port, false, shared, watcher, stop).await;
        }
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await;
            let Ok(Ok(tls_stream)) = handshake else {
                return;
            };
            let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = H1Guard::new(tls_stream, limits, shared.clone(), hook, h2);
            run_http(gw, active, io, peer, local_port, true, shared, watcher, stop).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_http<S>(
    gw: Arc<Gateway>,
    active: Arc<crate::server::Active>,
    io: H1Guard<S>,
    peer: SocketAddr,
    local_port: u16,
    tls: bool,
    shared: Arc<ConnShared>,
    watcher: hyper_util::server::graceful::Watcher,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(ConnInfo::new(peer, local_port, tls, shared));
    let builder = active.http.clone();
    let active_max_requests = active.snapshot.edge.max_requests_per_connection;
    drop(active);
    // Each request reads the snapshot that is active when it arrives: keep-alive connections
    // pick up a reload at their next request, in-flight requests finish on the old one.
    let served = AtomicU64::new(0);
    let max_requests = active_max_requests;
    let goaway = CancellationToken::new();
    let svc = {
        let goaway = goaway.clone();
        service_fn(move |req| {
            // `edge.limits.max_requests_per_connection` (nginx `keepalive_requests`, HAProxy
            // `max-total-streams`) bounds a Rapid Reset paced below hyper's pending-accept reset
            // limit: after the GOAWAY hyper accepts no more streams, so a peer that keeps opening
            // and resetting them is closed with ENHANCE_YOUR_CALM.
            if served.fetch_add(1, Ordering::Relaxed) + 1 == max_requests {
                goaway.cancel();
            }
            proxy::handle(gw.active(), info.clone(), req)
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc).into_owned();
    let mut conn = std::pin::pin!(conn);
    // Held, not used to watch: the listener's drain waits for this connection while it lives.
    let _watcher = watcher;
    let mut told = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = goaway.cancelled(), if !told => {
                told = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.cancelled(), if !told => {
                told = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
