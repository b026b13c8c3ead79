//! Listeners: accept connections, terminate TLS, put the framing guard in front, serve HTTP/1.1
//! requests without a body with the own server (`h1`) and the rest with hyper (HTTP/1.1 with a
//! body or an upgrade, HTTP/2; all on one port), and drain on stop.
//!
//! A listener takes an already bound `TcpListener` (never an address), so tests bind port 0.
//! Its TLS configuration sits behind an `ArcSwap` so a reload changes certificates for new
//! handshakes without closing the socket.

pub mod tls;

pub mod h1;
mod lent;
mod served;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::body::ClientBody;
use crate::edge::guard::{ConnShared, H1Guard, Wake};
use crate::proxy::{self, ConnInfo};
use crate::server::Gateway;
use crate::snapshot::Snapshot;
use lent::Lent;

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

/// hyper's HTTP/1 and HTTP/2 connection builders for a snapshot's limits. The framing guard
/// tells which one a connection needs (TLS ALPN, or the client's first bytes).
pub struct HttpBuilders {
    pub h1: http1::Builder,
    pub h2: http2::Builder<TokioExecutor>,
}

/// The hyper connection builders for a snapshot's limits.
pub fn http_builder(s: &Snapshot) -> HttpBuilders {
    let l = &s.edge.limits;
    let mut h1 = http1::Builder::new();
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
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(s.edge.h2_max_streams)
        .max_header_list_size(l.header_bytes as u32)
        .max_pending_accept_reset_streams(Some(50))
        .max_local_error_reset_streams(Some(256))
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    HttpBuilders { h1, h2 }
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
        let conn = Accepted {
            gw: gw.clone(),
            peer,
            local_port,
            _watcher: graceful.watcher(),
            stop: stop.clone(),
            _permit: permit,
        };
        // Separate tasks: a plain connection's task is not sized by the TLS handshake's state.
        match tls.load_full() {
            None => drop(tokio::spawn(run_http(conn, stream, false, false))),
            Some(cfg) => drop(tokio::spawn(serve_tls(conn, stream, cfg))),
        }
    }
    drop(listener);
    // Connections drain on `stop` (see `run_http`), whichever way the loop ended.
    stop.cancel();
    let grace = gw.active().snapshot.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace = ?grace, "Connections still open after the grace period were closed.");
    }
}

