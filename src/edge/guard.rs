//! The HTTP/1 framing guard: the first thing that reads a client's bytes.
//!
//! It sits between the socket and hyper and lets through only request heads it has parsed and
//! judged unambiguous (RFC 9112), then follows the body framing so it knows where the next head
//! starts. Everything hyper would accept leniently or resolve silently is refused here with a
//! problem+json response and a closed connection: both Content-Length and Transfer-Encoding,
//! duplicate or malformed Content-Length, any coding but a lone `chunked`, bare LF or CR,
//! obs-fold, NUL, malformed chunk lines, framing header names spelled with `_`, an absolute-form
//! target whose authority disagrees with Host. It also owns the header-read deadline (408), the
//! keep-alive idle timeout, and the head limits (414, 431) and declared body limit (413), so
//! those answers are ours rather than hyper's bare ones.
//!
//! Invariant: hyper never sees a head byte the guard has not validated, so an ambiguous request
//! never reaches routing, policies or a backend. HTTP/2 (prior knowledge or ALPN) is passed
//! through untouched: h2 framing has no such ambiguity and hyper's h2 limits apply.
//!
//! Order on the wire is kept: a refused head that follows requests still being answered waits
//! (EOF is withheld from hyper) until their responses are complete, so the client gets every
//! earlier answer and then ours. An upgrade request is held until earlier responses are written,
//! and the bytes after it stay guarded until its own answer shows `101`: a refused upgrade
//! leaves the connection in HTTP/1 with the guard still in front (Pingora CVE-2026-2833). A body
//! that turns out malformed after hyper has its head ends hyper's read with EOF instead: hyper
//! and the proxy answer that request themselves, so the guard adds no second response.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::respond::Problem;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Hard cap on the header array handed to httparse; `edge.limits.headers` may not exceed it.
pub const MAX_HEADERS: usize = 256;
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const READ_CHUNK: usize = 16 * 1024;
/// What a response that switches protocols starts with (hyper answers HTTP/1.1 upgrades in 1.1).
const SWITCHING: &[u8; 12] = b"HTTP/1.1 101";

/// Limits the guard enforces; copied from the active snapshot when the connection is accepted.
#[derive(Debug, Clone)]
pub struct GuardLimits {
    pub header_bytes: usize,
    pub headers: usize,
    pub uri_bytes: usize,
    pub body_bytes: u64,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// State shared between the guard and the requests served on its connection.
#[derive(Default)]
pub struct ConnShared {
    /// Requests whose response has not finished; the idle timeout never closes a busy connection.
    pub in_flight: InFlight,
}

/// The requests of one connection: how many are being answered, how many have finished.
///
/// `fetch_add`, `fetch_sub` and `load` behave as on an `AtomicUsize` (a request's tail adds one
/// when the request starts and subtracts one when its response is done). A finished request
/// also wakes the guard if it is waiting for earlier responses to be complete, and restarts the
/// idle period.
#[derive(Default)]
pub struct InFlight {
    now: AtomicUsize,
    finished: AtomicUsize,
    last: parking_lot::Mutex<LastFinish>,
}

#[derive(Default)]
struct LastFinish {
    waker: Option<Waker>,
    at: Option<Instant>,
}

impl InFlight {
    pub fn fetch_add(&self, n: usize, order: Ordering) -> usize {
        self.now.fetch_add(n, order)
    }

    pub fn fetch_sub(&self, n: usize, order: Ordering) -> usize {
        let before = self.now.fetch_sub(n, order);
        self.finished.fetch_add(n, Ordering::AcqRel);
        let waker = {
            let mut last = self.last.lock();
            last.at = Some(Instant::now());
            last.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        before
    }

    pub fn load(&self, order: Ordering) -> usize {
        self.now.load(order)
    }

    /// Requests whose response is complete, since the connection opened.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    fn wake_on_finish(&self, waker: &Waker) {
        let mut last = self.last.lock();
        if !last.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            last.waker = Some(waker.clone());
        }
    }

    fn last_finish(&self) -> Option<Instant> {
        self.last.lock().at
    }
}

