//! Keep-alive connections to the servers of one backend.
//!
//! HTTP/1.1: a stack of idle connections per server (`h1::Conn`, the gateway's own client); a
//! request takes the most recently used live one (warm in every cache) or opens a new one, and
//! the connection comes back when its response body has been read to the end (the body carries
//! it). Upgrade requests get a hyper connection of their own, handed over on `101`. HTTP/2: one
//! shared hyper connection per server, multiplexed. The pool is ours rather than hyper-util's
//! legacy client because that client's generic pool (hash-map keyed by URI, boxed futures)
//! cost about a sixth of the gateway's instructions per proxied request (callgrind).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::h1;
use super::{BackendBody, ConnectFailure, Protocol, ServerSpec};
use crate::body::UpstreamBody;

/// Most idle connections kept per server; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// Why a request did not get a response.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectFailure),
    /// The request was written (maybe partly) and no complete response came back (HTTP/2,
    /// upgrades).
    Failed(hyper::Error),
    /// The same, on an HTTP/1.1 connection; or the client's body failed while it was sent.
    Http1(h1::Error),
    /// No response head before the deadline.
    Timeout,
}

/// Settings shared by every server of the backend.
pub struct PoolConfig {
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
    pub server_name: Option<ServerName<'static>>,
}

struct Idle {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// The connections of one server.
pub struct ServerSlot {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
    idle_timeout: Duration,
}

impl ServerSlot {
    /// An HTTP/1.1 connection whose response has ended comes back for the next request.
    pub(super) fn give_back(&self, conn: Box<h1::Conn>) {
        let mut idle = self.idle.lock();
        // Oldest first: drop those idle for too long (the backend has probably closed them).
        // One clock read serves both the expiry check and the new entry's time.
        let now = Instant::now();
        let timeout = self.idle_timeout;
        let expired = idle.iter().take_while(|c| now.saturating_duration_since(c.since) > timeout).count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { conn, since: now });
        }
    }
}

pub struct Pool {
    config: PoolConfig,
    slots: Vec<Arc<ServerSlot>>,
}

impl Pool {
    pub fn new(config: PoolConfig, servers: usize) -> Pool {
        let slots = (0..servers)
            .map(|_| {
                Arc::new(ServerSlot {
                    idle: Mutex::new(Vec::new()),
                    h2: Mutex::new(None),
                    idle_timeout: config.idle_timeout,
                })
            })
            .collect();
        Pool { config, slots }
    }

