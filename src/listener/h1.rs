//! The gateway's own HTTP/1.1 server for requests that are whole in their head: no body, no
//! upgrade (GET, HEAD, DELETE, OPTIONS… without content — most API traffic).
//!
//! The framing guard has already parsed and judged the head and recorded where its parts are,
//! so the request is built from the guard's bytes without a second parse; the response head is
//! encoded by hyper's rules (`encode`) and written with its first body bytes in one vectored
//! write. Requests with a body or an upgrade stay with hyper's HTTP/1 connection (the listener
//! lends it the guard), as does HTTP/2: the design and its measurements are in
//! `docs/design/own-http1-server.md`.
//!
//! One request is answered at a time, in order. While the handler runs and while the response
//! streams, the guard reads ahead: a client that hangs up cancels its request (its backend call
//! is dropped, as hyper does), and a pipelined head waits, judged, for its turn.

mod encode;
#[cfg(test)]
mod tests;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{ClientBody, ResponseBody};
use crate::edge::guard::{H1Guard, HeadFields};
use encode::{Asked, BodyLen, Framing};

/// What the connection does after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    Close,
}

/// The request a judged head describes (the guard validated its syntax and framing), sharing
/// the head's bytes. An error names the part `http` rejects although the guard let it through
/// (a target with bytes a URI cannot hold); it is answered with 400. `spare` is the last
/// response's header map, emptied, reused (as hyper does) to save its allocations.
pub fn request(head: &Bytes, f: &HeadFields, spare: Option<HeaderMap>) -> Result<Request<ClientBody>, &'static str> {
    let part = |(start, end): (u32, u32)| head.get(start as usize..end as usize).unwrap_or_default();
    let method = Method::from_bytes(part(f.method)).map_err(|_| "invalid method")?;
    let target = head.slice(f.target.0 as usize..f.target.1 as usize);
    let uri = Uri::from_maybe_shared(target).map_err(|_| "the request target is not a valid URI")?;
    let mut headers = match spare {
        Some(mut map) => {
            map.reserve(f.fields.len());
            map
        }
        None => HeaderMap::with_capacity(f.fields.len()),
    };
    for &[ns, ne, vs, ve] in &f.fields {
        let name = HeaderName::from_bytes(part((ns, ne))).map_err(|_| "invalid header name")?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize)).map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = if f.http11 { Version::HTTP_11 } else { Version::HTTP_10 };
    *req.headers_mut() = headers;
    Ok(req)
}