/// Called once when the guard refuses a request, so the rejection reaches the access log.
pub type RejectHook = Arc<dyn Fn(&Problem, &str) + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for (or accumulating) a request head.
    Head,
    /// Content-Length body: bytes left.
    Body(u64),
    Chunked(Chunk),
    /// A validated upgrade request head of this many bytes (leading empty lines included), held
    /// until every earlier response is written, so the next status line hyper writes answers it.
    UpgradeHold(usize),
    /// The upgrade request is with hyper; the client's further bytes wait until the answer's
    /// status line shows whether the connection switches protocols.
    UpgradeAwait,
    /// HTTP/2, or an HTTP/1 upgrade answered with 101: bytes are no longer HTTP/1 requests.
    Passthrough,
    /// A rejection is queued; reads return EOF (once earlier responses are complete).
    Rejected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
}

/// Everything the guard tracks besides the stream itself.
struct Core {
    buf: BytesMut,
    // Bytes at the front of `buf` already validated and ready for hyper.
    ready: usize,
    state: State,
    limits: GuardLimits,
    shared: Arc<ConnShared>,
    on_reject: Option<RejectHook>,
    sleep: Pin<Box<Sleep>>,
    // True while the deadline is the header deadline (408); false while it is the idle one.
    head_started: bool,
    first_request: bool,
    // Request heads handed to hyper; each gets exactly one response.
    released: usize,
    // `finished` requests as of the last completed flush: their bytes have all been written.
    flushed: usize,
    // EOF is withheld until this many requests are finished (their answers precede ours).
    reject_after: usize,
    reject: Option<Vec<u8>>,
    reject_written: usize,
    eof: bool,
    // The start of the answer to an upgrade request, as written.
    probe: [u8; 12],
    probe_len: usize,
    // The reader waiting for an upgrade's answer or for a flush.
    read_waker: Option<Waker>,
}

pin_project_lite::pin_project! {
    /// See the module documentation.
    pub struct H1Guard<S> {
        #[pin]
        inner: S,
        core: Core,
    }
}

