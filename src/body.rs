//! Body types that flow through the proxy without boxing.
//!
//! `ResponseBody` is what the client receives: a fixed body the gateway wrote, or the backend's
//! body streamed through. It carries the request's [`RequestTail`], whose drop writes the access
//! log line once the last byte has gone out (or the client went away), as Apache does.
//! `UpstreamBody` is what the backend receives: nothing, or the client's body streamed through a
//! byte counter that enforces `edge.limits.body_bytes`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::compress::encode::{Encoded, Encoder};
use crate::observe::RequestTail;
use crate::upstream::BackendBody;

/// The error a response body ends with (a backend that broke off, a failed encoder).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors a proxied body can end with.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// No body bytes for longer than `edge.limits.body_timeout` (HTTP/2; the HTTP/1 guard
    /// judges its own connections).
    #[error("the request body stalled for longer than {0:?}")]
    Stalled(std::time::Duration),
}

pin_project_lite::pin_project! {
    /// The response body sent to the client.
    pub struct ResponseBody {
        #[pin]
        inner: Inner,
        tail: Option<RequestTail>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner {
        Full { data: Option<Bytes> },
        Upstream { #[pin] body: BackendBody },
        // Frames a policy already read (`cache-store` looking for the end of a body), then the
        // rest of the body.
        Replay { head: VecDeque<Frame<Bytes>>, rest: Option<Pin<Box<ResponseBody>>> },
        // Boxed: compressed responses are the rare case and the encoder state is large.
        Encoded { body: Box<Encoded> },
    }
}

impl ResponseBody {
    pub fn full(data: Bytes) -> Self {
        ResponseBody { inner: Inner::Full { data: if data.is_empty() { None } else { Some(data) } }, tail: None }
    }

    pub fn empty() -> Self {
        ResponseBody { inner: Inner::Full { data: None }, tail: None }
    }

    /// A backend's body, streamed through (its HTTP/1.1 connection returns to the pool when the
    /// body ends).
    pub fn upstream(body: BackendBody) -> Self {
        ResponseBody { inner: Inner::Upstream { body }, tail: None }
    }

    /// `head` (frames already read from a body) followed by `rest` (what is left of it).
    pub fn replay(head: Vec<Frame<Bytes>>, rest: ResponseBody) -> Self {
        ResponseBody { inner: Inner::Replay { head: head.into(), rest: Some(Box::pin(rest)) }, tail: None }
    }

    /// This body compressed as it streams (`compress::apply`); the tail, if any, stays outside
    /// so the log counts the bytes actually sent.
    pub fn encoded(mut self, encoder: Encoder) -> Self {
        let tail = self.tail.take();
        ResponseBody { inner: Inner::Encoded { body: Box::new(Encoded::new(self, encoder)) }, tail }
    }

    /// Attaches the per-request tail; it is finished when this body is dropped.
    pub fn set_tail(&mut self, tail: RequestTail) {
        self.tail = Some(tail);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match this.inner.project() {
            InnerProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            InnerProj::Upstream { body } => body.poll_frame(cx),
            InnerProj::Replay { head, rest } => match (head.pop_front(), rest.as_mut()) {
                (Some(f), _) => Poll::Ready(Some(Ok(f))),
                (None, Some(r)) => r.as_mut().poll_frame(cx),
                (None, None) => Poll::Ready(None),
            },
            InnerProj::Encoded { body } => Pin::new(&mut **body).poll_frame(cx),
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(tail)) = (&polled, this.tail.as_mut()) {
            if let Some(d) = frame.data_ref() {
                tail.bytes_sent += d.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full { data } => data.is_none(),
            Inner::Upstream { body, .. } => body.is_end_stream(),
            Inner::Replay { head, rest } => head.is_empty() && rest.as_ref().is_none_or(|r| r.is_end_stream()),
            Inner::Encoded { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Upstream { body, .. } => body.size_hint(),
            Inner::Replay { head, rest } => {
                let n: u64 = head.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
                let mut h = rest.as_ref().map_or_else(|| SizeHint::with_exact(0), |r| r.size_hint());
                if let Some(upper) = h.upper() {
                    h.set_upper(upper.saturating_add(n));
                }
                h.set_lower(h.lower().saturating_add(n));
                h
            }
            Inner::Encoded { body } => body.size_hint(),
        }
    }
}

/// The body of a client's request as the listener hands it over: none (a body-less HTTP/1
/// request the gateway's own HTTP/1 server read), or hyper's stream (HTTP/2, and HTTP/1
/// requests with a body or an upgrade, which hyper serves).
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
}

impl ClientBody {
    /// The streamed body, if there is one that has not ended.
    pub fn into_stream(self) -> Option<Incoming> {
        match self {
            ClientBody::Hyper(b) if !b.is_end_stream() => Some(b),
            _ => None,
        }
    }
}

/// The request body sent to a backend: nothing, the client's body streamed through the size
/// limit, or a body a policy buffered or wrote (`set-body`).
pub struct UpstreamBody {
    inner: Upstream,
    seen: u64,
    limit: u64,
    /// Ends the body with [`BodyError::Stalled`] when no data arrives for that long.
    stall: Option<(std::time::Duration, Pin<Box<tokio::time::Sleep>>)>,
}

enum Upstream {
    Stream(Incoming),
    Full(Option<Bytes>),
}

impl UpstreamBody {
    pub fn empty() -> Self {
        UpstreamBody { inner: Upstream::Full(None), seen: 0, limit: 0, stall: None }
    }

    pub fn streaming(body: Incoming, limit: u64) -> Self {
        UpstreamBody { inner: Upstream::Stream(body), seen: 0, limit, stall: None }
    }

    /// A streamed body that must keep moving: each data frame restarts a `stall_after` timer.
    pub fn streaming_with_stall(body: Incoming, limit: u64, stall_after: std::time::Duration) -> Self {
        let sleep = Box::pin(tokio::time::sleep(stall_after));
        UpstreamBody { inner: Upstream::Stream(body), seen: 0, limit, stall: Some((stall_after, sleep)) }
    }

    pub fn full(data: Bytes) -> Self {
        UpstreamBody {
            inner: Upstream::Full(if data.is_empty() { None } else { Some(data) }),
            seen: 0,
            limit: 0,
            stall: None,
        }
    }

    /// A copy of a buffered body (see [`UpstreamBody::buffer`]); a streaming body cannot be copied
    /// and gives an empty one.
    pub fn clone_buffered(&self) -> Self {
        match &self.inner {
            Upstream::Full(data) => {
                UpstreamBody { inner: Upstream::Full(data.clone()), seen: 0, limit: 0, stall: None }
            }
            Upstream::Stream(_) => UpstreamBody::empty(),
        }
    }

    /// Reads the whole body (bounded by the same limit) and keeps it, so it can still be sent.
    pub async fn buffer(&mut self) -> Result<Bytes, BodyError> {
        use http_body_util::BodyExt;
        if let Upstream::Full(data) = &self.inner {
            return Ok(data.clone().unwrap_or_default());
        }
        let mut out = bytes::BytesMut::new();
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                out.extend_from_slice(&data);
            }
        }
        let data = out.freeze();
        self.inner = Upstream::Full(Some(data.clone()));
        Ok(data)
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let body = match &mut this.inner {
            Upstream::Full(data) => return Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Upstream::Stream(body) => body,
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.seen += d.len() as u64;
                    if this.seen > this.limit {
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit: this.limit })));
                    }
                    if let Some((after, sleep)) = &mut this.stall {
                        sleep.as_mut().reset(tokio::time::Instant::now() + *after);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Hyper(e)))),
            Poll::Ready(None) => {
                this.stall = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let stalled = match &mut this.stall {
                    Some((after, sleep)) => sleep.as_mut().poll(cx).is_ready().then_some(*after),
                    None => None,
                };
                match stalled {
                    Some(after) => {
                        this.stall = None;
                        Poll::Ready(Some(Err(BodyError::Stalled(after))))
                    }
                    None => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Upstream::Full(data) => data.is_none(),
            Upstream::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Upstream::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Upstream::Stream(b) => b.size_hint(),
        }
    }
}