/// What produces the response to the request being answered: the listener's handler loop
/// (`listener::served`), which answers request after request in one reused allocation; in the
/// tests, a handler future per request (`Option<F>`, set to `None` once it has answered).
pub trait Respond {
    /// Polls for the response to the request handed over last.
    fn poll_response(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ResponseBody>>;
    /// Drops the work in progress: the client has gone, and with it the reason to finish.
    fn cancel(self: Pin<&mut Self>);
}

/// Answers one request whose response comes from `respond`: waits for it (the client hanging
/// up cancels the work), writes it, and says whether the connection stays open.
/// `keep_alive` is what the client and the connection allow; `still_open` is asked again when
/// the head is written (the listener may have been told to stop meanwhile). The response's
/// header map is left in `spare`, emptied, for the next request.
#[allow(clippy::too_many_arguments)]
pub async fn answer<S, R>(
    io: &mut H1Guard<S>,
    mut respond: Pin<&mut R>,
    method: &Method,
    http10: bool,
    keep_alive: bool,
    still_open: impl Fn() -> bool,
    out: &mut Vec<u8>,
    spare: &mut Option<HeaderMap>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Respond + ?Sized,
{
    let mut watching = true;
    let mut response = poll_fn(|cx| {
        if let Poll::Ready(response) = respond.as_mut().poll_response(cx) {
            return Poll::Ready(Some(response));
        }
        if client_gone(io, &mut watching, cx) {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    if response.is_none() {
        // The client has gone: its backend call is dropped with the handler's work.
        respond.as_mut().cancel();
    }
    // The response stays where it is until it is dropped in place (see `send_body`): it is
    // large (the body carries the request's log record), and each move is a copy.
    let Some(r) = response.as_mut() else {
        return Next::Close;
    };
    let mut keep_alive = keep_alive && still_open();
    let body = r.body();
    let len = if body.is_end_stream() {
        BodyLen::None
    } else {
        body.size_hint().exact().map_or(BodyLen::Unknown, BodyLen::Known)
    };
    let reason = r.extensions().get::<hyper::ext::ReasonPhrase>().map(|r| r.as_bytes());
    out.clear();
    let asked = Asked { method, http10 };
    let framing = encode::head(r.status(), reason, r.headers(), asked, len, &mut keep_alive, out);
    let mut headers = std::mem::take(r.headers_mut());
    headers.clear();
    *spare = Some(headers);
    let sent = send_body(io, &mut response, framing, out, watching).await;
    // The body (and with it the request's log line) is done before the final flush, as hyper
    // does; the flush tells the guard the answer is on its way.
    let flushed = poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await;
    match (sent, flushed) {
        (Ok(true), Ok(())) if keep_alive => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// The abort watch while an answer is pending: true once the client has gone. `watching` turns
/// false for good when the guard has judged more bytes (a pipelined request waits its turn).
fn client_gone<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut H1Guard<S>,
    watching: &mut bool,
    cx: &mut Context<'_>,
) -> bool {
    if !*watching {
        return false;
    }
    match io.poll_gone(cx) {
        Poll::Ready(true) => true,
        Poll::Ready(false) => {
            *watching = false;
            false
        }
        Poll::Pending => false,
    }
}

/// Writes the head in `out` and the body of `response` framed as `framing`. `Ok(true)` if the
/// body was sent whole and the connection may carry another request. The response is dropped
/// (set to `None`, in place) before the last write, as hyper ends a body: a client that has the
/// whole answer finds the request finished and logged.
async fn send_body<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut H1Guard<S>,
    response: &mut Option<Response<ResponseBody>>,
    framing: Framing,
    out: &[u8],
    mut watching: bool,
) -> io::Result<bool> {
    let mut head = out;
    if framing == Framing::Empty {
        *response = None;
        write_all(io, &mut [IoSlice::new(head)]).await?;
        return Ok(true);
    }
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let last = loop {
        let frame = poll_fn(|cx| {
            let Some(r) = response.as_mut() else {
                return Poll::Ready(Some(None));
            };
            if let Poll::Ready(frame) = Pin::new(r.body_mut()).poll_frame(cx) {
                return Poll::Ready(Some(frame));
            }
            if client_gone(io, &mut watching, cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let data = match frame {
            // The client went away.
            None => return Ok(false),
            // A body that breaks off ends the connection without a proper end, so the client
            // sees the response as incomplete.
            Some(Some(Err(_))) => {
                *response = None;
                write_all(io, &mut [IoSlice::new(head)]).await?;
                return Ok(false);
            }
            Some(None) => break None,
            Some(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not passed on; empty frames carry nothing.
                _ => continue,
            },
        };
        if (data.len() as u64) > left {
            // More than the length the head announced: what fits goes, then the connection
            // closes (hyper treats this as an error as well).
            *response = None;
            write_data(io, head, framing, data.slice(..left as usize), false).await?;
            return Ok(false);
        }
        left -= data.len() as u64;
        // The last frame: the body says so, or it has all the bytes the head announced (a
        // body may say it has ended only when polled again).
        let announced_all = matches!(framing, Framing::Length(_)) && left == 0;
        if announced_all || response.as_ref().is_none_or(|r| r.body().is_end_stream()) {
            break Some(data);
        }
        write_data(io, head, framing, data, false).await?;
        head = &[];
        // Flushing per frame matters for TLS, where written bytes wait in the session.
        poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await?;
    };
    *response = None;
    match last {
        Some(data) => write_data(io, head, framing, data, true).await?,
        None if framing == Framing::Chunked => {
            write_all(io, &mut [IoSlice::new(head), IoSlice::new(b"0\r\n\r\n")]).await?
        }
        None => write_all(io, &mut [IoSlice::new(head)]).await?,
    }
    Ok(match framing {
        Framing::Chunked => true,
        // A body shorter than announced leaves the client waiting for the rest: close.
        Framing::Length(_) => left == 0,
        Framing::Close | Framing::Empty => false,
    })
}

/// Writes `data` after `head` (what is left of it), framed; `end` adds the end of a chunked body.
async fn write_data<S: AsyncWrite + Unpin>(
    io: &mut S,
    head: &[u8],
    framing: Framing,
    data: Bytes,
    end: bool,
) -> io::Result<()> {
    if framing == Framing::Chunked {
        let (prefix, len) = crate::framing::chunk_size_line(data.len());
        let suffix: &[u8] = if end { b"\r\n0\r\n\r\n" } else { b"\r\n" };
        let mut parts = [IoSlice::new(head), IoSlice::new(&prefix[..len]), IoSlice::new(&data), IoSlice::new(suffix)];
        write_all(io, &mut parts).await
    } else {
        write_all(io, &mut [IoSlice::new(head), IoSlice::new(data.chunk())]).await
    }
}

/// Writes every slice, as few system calls as the socket allows.
async fn write_all<S: AsyncWrite + Unpin>(io: &mut S, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, parts)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}