impl<S> H1Guard<S> {
    /// `h2` is true when TLS ALPN already chose HTTP/2.
    pub fn new(
        inner: S,
        limits: GuardLimits,
        shared: Arc<ConnShared>,
        on_reject: Option<RejectHook>,
        h2: bool,
    ) -> Self {
        let deadline = Instant::now() + limits.header_timeout;
        H1Guard {
            inner,
            core: Core {
                buf: BytesMut::new(),
                ready: 0,
                state: if h2 { State::Passthrough } else { State::Head },
                limits,
                shared,
                on_reject,
                sleep: Box::pin(tokio::time::sleep_until(deadline)),
                head_started: false,
                first_request: true,
                released: 0,
                flushed: 0,
                reject_after: 0,
                reject: None,
                reject_written: 0,
                eof: false,
                probe: [0; 12],
                probe_len: 0,
                read_waker: None,
            },
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What judging the buffered bytes produced.
enum Step {
    /// Need more bytes from the socket.
    More,
    /// Some bytes became ready (or the state changed); loop again.
    Progress,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for H1Guard<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let mut inner = this.inner;
        let g = this.core;
        loop {
            if g.ready > 0 {
                let n = g.ready.min(out.remaining());
                out.put_slice(&g.buf[..n]);
                g.buf.advance(n);
                g.ready -= n;
                return Poll::Ready(Ok(()));
            }
            match g.state {
                State::Rejected => {
                    if g.shared.in_flight.finished() >= g.reject_after {
                        return Poll::Ready(Ok(()));
                    }
                    // Earlier requests are still being answered: EOF now would make hyper drop
                    // them. Wait until they are finished.
                    g.shared.in_flight.wake_on_finish(cx.waker());
                    if g.shared.in_flight.finished() < g.reject_after {
                        return Poll::Pending;
                    }
                    continue;
                }
                State::UpgradeHold(len) => {
                    if g.quiet() {
                        g.ready += len;
                        g.released += 1;
                        g.probe_len = 0;
                        g.state = State::UpgradeAwait;
                        continue;
                    }
                    g.read_waker = Some(cx.waker().clone());
                    g.shared.in_flight.wake_on_finish(cx.waker());
                    if g.quiet() {
                        continue;
                    }
                    return Poll::Pending;
                }
                State::UpgradeAwait => {
                    // Woken by the write side once the answer's status line is out.
                    g.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                State::Passthrough if g.buf.is_empty() => return inner.as_mut().poll_read(cx, out),
                State::Body(n) if g.buf.is_empty() && (out.remaining() as u64) <= n => {
                    // Large bodies go straight into hyper's buffer without a copy.
                    let before = out.filled().len();
                    ready!(inner.as_mut().poll_read(cx, out))?;
                    let got = (out.filled().len() - before) as u64;
                    if got == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    g.state = if got == n { State::Head } else { State::Body(n - got) };
                    if g.state == State::Head {
                        g.arm_idle();
                    }
                    return Poll::Ready(Ok(()));
                }
                _ => {}
            }
            if let Step::Progress = g.judge() {
                continue;
            }
            if g.eof {
                if g.state == State::Head && !g.buf.is_empty() {
                    // The client closed in the middle of a head: nothing to answer.
                    g.buf.clear();
                }
                return Poll::Ready(Ok(()));
            }
            // Need more bytes.
            if g.buf.capacity() - g.buf.len() < 1024 {
                g.buf.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(inner.as_mut(), cx, &mut g.buf) {
                Poll::Ready(Ok(0)) => {
                    g.eof = true;
                    continue;
                }
                Poll::Ready(Ok(_)) => {
                    if g.state == State::Head && !g.head_started {
                        g.head_started = true;
                        let deadline = Instant::now() + g.limits.header_timeout;
                        g.sleep.as_mut().reset(deadline);
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if g.state != State::Head {
                        return Poll::Pending;
                    }
                    if std::future::Future::poll(g.sleep.as_mut(), cx).is_pending() {
                        return Poll::Pending;
                    }
                    if g.head_started {
                        let problem = Problem::edge(
                            StatusCode::REQUEST_TIMEOUT,
                            "header-timeout",
                            "the request head did not arrive within edge.limits.header_timeout",
                        );
                        g.refuse_head(problem);
                        continue;
                    }
                    if g.shared.in_flight.load(Ordering::Acquire) > 0 {
                        // A response is still streaming on this connection: not idle.
                        let deadline = Instant::now() + g.limits.idle_timeout;
                        g.sleep.as_mut().reset(deadline);
                        continue;
                    }
                    if let Some(deadline) = g.shared.in_flight.last_finish().map(|t| t + g.limits.idle_timeout) {
                        if deadline > Instant::now() {
                            // Idle counts from the end of the last response.
                            g.sleep.as_mut().reset(deadline);
                            continue;
                        }
                    }
                    // Idle keep-alive connection: close quietly, as nginx does.
                    g.eof = true;
                    g.state = State::Rejected;
                    g.reject_after = 0;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl Core {
    fn arm_idle(&mut self) {
        self.head_started = false;
        self.sleep.as_mut().reset(Instant::now() + self.limits.idle_timeout);
    }

    /// Every request hyper was given is answered and its bytes are written.
    fn quiet(&self) -> bool {
        self.shared.in_flight.finished() >= self.released && self.flushed >= self.released
    }

    /// Refuses the next request head: our answer follows the answers hyper still owes.
    fn refuse_head(&mut self, problem: Problem) {
        let request_id = crate::edge::new_request_id();
        if let Some(hook) = &self.on_reject {
            hook(&problem, &request_id);
        }
        self.reject = Some(problem.to_http1_bytes(&request_id));
        self.reject_after = self.released;
        self.state = State::Rejected;
    }

    /// Refuses the body of a request hyper already has: its read ends (EOF, an incomplete body)
    /// and hyper answers that request itself, so no bytes of ours are queued.
    fn refuse_body(&mut self, detail: &str) {
        tracing::debug!(detail, "Refused a malformed request body; closing the connection.");
        self.reject = None;
        self.reject_after = 0;
        self.state = State::Rejected;
    }

    /// Watches the answer to an upgrade request as hyper writes it.
    fn wrote(&mut self, written: &[u8]) {
        if self.state != State::UpgradeAwait || written.is_empty() {
            return;
        }
        let take = (self.probe.len() - self.probe_len).min(written.len());
        self.probe[self.probe_len..self.probe_len + take].copy_from_slice(&written[..take]);
        self.probe_len += take;
        if self.probe_len < self.probe.len() {
            return;
        }
        if &self.probe == SWITCHING {
            self.state = State::Passthrough;
        } else {
            // Refused: the connection stays HTTP/1 and what follows is judged as a request.
            self.state = State::Head;
            self.arm_idle();
        }
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
    }

    /// Judges buffered bytes in the current state.
    fn judge(&mut self) -> Step {
        if self.buf.len() <= self.ready {
            return Step::More;
        }
        match self.state {
            State::Rejected | State::UpgradeHold(_) | State::UpgradeAwait => Step::More,
            State::Passthrough => {
                self.ready = self.buf.len();
                Step::Progress
            }
            State::Body(n) => {
                let take = ((self.buf.len() - self.ready) as u64).min(n);
                self.ready += take as usize;
                self.state = if take == n { State::Head } else { State::Body(n - take) };
                if self.state == State::Head {
                    self.arm_idle();
                }
                Step::Progress
            }
            State::Chunked(chunk) => match judge_chunk(&self.buf[self.ready..], chunk) {
                Ok((used, next)) => {
                    if used == 0 && next == State::Chunked(chunk) {
                        return Step::More;
                    }
                    self.ready += used;
                    self.state = next;
                    if next == State::Head {
                        self.arm_idle();
                    }
                    Step::Progress
                }
                Err(detail) => {
                    self.refuse_body(detail);
                    Step::Progress
                }
            },
            State::Head => self.judge_head_state(),
        }
    }

    fn judge_head_state(&mut self) -> Step {
        let pending = &self.buf[self.ready..];
        if self.first_request && pending.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(pending) {
            return Step::More;
        }
        if self.first_request && pending.starts_with(H2_PREFACE) {
            self.state = State::Passthrough;
            self.ready = self.buf.len();
            return Step::Progress;
        }
        // RFC 9112 §2.2: ignore at least one empty line before a request-line; but not an
        // endless stream of them, which would otherwise all be buffered.
        let skip = leading_crlf(pending);
        if skip > self.limits.header_bytes {
            self.refuse_head(bad("too many empty lines before the request line"));
            return Step::Progress;
        }
        match judge_head(&pending[skip..], &self.limits) {
            Ok(None) => Step::More,
            Ok(Some((head_len, State::Passthrough))) => {
                // An upgrade: handed to hyper only once the connection is quiet (see `UpgradeHold`).
                self.first_request = false;
                self.state = State::UpgradeHold(skip + head_len);
                Step::Progress
            }
            Ok(Some((head_len, next))) => {
                self.first_request = false;
                self.ready += skip + head_len;
                self.released += 1;
                self.state = next;
                if next == State::Head {
                    self.arm_idle();
                }
                Step::Progress
            }
            Err(problem) => {
                self.refuse_head(*problem);
                Step::Progress
            }
        }
    }
}

fn leading_crlf(b: &[u8]) -> usize {
    let mut i = 0;
    while b.len() >= i + 2 && &b[i..i + 2] == b"\r\n" {
        i += 2;
    }
    i
}

fn bad(detail: &str) -> Problem {
    Problem::edge(StatusCode::BAD_REQUEST, "bad-request", detail)
}

fn uri_too_long() -> Box<Problem> {
    Box::new(Problem::edge(
        StatusCode::URI_TOO_LONG,
        "uri-too-long",
        "the request target is longer than edge.limits.uri_bytes",
    ))
}

fn too_many_headers() -> Box<Problem> {
    Box::new(Problem::edge(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "too-many-headers",
        "more headers than edge.limits.headers",
    ))
}

fn headers_too_large() -> Box<Problem> {
    Box::new(Problem::edge(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
        "the request headers exceed edge.limits.header_bytes",
    ))
}

/// Judges a complete head, or asks for more bytes. Returns the head length and the body state.
fn judge_head(b: &[u8], limits: &GuardLimits) -> Result<Option<(usize, State)>, Box<Problem>> {
    // Find the end of the head while checking line endings: every LF must follow a CR.
    let mut line_start = 0usize;
    let mut lines = 0usize;
    let mut end = None;
    // Where the header section starts (just after the request line).
    let mut fields_start = 0usize;
    for nl in memchr::memchr_iter(b'\n', b) {
        if nl == 0 || b[nl - 1] != b'\r' {
            return Err(Box::new(bad("bare LF in the request head")));
        }
        let line = &b[line_start..nl - 1];
        if lines == 0 {
            if line.len() > limits.uri_bytes + 32 {
                return Err(uri_too_long());
            }
            fields_start = nl + 1;
        } else if line.is_empty() {
            end = Some(nl + 1);
            break;
        } else if line[0] == b' ' || line[0] == b'\t' {
            return Err(Box::new(bad("obsolete line folding in a header")));
        }
        lines += 1;
        if lines > limits.headers + 1 {
            return Err(too_many_headers());
        }
        line_start = nl + 1;
    }
    let Some(head_len) = end else {
        if lines == 0 && b.len() > limits.uri_bytes + 32 {
            return Err(uri_too_long());
        }
        if lines > 0 && b.len() - fields_start > limits.header_bytes {
            return Err(headers_too_large());
        }
        return Ok(None);
    };
    let head = &b[..head_len];
    if memchr::memchr(b'\0', head).is_some() {
        return Err(Box::new(bad("NUL byte in the request head")));
    }
    // A CR must always be followed by LF (bare CR is a smuggling vector).
    for cr in memchr::memchr_iter(b'\r', head) {
        if head.get(cr + 1) != Some(&b'\n') {
            return Err(Box::new(bad("bare CR in the request head")));
        }
    }
    let request_line_len = memchr::memchr(b'\n', head).unwrap_or(0) + 1;
    if head_len - request_line_len > limits.header_bytes {
        return Err(headers_too_large());
    }

    let mut storage = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS + 1];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, head, &mut storage);
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(Box::new(bad("incomplete request head"))),
        Err(httparse::Error::TooManyHeaders) => return Err(too_many_headers()),
        Err(httparse::Error::Version) => {
            return Err(Box::new(Problem::edge(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "bad-version",
                "only HTTP/1.0, HTTP/1.1 and HTTP/2 are served",
            )))
        }
        Err(e) => return Err(Box::new(bad(&format!("malformed request head ({e})")))),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let http11 = req.version == Some(1);
    if target.len() > limits.uri_bytes {
        return Err(uri_too_long());
    }
    if method == "CONNECT" {
        return Err(Box::new(Problem::edge(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "CONNECT is not served: this is a reverse proxy",
        )));
    }
    let origin_form = target.starts_with('/');
    let absolute_form = target.len() > 8
        && (target[..7].eq_ignore_ascii_case("http://") || target[..8].eq_ignore_ascii_case("https://"));
    if !(origin_form || absolute_form || (target == "*" && method == "OPTIONS")) {
        return Err(Box::new(bad("the request target must be an absolute path")));
    }
    // RFC 9112 §3.2.2: an absolute-form target names the host; it must be a plain authority
    // (no userinfo) and agree with Host, so routing cannot read one while something else reads
    // the other.
    let target_authority = if absolute_form {
        let after = &target[target.find("://").map_or(0, |i| i + 3)..];
        let authority = &after[..after.find(['/', '?', '#']).unwrap_or(after.len())];
        if !valid_host(authority.as_bytes()) {
            return Err(Box::new(bad("invalid authority in the request target")));
        }
        Some(authority)
    } else {
        None
    };

    let mut content_length: Option<u64> = None;
    let mut cl_count = 0;
    let mut te_count = 0;
    let mut te_chunked = false;
    let mut host_count = 0;
    let mut host: &[u8] = b"";
    let mut upgrade = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.contains('_')
            && (underscore_spelling(name, "content-length") || underscore_spelling(name, "transfer-encoding"))
        {
            // CGI-style backends read `Transfer_Encoding` as `Transfer-Encoding`.
            return Err(Box::new(bad("a framing header name spelled with `_`")));
        }
        if name.eq_ignore_ascii_case("content-length") {
            cl_count += 1;
            content_length = Some(parse_content_length(h.value).ok_or_else(|| bad("invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_count += 1;
            te_chunked = trim_ows(h.value).eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("host") {
            host_count += 1;
            host = trim_ows(h.value);
            if !valid_host(host) {
                return Err(Box::new(bad("invalid Host header")));
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = true;
        }
    }
    if cl_count > 1 {
        return Err(Box::new(bad("more than one Content-Length header")));
    }
    if te_count > 0 {
        if !http11 {
            return Err(Box::new(bad("Transfer-Encoding in an HTTP/1.0 request")));
        }
        if content_length.is_some() {
            return Err(Box::new(bad("both Content-Length and Transfer-Encoding")));
        }
        if te_count > 1 || !te_chunked {
            return Err(Box::new(Problem::edge(
                StatusCode::NOT_IMPLEMENTED,
                "transfer-coding",
                "only a single `Transfer-Encoding: chunked` is accepted",
            )));
        }
    }
    if http11 && host_count != 1 {
        return Err(Box::new(bad("an HTTP/1.1 request needs exactly one Host header")));
    }
    if let Some(authority) = target_authority {
        if host_count > 0 && !authority.as_bytes().eq_ignore_ascii_case(host) {
            return Err(Box::new(bad("the request target's authority and Host differ")));
        }
    }
    if let Some(len) = content_length {
        if len > limits.body_bytes {
            return Err(Box::new(Problem::edge(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body exceeds edge.limits.body_bytes",
            )));
        }
    }
    let next = if te_count > 0 {
        State::Chunked(Chunk::Size)
    } else if let Some(len @ 1..) = content_length {
        State::Body(len)
    } else if upgrade && http11 {
        State::Passthrough
    } else {
        State::Head
    };
    Ok(Some((head_len, next)))
}

/// `name` is `canonical` with at least one `-` written as `_` (case-insensitive).
fn underscore_spelling(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|c| *c != b' ' && *c != b'\t').map_or(start, |p| p + 1);
    &v[start..end.max(start)]
}

/// RFC 9110 §8.6: `1*DIGIT`, nothing else (no sign, no list, no whitespace inside).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A Host is a reg-name or IP literal with an optional port; anything else (userinfo, spaces,
/// paths, backslashes) is refused before it can influence routing.
fn valid_host(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'[' | b']' | b'_'))
}

/// Validates chunked framing incrementally. Returns how many bytes were judged and the new state.
fn judge_chunk(b: &[u8], chunk: Chunk) -> Result<(usize, State), &'static str> {
    let mut at = 0usize;
    let mut chunk = chunk;
    loop {
        let rest = &b[at..];
        match chunk {
            Chunk::Size => {
                let Some(nl) = memchr::memchr(b'\n', rest) else {
                    if rest.len() > MAX_CHUNK_LINE {
                        return Err("chunk size line too long");
                    }
                    return Ok((at, State::Chunked(chunk)));
                };
                if nl == 0 || rest[nl - 1] != b'\r' {
                    return Err("bare LF in a chunk size line");
                }
                let line = &rest[..nl - 1];
                let hex_len = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
                if hex_len == 0 || hex_len > 15 {
                    return Err("invalid chunk size");
                }
                let ext = &line[hex_len..];
                if !ext.is_empty() && !valid_chunk_ext(ext) {
                    return Err("invalid chunk extension");
                }
                let size = std::str::from_utf8(&line[..hex_len])
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or("invalid chunk size")?;
                at += nl + 1;
                chunk = if size == 0 { Chunk::Trailers(0) } else { Chunk::Data(size) };
            }
            Chunk::Data(n) => {
                if rest.is_empty() {
                    return Ok((at, State::Chunked(chunk)));
                }
                let take = (rest.len() as u64).min(n);
                at += take as usize;
                chunk = if take == n { Chunk::DataEnd } else { Chunk::Data(n - take) };
            }
            Chunk::DataEnd => {
                if rest.len() < 2 {
                    if rest.first().is_some_and(|c| *c != b'\r') {
                        return Err("chunk data longer than its size");
                    }
                    return Ok((at, State::Chunked(chunk)));
                }
                if &rest[..2] != b"\r\n" {
                    return Err("chunk data longer than its size");
                }
                at += 2;
                chunk = Chunk::Size;
            }
            Chunk::Trailers(seen) => {
                let Some(nl) = memchr::memchr(b'\n', rest) else {
                    if seen + rest.len() > MAX_TRAILER_BYTES {
                        return Err("trailer section too large");
                    }
                    return Ok((at, State::Chunked(chunk)));
                };
                if nl == 0 || rest[nl - 1] != b'\r' {
                    return Err("bare LF in the trailer section");
                }
                let line = &rest[..nl - 1];
                at += nl + 1;
                if line.is_empty() {
                    return Ok((at, State::Head));
                }
                if memchr::memchr(b'\r', line).is_some() || memchr::memchr(b':', line).is_none() {
                    return Err("malformed trailer field");
                }
                let name = &line[..memchr::memchr(b':', line).unwrap_or(0)];
                if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding") {
                    return Err("framing header in the trailer section");
                }
                if seen + nl > MAX_TRAILER_BYTES {
                    return Err("trailer section too large");
                }
                chunk = Chunk::Trailers(seen + nl + 1);
            }
        }
    }
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )`, visible ASCII only.
fn valid_chunk_ext(ext: &[u8]) -> bool {
    let start = ext.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(ext.len());
    ext.get(start) == Some(&b';') && ext.iter().all(|c| (0x20..0x7f).contains(c) || *c == b'\t')
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for H1Guard<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = ready!(this.inner.poll_write(cx, data))?;
        this.core.wrote(&data[..n.min(data.len())]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let n = ready!(this.inner.poll_write_vectored(cx, bufs))?;
        let g = this.core;
        if g.state == State::UpgradeAwait {
            let mut left = n;
            for b in bufs {
                if left == 0 || g.state != State::UpgradeAwait {
                    break;
                }
                let take = left.min(b.len());
                g.wrote(&b[..take]);
                left -= take;
            }
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes after writing everything it buffered: the responses finished so far are
    /// then fully on their way, which an upgrade request waits for.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let finished = this.core.shared.in_flight.finished();
        ready!(this.inner.poll_flush(cx))?;
        let g = this.core;
        if finished > g.flushed {
            g.flushed = finished;
            if let Some(waker) = g.read_waker.take() {
                waker.wake();
            }
        }
        Poll::Ready(Ok(()))
    }

    /// hyper shuts the connection down once it saw our EOF; a queued rejection is written first.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let mut inner = this.inner;
        let g = this.core;
        if let Some(bytes) = g.reject.as_ref() {
            while g.reject_written < bytes.len() {
                let n = ready!(inner.as_mut().poll_write(cx, &bytes[g.reject_written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                g.reject_written += n;
            }
            ready!(inner.as_mut().poll_flush(cx))?;
        }
        inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GuardLimits {
        GuardLimits {
            header_bytes: 1024,
            headers: 10,
            uri_bytes: 64,
            body_bytes: 100,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        }
    }

    fn status(head: &str) -> Result<State, u16> {
        match judge_head(head.as_bytes(), &limits()) {
            Ok(Some((_, s))) => Ok(s),
            Ok(None) => Err(0),
            Err(p) => Err(p.status.as_u16()),
        }
    }

    #[test]
    fn framing_verdicts() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(State::Head));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(State::Body(5)));
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(State::Chunked(Chunk::Size))
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(400)
        );
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), Err(400));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), Err(400));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), Err(400));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"), Err(501));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), Err(501));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"), Err(400));
        assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), Err(400));
        assert_eq!(status(&format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100))), Err(414));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n"), Err(413));
        let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), Err(431));
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n"), Err(0));
        assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), Err(405));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"), Err(400));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\ncontent_length: 5\r\n\r\n"), Err(400));
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX_Other: 1\r\n\r\n"), Ok(State::Head));
        assert_eq!(status("GET http://a/x HTTP/1.1\r\nHost: A\r\n\r\n"), Ok(State::Head));
        assert_eq!(status("GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        assert_eq!(status("GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
        // An unfinished head is refused as soon as its fields exceed the limit.
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(1100))), Err(431));
        assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(900))), Err(0));
        assert_eq!(status(&format!("GET /{}", "a".repeat(200))), Err(414));
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
            Ok(State::Passthrough)
        );
    }

    #[test]
    fn chunk_verdicts() {
        let ok = |s: &str| judge_chunk(s.as_bytes(), Chunk::Size);
        assert_eq!(ok("5\r\nhello\r\n0\r\n\r\n"), Ok((15, State::Head)));
        assert_eq!(ok("5;name=v\r\nhello\r\n0\r\n\r\n").map(|r| r.1), Ok(State::Head));
        assert!(ok("5\nhello\r\n0\r\n\r\n").is_err());
        assert!(ok("0x5\r\nhello\r\n0\r\n\r\n").is_err());
        assert!(ok("-5\r\nhello\r\n").is_err());
        assert!(ok("10000000000000005\r\nhello\r\n").is_err());
        assert!(ok("5\r\nhelloXX\r\n").is_err());
        assert!(ok("5;\nx\r\nhello\r\n").is_err());
        assert!(ok("0\r\nContent-Length: 5\r\n\r\n").is_err());
        assert_eq!(ok("5\r\nhel"), Ok((6, State::Chunked(Chunk::Data(2)))));
    }
}