    /// Sends `req` to server `i`; its response head must come before `deadline`. A reused
    /// HTTP/1.1 connection that turns out to be closed before the server can have acted on the
    /// request is replaced transparently.
    ///
    /// A plain function around `async` blocks, so the future holds the request once (an `async
    /// fn` keeps a `mut` argument twice, and every move of the future copies both).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn send<'a>(
        &'a self,
        i: usize,
        server: &'a ServerSpec,
        mut req: Request<UpstreamBody>,
        added: &'a [(HeaderName, HeaderValue)],
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> impl std::future::Future<Output = Result<Response<BackendBody>, SendError>> + Send + 'a {
        use futures_util::future::Either;
        let slot = &self.slots[i];
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        if self.config.protocol == Protocol::Http2 || upgrade {
            // hyper writes these requests; it takes every field from the map.
            for (name, value) in added {
                req.headers_mut().append(name.clone(), value.clone());
            }
            // Boxed: rare next to HTTP/1.1 here, and large.
            let hyper_send = Box::pin(self.send_with_hyper(slot, server, req, upgrade));
            return Either::Left(async move {
                tokio::time::timeout_at(deadline, hyper_send).await.unwrap_or(Err(SendError::Timeout))
            });
        }
        Either::Right(async move {
            // A reused connection the server closed under the request is replaced once, by a new
            // connection (which is never stale): the request is sent again at most once.
            let mut replaced = false;
            loop {
                let pooled = if replaced { None } else { Self::checkout(slot, now) };
                let (conn, reused) = match pooled {
                    Some(c) => (c, true),
                    // Boxed: connecting (TCP, TLS) is rare and its future is large; keeping it out
                    // of line keeps the per-request future small and cheap to move.
                    None => {
                        let connect = Box::pin(tokio::time::timeout_at(deadline, self.connect_io(server)));
                        (h1::Conn::new(connect.await.unwrap_or(Err(SendError::Timeout))?), false)
                    }
                };
                match conn.send(req, added, reused, slot.clone(), deadline).await {
                    Ok(resp) => return Ok(resp.map(BackendBody::Http1)),
                    Err(h1::Failure::Stale(back)) => {
                        req = *back;
                        replaced = true;
                    }
                    Err(h1::Failure::Failed(h1::Error::Timeout)) => return Err(SendError::Timeout),
                    Err(h1::Failure::Failed(e)) => return Err(SendError::Http1(e)),
                }
            }
        })
    }

    /// HTTP/2 (the server's shared connection), or an upgrade (a connection of its own: on
    /// `101` hyper hands it over to the tunnel).
    async fn send_with_hyper(
        &self,
        slot: &ServerSlot,
        server: &ServerSpec,
        req: Request<UpstreamBody>,
        upgrade: bool,
    ) -> Result<Response<BackendBody>, SendError> {
        if self.config.protocol == Protocol::Http2 {
            let mut sender = self.h2_sender(slot, server).await?;
            return match sender.send_request(req).await {
                Ok(resp) => Ok(resp.map(BackendBody::Hyper)),
                Err(e) => {
                    slot.h2.lock().take();
                    Err(SendError::Failed(e))
                }
            };
        }
        debug_assert!(upgrade);
        let mut sender = self.connect_upgradable(server).await?;
        sender.send_request(req).await.map(|r| r.map(BackendBody::Hyper)).map_err(SendError::Failed)
    }

    /// Closes idle connections that have been idle too long or that their server has closed
    /// (run every few seconds, so a quiet server's closed connections do not linger).
    pub fn sweep(&self) {
        let now = Instant::now();
        for slot in &self.slots {
            slot.idle
                .lock()
                .retain_mut(|c| now.saturating_duration_since(c.since) <= slot.idle_timeout && c.conn.is_usable());
        }
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.slots.iter().map(|s| s.idle.lock().len()).sum()
    }

    /// The most recently used idle connection that is still open (`now`: the request's clock
    /// read).
    fn checkout(slot: &ServerSlot, now: Instant) -> Option<Box<h1::Conn>> {
        loop {
            let mut candidate = slot.idle.lock().pop()?;
            if now.saturating_duration_since(candidate.since) <= slot.idle_timeout && candidate.conn.is_usable() {
                return Some(candidate.conn);
            }
        }
    }

    async fn h2_sender(
        &self,
        slot: &ServerSlot,
        server: &ServerSpec,
    ) -> Result<http2::SendRequest<UpstreamBody>, SendError> {
        let existing = slot.h2.lock().clone();
        if let Some(mut s) = existing {
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        let io = TokioIo::new(self.connect_io(server).await?);
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .handshake(io)
            .await
            .map_err(|_| SendError::Connect(ConnectFailure::Other))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        *slot.h2.lock() = Some(sender.clone());
        Ok(sender)
    }

    async fn connect_upgradable(&self, server: &ServerSpec) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let io = TokioIo::new(self.connect_io(server).await?);
        let (sender, conn) =
            http1::Builder::new().handshake(io).await.map_err(|_| SendError::Connect(ConnectFailure::Other))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// TCP (and TLS when the URL is https) to the server, within the connect timeout.
    async fn connect_io(&self, server: &ServerSpec) -> Result<MaybeTls, SendError> {
        let timeout = self.config.connect_timeout;
        let host = server.authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = server.authority.port_u16().unwrap_or(if server.scheme == Scheme::HTTPS { 443 } else { 80 });
        let work = async {
            let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| connect_failure(&e))?;
            let _ = tcp.set_nodelay(true);
            if server.scheme != Scheme::HTTPS {
                return Ok(MaybeTls::Plain(tcp));
            }
            let name = match &self.config.server_name {
                Some(n) => n.clone(),
                None => ServerName::try_from(host.clone()).map_err(|_| SendError::Connect(ConnectFailure::Dns))?,
            };
            let mut cfg = (*self.config.tls).clone();
            cfg.alpn_protocols =
                if self.config.protocol == Protocol::Http2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
            let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
            let tls = connector.connect(name, tcp).await.map_err(|e| connect_failure(&e))?;
            Ok(MaybeTls::Tls(Box::new(tls)))
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(Ok(io)) => Ok(io),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SendError::Connect(ConnectFailure::Timeout)),
        }
    }
}

fn connect_failure(e: &io::Error) -> SendError {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        io::ErrorKind::TimedOut => ConnectFailure::Timeout,
        _ => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => super::tls_kind(tls),
            None if e.to_string().contains("lookup") || e.to_string().contains("resolve") => ConnectFailure::Dns,
            None => ConnectFailure::Other,
        },
    };
    SendError::Connect(kind)
}

/// A backend connection, plain or TLS.
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

use std::pin::Pin;
use std::task::{Context, Poll};

impl tokio::io::AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(t) => Pin::new(t).poll_read(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(t) => Pin::new(t).poll_write(cx, buf),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(t) => t.is_write_vectored(),
            MaybeTls::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(t) => Pin::new(t).poll_flush(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(t) => Pin::new(t).poll_shutdown(cx),
            MaybeTls::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}
