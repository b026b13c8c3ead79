//! The gateway's own HTTP/1.1 client connection to a backend server.
//!
//! Why not hyper's client here: hyper runs every client connection as a task of its own, fed
//! through a channel, and the request, its response and the pool hand-over each cross that
//! boundary; for a proxy whose every request is one exchange on a pooled connection that
//! machinery was about a third of the instructions per proxied request (callgrind). Here the
//! request's own task writes the request, reads the response head and then the body, and the
//! connection goes back to its server's idle stack when the body has ended. hyper still serves
//! HTTP/2 backends and upgrade requests (WebSocket), whose connection is handed over.
//!
//! Framing follows RFC 9112. Request: no body → no framing field (a `Content-Length` the request
//! carries is set to 0); a body of known size → `Content-Length`; otherwise chunked. Response
//! (§6.3): HEAD, 1xx, 204 and 304 have no body; `Transfer-Encoding` wins over `Content-Length`
//! (which is then removed, and the connection is not reused); a final `chunked` coding is
//! decoded, any other coding is read until the connection closes; several `Content-Length`
//! values must agree or the response is rejected; no framing at all means "until close".
//! Interim 1xx responses are skipped; hop-by-hop fields are not put in the response's map. A
//! connection is reused only when the response was read to
//! its exact end, nothing followed it, it was HTTP/1.1 and did not say `Connection: close`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::pool::{MaybeTls, ServerSlot};
use crate::body::{BodyError, UpstreamBody};
use head::{Head, NameCache};