/// One accepted connection's context; dropping it releases the connection's slot.
struct Accepted {
    gw: Arc<Gateway>,
    peer: SocketAddr,
    local_port: u16,
    // Held, not used to watch: the listener's drain waits for this connection while it lives.
    _watcher: hyper_util::server::graceful::Watcher,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

async fn serve_tls(conn: Accepted, stream: TcpStream, cfg: Arc<rustls::ServerConfig>) {
    let header_timeout = conn.gw.active().snapshot.edge.limits.header_timeout;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
    let Ok(Ok(tls_stream)) = handshake else {
        return;
    };
    let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
    run_http(conn, tls_stream, true, h2).await;
}

/// Serves one connection: the guard waits for the client's next request. A body-less HTTP/1
/// request is answered by the own server (`h1`); one with a body or an upgrade by a hyper
/// HTTP/1 connection, until it parks; HTTP/2 by hyper until the connection ends. An HTTP/1
/// connection whose client goes idle between requests is parked: hyper's connection, or the
/// own server's handler slot and head buffer, is freed (16 KiB and more per connection for
/// hyper) and the guard waits for the next request without a buffer.
async fn run_http<S>(conn: Accepted, stream: S, tls: bool, alpn_h2: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Accepted { gw, peer, local_port, stop, .. } = &conn;
    let active = gw.active();
    let shared = Arc::new(ConnShared::default());
    let hook = active.reject_hook(*peer, *local_port);
    let mut io = H1Guard::new(stream, active.snapshot.edge.limits.clone(), shared.clone(), hook, alpn_h2);
    io.set_parking(true);
    let info = Arc::new(ConnInfo::new(*peer, *local_port, tls, shared));
    let builders = active.http.clone();
    let max_requests = active.snapshot.edge.max_requests_per_connection;
    drop(active);
    // Each request reads the snapshot that is active when it arrives: keep-alive connections
    // pick up a reload at their next request, in-flight requests finish on the old one.
    let requests = AtomicU64::new(0);
    let goaway = AtomicBool::new(false);
    let count = || {
        // `edge.limits.max_requests_per_connection` (nginx `keepalive_requests`, HAProxy
        // `max-total-streams`) bounds a Rapid Reset paced below hyper's pending-accept reset
        // limit: after the GOAWAY hyper accepts no more streams, so a peer that keeps opening
        // and resetting them is closed with ENHANCE_YOUR_CALM. HTTP/1 closes after the answer.
        if requests.fetch_add(1, Ordering::Relaxed) + 1 == max_requests {
            goaway.store(true, Ordering::Relaxed);
        }
    };
    // Boxed for hyper: the handler's future is large (about 3 KiB) and hyper keeps it inline in
    // its connection state and in each HTTP/2 stream's task, moving it as it goes; a box keeps
    // those small. The own HTTP/1 server builds it in place instead (`served`).
    let svc = service_fn(|req: Request<Incoming>| {
        count();
        Box::pin(proxy::handle(gw.active(), info.clone(), req.map(ClientBody::Hyper)))
    });
    // The own HTTP/1 server's handler loop and its response head: allocated when the
    // connection wakes, freed when it parks.
    let mut handler = None;
    let mut out = Vec::new();
    let mut spare = None;
    // The stop signal is polled once, which leaves this task's waker with it (a task's waker
    // does not change); after that, the flag is enough (see `drive`).
    let mut stopping = std::pin::pin!(stop.cancelled());
    let mut registered = false;
    loop {
        let wake = std::future::poll_fn(|cx| {
            if let Poll::Ready(w) = io.poll_wake(cx) {
                return Poll::Ready(Some(w));
            }
            let stop_now = if registered {
                stop.is_cancelled()
            } else {
                registered = true;
                stopping.as_mut().poll(cx).is_ready()
            };
            // Nothing is owed to an idle client: close, as hyper's graceful shutdown does.
            if stop_now {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let Some(wake) = wake else { return };
        match wake {
            Ok(Wake::Http1) => {}
            Ok(Wake::Park) => {
                handler = None;
                out = Vec::new();
                spare = None;
                continue;
            }
            Ok(Wake::Http2) => {
                let conn = Box::pin(builders.h2.serve_connection(TokioIo::new(io), &svc));
                drive(conn, stop, &goaway, |c| c.as_mut().graceful_shutdown()).await;
                return;
            }
            Ok(Wake::Close) => {
                // Writes a queued refusal (408, 400, ...) first.
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                return;
            }
            Err(_) => return,
        }
        if let Some((head, fields)) = io.take_plain_head() {
            let keep_alive = fields.keeps_alive();
            let req = match h1::request(&head, fields, spare.take()) {
                Ok(req) => req,
                Err(why) => {
                    io.refuse(crate::respond::Problem::edge(http::StatusCode::BAD_REQUEST, "bad-request", why));
                    continue;
                }
            };
            let method = req.method().clone();
            let http10 = req.version() == http::Version::HTTP_10;
            count();
            let served = handler.get_or_insert_with(|| served::served(gw.clone(), info.clone()));
            served.hand_over(req);
            let still_open = || !stop.is_cancelled() && !goaway.load(Ordering::Relaxed);
            match h1::answer(&mut io, Pin::new(served), &method, http10, keep_alive, still_open, &mut out, &mut spare)
                .await
            {
                h1::Next::KeepAlive => continue,
                h1::Next::Close => {
                    // Whatever the handler still holds goes before the wait for the shutdown.
                    drop(handler.take());
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
                    return;
                }
            }
        }
        // A request with a body, or an upgrade: hyper serves the connection until it parks (and
        // comes back parked, so this is the moment to free what the own server holds).
        handler = None;
        out = Vec::new();
        spare = None;
        let (lent, mut back) = Lent::new(io);
        // Boxed so that a parked connection's task holds none of it.
        let conn = Box::pin(builders.h1.serve_connection(TokioIo::new(lent), &svc).with_upgrades());
        let told = drive(conn, stop, &goaway, |c| c.as_mut().graceful_shutdown()).await;
        // Back only if the guard parked it; otherwise the connection has ended, or upgraded and
        // the guard lives on in the upgraded stream.
        match back.try_recv() {
            Ok(guard) if !told => io = guard,
            _ => return,
        }
    }
}

/// Polls a hyper connection to its end, asking it to finish gracefully once the listener stops
/// or the connection has served its maximum number of requests. True if it was asked.
async fn drive<C>(
    mut conn: Pin<Box<C>>,
    stop: &CancellationToken,
    goaway: &AtomicBool,
    graceful: impl Fn(&mut Pin<Box<C>>),
) -> bool
where
    C: Future,
{
    let mut stopping = std::pin::pin!(stop.cancelled());
    let mut told = false;
    let mut registered = false;
    std::future::poll_fn(|cx| loop {
        if conn.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if told {
            return Poll::Pending;
        }
        // The stop signal is polled once, which leaves this task's waker with it (a task's waker
        // does not change); after that, the flag is enough and costs one load per wake-up.
        let stop_now = if registered {
            stop.is_cancelled()
        } else {
            registered = true;
            stopping.as_mut().poll(cx).is_ready()
        };
        // The service sets `goaway` while hyper polls it, so it is checked after each poll.
        if goaway.load(Ordering::Relaxed) || stop_now {
            told = true;
            graceful(&mut conn);
            continue;
        }
        return Poll::Pending;
    })
    .await;
    told
}
