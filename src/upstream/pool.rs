//! Keep-alive connections to the servers of one backend.
//!
//! HTTP/1.1: a stack of idle connections per server; a request takes the most recently used
//! ready one (warm in every cache) or opens a new one, and the connection comes back when the
//! response body has been read to its end ([`Checkin`], carried by the response body). HTTP/2:
//! one shared connection per server, multiplexed. The pool is ours rather than hyper-util's
//! legacy client because that client's generic pool (hash-map keyed by URI, boxed futures)
//! cost about a sixth of the gateway's instructions per proxied request (callgrind).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{ConnectFailure, Protocol, ServerSpec};
use crate::body::UpstreamBody;

/// Most idle connections kept per server; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// Why a request did not get a response.
#[derive(Debug)]
pub enum SendError {
    Connect(ConnectFailure),
    /// The request was written (maybe partly) and no complete response came back.
    Failed(hyper::Error),
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
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

/// The connections of one server.
pub struct ServerSlot {
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
    idle_timeout: Duration,
}

/// An HTTP/1.1 connection lent to one request; returned when its response body has ended.
pub struct Checkin {
    slot: Arc<ServerSlot>,
    sender: http1::SendRequest<UpstreamBody>,
}

impl Checkin {
    pub fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.slot.idle.lock();
        // Oldest first: drop those idle for too long (the backend has probably closed them).
        // One clock read serves both the expiry check and the new entry's time.
        let now = Instant::now();
        let timeout = self.slot.idle_timeout;
        while idle.first().is_some_and(|c| now.saturating_duration_since(c.since) > timeout) {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender: self.sender, since: now });
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

    /// Sends `req` to server `i`. A reused HTTP/1.1 connection that turns out to be closed
    /// before the request went out is replaced transparently (the request was not sent).
    pub async fn send(
        &self,
        i: usize,
        server: &ServerSpec,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), SendError> {
        let slot = &self.slots[i];
        if self.config.protocol == Protocol::Http2 {
            let mut sender = Box::pin(self.h2_sender(slot, server)).await?;
            return match sender.send_request(req).await {
                Ok(resp) => Ok((resp, None)),
                Err(e) => {
                    slot.h2.lock().take();
                    Err(SendError::Failed(e))
                }
            };
        }
        loop {
            let (mut sender, fresh) = match self.checkout(slot).await {
                Some(s) => (s, false),
                // Boxed: connecting (TCP, TLS) is rare and its future is large; keeping it out of
                // line keeps the per-request future small and cheap to move.
                None => (Box::pin(self.connect_h1(server)).await?, true),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(Checkin { slot: slot.clone(), sender }))),
                Err(mut e) => match e.take_message() {
                    // Not sent at all: the pooled connection was closing. Try another one.
                    Some(back) if !fresh => req = back,
                    _ => return Err(SendError::Failed(e.into_error())),
                },
            }
        }
    }

    async fn checkout(&self, slot: &ServerSlot) -> Option<http1::SendRequest<UpstreamBody>> {
        loop {
            let mut candidate = {
                let mut idle = slot.idle.lock();
                idle.pop()?
            };
            if candidate.sender.is_closed() || candidate.since.elapsed() > slot.idle_timeout {
                continue;
            }
            if candidate.sender.is_ready() {
                return Some(candidate.sender);
            }
            // The previous response has just ended; the connection task is finishing up.
            match tokio::time::timeout(Duration::from_millis(50), candidate.sender.ready()).await {
                Ok(Ok(())) => return Some(candidate.sender),
                _ => continue,
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
        let io = self.connect_io(server).await?;
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

    async fn connect_h1(&self, server: &ServerSpec) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let io = self.connect_io(server).await?;
        let (sender, conn) =
            http1::Builder::new().handshake(io).await.map_err(|_| SendError::Connect(ConnectFailure::Other))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// TCP (and TLS when the URL is https) to the server, within the connect timeout.
    async fn connect_io(&self, server: &ServerSpec) -> Result<TokioIo<MaybeTls>, SendError> {
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
            Ok(Ok(io)) => Ok(TokioIo::new(io)),
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