/// Most header fields in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// Largest response head, interim responses included.
const MAX_HEAD_BYTES: usize = 256 * 1024;
/// Least free space offered to one read.
const READ_CHUNK: usize = 8 * 1024;
/// Largest read for a body of known length.
const MAX_READ: usize = 64 * 1024;
/// Longest chunk-size line (with its extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Largest trailer section of a chunked response (and so its longest line).
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("backend connection: {0}")]
    Io(#[from] io::Error),
    #[error("the backend closed the connection before the response was complete")]
    Closed,
    #[error("invalid response from the backend: {0}")]
    Invalid(&'static str),
    /// The client's request body failed (too large, stalled, unreadable) while it was sent.
    #[error(transparent)]
    ClientBody(BodyError),
    /// The request body did not match its own declared length (a gateway fault, not the
    /// backend's: the request is not sent on).
    #[error("the request body does not match its length")]
    BodyLength,
    /// No response head before the response deadline.
    #[error("no response within the response timeout")]
    Timeout,
}

/// How [`Conn::send`] failed.
pub enum Failure {
    /// The reused connection turned out to be closed and nothing of the request can have been
    /// acted on; the request comes back to be sent on another connection.
    Stale(Box<Request<UpstreamBody>>),
    Failed(Error),
}

/// One HTTP/1.1 connection to a server: the transport and its read buffer. Idle connections
/// live in their server's stack; a request owns the connection until its response body ends.
pub struct Conn {
    io: MaybeTls,
    read: BytesMut,
    /// The request head (and chunk prefixes) being written; kept for the next request.
    out: Vec<u8>,
    /// Header names and value ranges of the head being parsed; kept for the next response.
    fields: Vec<(HeaderName, usize, usize)>,
    /// The last response's field names, by position (see `NameCache`).
    names: NameCache,
    /// The response deadline of the request on this connection. One timer per connection,
    /// moved forward request after request: a later deadline only updates the registered timer
    /// (no lock, no wheel operation), where a timer per request was registered in the runtime's
    /// timer wheel and removed again each time (about 0.6 % of the CPU per proxied request).
    /// Between requests it stays armed; should it fire, it wakes the task of the last request,
    /// which finds nothing to do.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    pub fn new(io: MaybeTls) -> Box<Conn> {
        Box::new(Conn {
            io,
            read: BytesMut::new(),
            out: Vec::new(),
            fields: Vec::new(),
            names: NameCache::default(),
            deadline: None,
        })
    }

    /// Whether an idle connection can carry a request: the server has not closed it and has
    /// sent nothing unasked. Costs no system call when the socket has had no event since the
    /// last read (the runtime tracks readiness).
    pub fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Writes `req` and reads the response head, which must come before `deadline`; the body
    /// streams from the returned response. `reused`: the connection came from the idle stack (a
    /// failure before any response byte may then be the server's idle close, and the request is
    /// handed back when that is safe).
    ///
    /// A plain function around an `async` block: the head is encoded before the future exists,
    /// which then holds the request's parts once (an `async fn` keeps its arguments besides
    /// what is made of them, and every move of the future copies both).
    #[inline(always)]
    pub fn send(
        mut self: Box<Self>,
        req: Request<UpstreamBody>,
        added: &[(HeaderName, HeaderValue)],
        reused: bool,
        slot: Arc<ServerSlot>,
        deadline: tokio::time::Instant,
    ) -> impl Future<Output = Result<Response<ResponseStream>, Failure>> + Send {
        let (mut parts, mut body) = req.into_parts();
        let framing = self.encode_head(&parts, added, &body);
        match self.deadline.as_mut() {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        let mut up = Upload::new(framing);
        async move {
            let head = std::future::poll_fn(|cx| match self.poll_exchange(cx, &mut body, &mut up, &mut parts) {
                Poll::Pending => match self.deadline.as_mut().map(|t| t.as_mut().poll(cx)) {
                    Some(Poll::Ready(())) => Poll::Ready(Err(Error::Timeout)),
                    _ => Poll::Pending,
                },
                done => done,
            })
            .await;
            let head = match head {
                Ok(h) => {
                    // The timer stays armed while the connection waits in the pool: it keeps a
                    // no-op waker instead of this request's task (which it would keep allocated,
                    // and wake for nothing should it fire).
                    if let Some(timer) = self.deadline.as_mut() {
                        let _ = timer.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                    }
                    h
                }
                // The connection is in the middle of an exchange: it goes with the error.
                Err(Error::Timeout) => return Err(Failure::Failed(Error::Timeout)),
                Err(e) => {
                    // Nothing came back. Hand the request back when the server can have done nothing
                    // with it: the body was never touched, and either nothing was written or the
                    // method is idempotent (a keep-alive race: the server closed as we wrote).
                    let untouched = matches!(up.framing, Framing::Empty);
                    let harmless = !up.wrote_any || super::idempotent(&parts.method);
                    if reused && !up.got_any && untouched && harmless && !matches!(e, Error::ClientBody(_)) {
                        return Err(Failure::Stale(Box::new(Request::from_parts(parts, body))));
                    }
                    return Err(Failure::Failed(e));
                }
            };
            // A response that came before the whole request went out ends the connection after it;
            // the rest of the body still goes out while the response is read.
            let reusable = head.reusable && up.finished;
            let upload = (!up.finished && up.failed.is_none()).then(|| Box::new(Uploading { body, up }));
            let mut resp = Response::new(ResponseStream {
                conn: Some(self),
                slot: reusable.then_some(slot),
                state: head.decode,
                trailers: None,
                trailer_bytes: 0,
                upload,
            });
            *resp.status_mut() = head.status;
            *resp.version_mut() = head.version;
            *resp.headers_mut() = head.headers;
            resp.body_mut().settle();
            Ok(resp)
        }
    }

    /// The request head into `out`: the map's fields, then `added`, with the framing its body
    /// needs.
    fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        added: &[(HeaderName, HeaderValue)],
        body: &UpstreamBody,
    ) -> Framing {
        let framing = if body.is_end_stream() {
            Framing::Empty
        } else if let Some(n) = body.size_hint().exact() {
            Framing::Length { left: n }
        } else {
            Framing::Chunked
        };
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        // The framing fields are the body's, written last; whatever the map says is dropped.
        let mut had_length = false;
        for (name, value) in parts.headers.iter().chain(added.iter().map(|(n, v)| (n, v))) {
            if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
                had_length |= name == header::CONTENT_LENGTH;
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        match framing {
            // A declared length with no body left to send (a policy emptied it) becomes 0.
            Framing::Empty if had_length => out.extend_from_slice(b"content-length: 0\r\n"),
            Framing::Empty => {}
            Framing::Length { left } => {
                out.extend_from_slice(b"content-length: ");
                crate::framing::push_decimal(left, out);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
        framing
    }

    /// Drives the upload and the response head together, so a server that answers before it has
    /// read the whole body (413, 401) is heard instead of deadlocking on a full socket.
    fn poll_exchange(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut UpstreamBody,
        up: &mut Upload,
        parts: &mut http::request::Parts,
    ) -> Poll<Result<Head, Error>> {
        if !up.finished && up.failed.is_none() {
            match self.poll_upload(cx, body, up) {
                Poll::Ready(Ok(())) => up.finished = true,
                // The request itself is at fault: no use waiting for an answer to it.
                Poll::Ready(Err(e @ (Error::ClientBody(_) | Error::BodyLength))) => return Poll::Ready(Err(e)),
                // The server may still have answered (and then closed); read what it sent.
                Poll::Ready(Err(e)) => up.failed = Some(e),
                Poll::Pending => {}
            }
        }
        match self.poll_head(cx, parts, up) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(up.failed.take().unwrap_or(e))),
            other => other,
        }
    }

    fn poll_upload(
        &mut self,
        cx: &mut Context<'_>,
        body: &mut UpstreamBody,
        up: &mut Upload,
    ) -> Poll<Result<(), Error>> {
        loop {
            // Take the next body frame while there is room, so a head and a small body go out in
            // one write.
            if !up.body_done && up.data.is_empty() && up.suffix.is_empty() {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => self.queue_data(up, data)?,
                        Ok(_) => continue,
                        Err(frame) => {
                            if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), &up.framing) {
                                self.queue_end(up, Some(&trailers))?;
                            }
                        }
                    },
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Error::ClientBody(e))),
                    Poll::Ready(None) => self.queue_end(up, None)?,
                    Poll::Pending => {
                        if up.pending_bytes(&self.out) == 0 {
                            return match Pin::new(&mut self.io).poll_flush(cx) {
                                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                                _ => Poll::Pending,
                            };
                        }
                    }
                }
            }
            if up.pending_bytes(&self.out) > 0 {
                let head = &self.out[up.out_pos..];
                let slices = [io::IoSlice::new(head), io::IoSlice::new(&up.data), io::IoSlice::new(up.suffix)];
                match Pin::new(&mut self.io).poll_write_vectored(cx, &slices) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into())),
                    Poll::Ready(Ok(n)) => {
                        up.wrote_any = true;
                        up.advance(n, self.out.len());
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                    Poll::Pending => return Poll::Pending,
                }
                continue;
            }
            if up.body_done {
                return match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(r) => Poll::Ready(r.map_err(Error::from)),
                    Poll::Pending => Poll::Pending,
                };
            }
        }
    }

    /// Queues one data frame of the request body (with its chunk framing).
    fn queue_data(&mut self, up: &mut Upload, data: Bytes) -> Result<(), Error> {
        up.compact(&mut self.out);
        match &mut up.framing {
            Framing::Length { left } => {
                let n = data.len() as u64;
                if n > *left {
                    return Err(Error::BodyLength);
                }
                *left -= n;
            }
            Framing::Chunked => {
                let (line, len) = crate::framing::chunk_size_line(data.len());
                self.out.extend_from_slice(&line[..len]);
                up.suffix = b"\r\n";
            }
            Framing::Empty => return Ok(()),
        }
        up.data = data;
        Ok(())
    }

    /// The body has ended: the last chunk (and trailers) of a chunked body.
    fn queue_end(&mut self, up: &mut Upload, trailers: Option<&HeaderMap>) -> Result<(), Error> {
        up.body_done = true;
        match up.framing {
            Framing::Chunked => {
                up.compact(&mut self.out);
                self.out.extend_from_slice(b"0\r\n");
                // Never framing, routing or hop-by-hop fields as trailers (RFC 9110 §6.5.1).
                let allowed = |n: &HeaderName| {
                    crate::hop::hop_by_hop_bit(n) == 0
                        && *n != header::CONTENT_LENGTH
                        && *n != header::HOST
                        && *n != header::AUTHORIZATION
                };
                for (name, value) in trailers.into_iter().flatten().filter(|(n, _)| allowed(n)) {
                    self.out.extend_from_slice(name.as_str().as_bytes());
                    self.out.extend_from_slice(b": ");
                    self.out.extend_from_slice(value.as_bytes());
                    self.out.extend_from_slice(b"\r\n");
                }
                self.out.extend_from_slice(b"\r\n");
                Ok(())
            }
            // The client's body was shorter than its declared length.
            Framing::Length { left } if left > 0 => Err(Error::BodyLength),
            _ => Ok(()),
        }
    }

    /// Reads until a final response head is complete; interim (1xx) responses are skipped.
    /// `parts` is the request's (see `parse_head`).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        parts: &mut http::request::Parts,
        up: &mut Upload,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if !self.read.is_empty() {
                match self.parse_head(parts, &mut up.interim) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                if self.read.len() > MAX_HEAD_BYTES {
                    return Poll::Ready(Err(Error::Invalid("the response head is too large")));
                }
            }
            match self.poll_fill(cx, READ_CHUNK) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Closed)),
                Poll::Ready(Ok(_)) => up.got_any = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Reads more bytes into the buffer, with room for at least `want` (within limits).
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK.min(want) {
            self.read.reserve(want.clamp(READ_CHUNK, MAX_READ));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    /// Like [`Conn::poll_fill`], for framing that needs more: the connection's end is an error.
    fn poll_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<(), Error>> {
        match ready!(self.poll_fill(cx, want)) {
            Ok(0) => Poll::Ready(Err(Error::Closed)),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into())),
        }
    }

    /// Up to `left` body bytes (reading when none are buffered); `left` is counted down.
    fn poll_data(&mut self, cx: &mut Context<'_>, left: &mut u64) -> Poll<Result<Bytes, Error>> {
        if self.read.is_empty() {
            ready!(self.poll_more(cx, usize::try_from(*left).unwrap_or(MAX_READ)))?;
        }
        let n = self.read.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        *left -= n as u64;
        Poll::Ready(Ok(self.read.split_to(n).freeze()))
    }
}

/// How the request body is framed.
enum Framing {
    Empty,
    Length { left: u64 },
    Chunked,
}

/// The request being written: framing, progress, and what is queued after `out[out_pos..]`.
struct Upload {
    framing: Framing,
    out_pos: usize,
    data: Bytes,
    suffix: &'static [u8],
    body_done: bool,
    finished: bool,
    wrote_any: bool,
    got_any: bool,
    failed: Option<Error>,
    /// Bytes of interim (1xx) heads skipped so far.
    interim: usize,
}

impl Upload {
    fn new(framing: Framing) -> Upload {
        let body_done = matches!(framing, Framing::Empty);
        Upload {
            framing,
            out_pos: 0,
            data: Bytes::new(),
            suffix: b"",
            body_done,
            finished: false,
            wrote_any: false,
            got_any: false,
            failed: None,
            interim: 0,
        }
    }

    fn pending_bytes(&self, out: &[u8]) -> usize {
        out.len() - self.out_pos + self.data.len() + self.suffix.len()
    }

    /// `n` bytes were written: from `out`, then the data, then the suffix.
    fn advance(&mut self, mut n: usize, out_len: usize) {
        let from_out = n.min(out_len - self.out_pos);
        self.out_pos += from_out;
        n -= from_out;
        let from_data = n.min(self.data.len());
        self.data.advance(from_data);
        n -= from_data;
        self.suffix = &self.suffix[n.min(self.suffix.len())..];
    }

    /// Drops the written part of `out` so new bytes can follow what is still pending.
    fn compact(&mut self, out: &mut Vec<u8>) {
        out.drain(..self.out_pos);
        self.out_pos = 0;
    }
}

/// How the response body is delimited.
enum Decode {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// A backend's response body read from the connection; the connection returns to its server's
/// idle stack when the body has ended and the connection may be reused.
pub struct ResponseStream {
    conn: Option<Box<Conn>>,
    slot: Option<Arc<ServerSlot>>,
    state: Decode,
    trailers: Option<HeaderMap>,
    /// Bytes of the trailer section read so far.
    trailer_bytes: usize,
    /// The rest of a request body still going out after the response head arrived (a server
    /// that answers while it reads, such as an echo or a transcoder, needs all of it).
    upload: Option<Box<Uploading>>,
}

/// A request body still being sent while its response is read.
struct Uploading {
    body: UpstreamBody,
    up: Upload,
}

impl ResponseStream {
    /// A body of length 0 ends at once: give the connection back before anyone polls.
    fn settle(&mut self) {
        if matches!(self.state, Decode::Length(0)) {
            self.state = Decode::Done;
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.upload = None;
        if let (Some(conn), Some(slot)) = (self.conn.take(), self.slot.take()) {
            if conn.read.is_empty() {
                slot.give_back(conn);
            }
        }
    }

    /// Any failure ends the body and drops the connection (never reused).
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        if let (Some(conn), Some(u)) = (self.conn.as_mut(), self.upload.as_mut()) {
            // Sent, or failed (the server stopped reading): either way nothing more goes out.
            if conn.poll_upload(cx, &mut u.body, &mut u.up).is_ready() {
                self.upload = None;
            }
        }
        match self.poll_decode(cx) {
            Poll::Ready(Some(Err(e))) => {
                self.upload = None;
                self.conn = None;
                self.slot = None;
                self.state = Decode::Done;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn poll_decode(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.state {
                Decode::Done => {
                    self.finish();
                    return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
                }
                Decode::Length(0) => self.state = Decode::Done,
                Decode::Length(left) => {
                    let data = ready!(conn.poll_data(cx, left))?;
                    if *left == 0 {
                        self.state = Decode::Done;
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decode::Close => {
                    if conn.read.is_empty() && ready!(conn.poll_fill(cx, MAX_READ))? == 0 {
                        // The end of the connection is the end of this body.
                        self.conn = None;
                        self.upload = None;
                        self.state = Decode::Done;
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(conn.read.split().freeze()))));
                }
                Decode::Chunked(chunk) => match chunk {
                    Chunk::Size => match find_crlf(&conn.read, MAX_CHUNK_LINE).map_err(Error::Invalid)? {
                        Some(end) => {
                            let size =
                                chunk_size(&conn.read[..end]).ok_or(Error::Invalid("invalid chunk size line"))?;
                            conn.read.advance(end + 2);
                            *chunk = if size == 0 { Chunk::Trailers } else { Chunk::Data(size) };
                        }
                        None => ready!(conn.poll_more(cx, READ_CHUNK))?,
                    },
                    Chunk::Data(left) => {
                        let data = ready!(conn.poll_data(cx, left))?;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Chunk::DataEnd => {
                        if conn.read.len() < 2 {
                            ready!(conn.poll_more(cx, READ_CHUNK))?;
                            continue;
                        }
                        if &conn.read[..2] != b"\r\n" {
                            return Poll::Ready(Some(Err(Error::Invalid("chunk data not followed by CRLF"))));
                        }
                        conn.read.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers => match find_crlf(&conn.read, MAX_TRAILER_BYTES).map_err(Error::Invalid)? {
                        Some(0) => {
                            conn.read.advance(2);
                            self.state = Decode::Done;
                        }
                        Some(end) => {
                            self.trailer_bytes += end + 2;
                            if self.trailer_bytes > MAX_TRAILER_BYTES {
                                return Poll::Ready(Some(Err(Error::Invalid("trailer section too large"))));
                            }
                            let line = conn.read.split_to(end + 2);
                            let (name, value) =
                                trailer_field(&line[..end]).ok_or(Error::Invalid("invalid trailer field"))?;
                            let trailers = self.trailers.get_or_insert_with(HeaderMap::new);
                            if trailers.len() >= MAX_HEADERS {
                                return Poll::Ready(Some(Err(Error::Invalid("too many trailer fields"))));
                            }
                            trailers.append(name, value);
                        }
                        None => ready!(conn.poll_more(cx, READ_CHUNK))?,
                    },
                },
            }
        }
    }
}

impl Body for ResponseStream {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || (matches!(self.state, Decode::Done) && self.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            Decode::Length(n) => SizeHint::with_exact(n),
            Decode::Done if self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Where the CRLF ending the first line is, if it is there yet; a bare CR or LF, or a line longer
/// than `max`, is an error.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let window = &buf[..buf.len().min(max + 2)];
    match window.iter().position(|&c| c == b'\n' || c == b'\r') {
        Some(i) if window.get(i) == Some(&b'\r') => match window.get(i + 1) {
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err("bare CR in chunked framing"),
            None if buf.len() > i + 1 => Err("bare CR in chunked framing"),
            None => Ok(None),
        },
        Some(_) => Err("bare LF in chunked framing"),
        None if buf.len() > max => Err("chunked framing line too long"),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (`1a;ext=v`): hex digits, then optional whitespace and
/// extensions (ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, &d| Some(n * 16 + u64::from((d as char).to_digit(16)?)))
}

fn trailer_field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&c| c == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

mod head;
#[cfg(test)]
mod tests;
