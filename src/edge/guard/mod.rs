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
//! Invariant: neither the own HTTP/1 server (`listener::h1`, which takes a judged head whole with
//! the positions of its parts, `take_plain_head`) nor hyper sees a head byte the guard has not
//! validated, so an ambiguous request never reaches routing, policies or a backend. HTTP/2 (prior knowledge or ALPN) is passed
//! through untouched: h2 framing has no such ambiguity and hyper's h2 limits apply.
//!
//! Order on the wire is kept: a refused head that follows requests still being answered waits
//! (EOF is withheld from hyper) until their responses are complete, so the client gets every
//! earlier answer and then ours. An upgrade request is held until earlier responses are written,
//! and the bytes after it stay guarded until its own answer shows `101`: a refused upgrade
//! leaves the connection in HTTP/1 with the guard still in front (Pingora CVE-2026-2833). A body
//! that turns out malformed after hyper has its head ends hyper's read with EOF instead: hyper
//! and the proxy answer that request themselves, so the guard adds no second response.

mod head;
mod inflight;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::respond::Problem;

pub use head::HeadFields;
use head::{bad, judge_chunk, judge_head, leading_crlf};
pub use inflight::InFlight;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Hard cap on the header array handed to httparse; `edge.limits.headers` may not exceed it.
pub const MAX_HEADERS: usize = 256;
const READ_CHUNK: usize = 8 * 1024;
/// A keep-alive connection idle this long is parked (`H1Guard::set_parking`). Parking and
/// resuming cost a new hyper connection (about 3,500 instructions, 7 % of a small proxied
/// request), so a client sending requests back to back keeps its hyper connection; one that
/// pauses longer gives back hyper's buffers. The shorter this is, the fewer connections hold
/// them at once while clients arrive, and freed heap stays resident: 10,000 idle connections
/// opened 32 at a time cost 2.3 KiB each when parked at once, 3–5.5 KiB at 250 ms, 10 KiB at
/// 1 s.
const PARK_AFTER: Duration = Duration::from_millis(250);
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
    /// A request body must start arriving within this, and keeps `1 s` more for every
    /// `body_min_rate` bytes received (Apache `RequestReadTimeout body=20,MinRate=500`).
    pub body_timeout: Duration,
    /// Bytes per second; 0 makes `body_timeout` a deadline for the whole body.
    pub body_min_rate: u64,
}

/// State shared between the guard and the requests served on its connection.
#[derive(Default)]
pub struct ConnShared {
    /// Requests whose response has not finished; the idle timeout never closes a busy connection.
    pub in_flight: InFlight,
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
    // True once a head has started arriving; the deadline is then the header deadline (408)
    // as soon as `header_armed`, which waits until the head is found incomplete: a head that
    // arrives whole (the usual case) costs no timer change.
    head_started: bool,
    header_armed: bool,
    // While a body is expected, `sleep` is set to this (see `arm_body`).
    body_deadline: Instant,
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
    // The parts of the last head judged, and the empty lines before it.
    fields: HeadFields,
    skip: usize,
    // Whether an idle keep-alive connection may be parked (see `H1Guard::set_parking`).
    parking: bool,
    // No hyper connection reads: hyper was given EOF to end its connection while the client is
    // idle (or none was started yet); `poll_wake` waits instead.
    parked: bool,
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
                header_armed: false,
                body_deadline: deadline,
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
                fields: HeadFields::default(),
                skip: 0,
                parking: false,
                parked: false,
            },
        }
    }

    /// Lets the guard park an idle keep-alive connection: once every request hyper was given
    /// is answered and flushed and the client has sent nothing for `PARK_AFTER`, the guard
    /// answers hyper's read with EOF so that hyper's connection ends (with its read and write
    /// buffers, 16 KiB or more) instead of waiting. The
    /// listener then takes the guard back, waits in `poll_wake` and starts a new hyper
    /// connection when the client sends again. hyper's own shutdown is not passed on while
    /// parked, so the socket stays open.
    ///
    /// A guard with parking on starts parked: a new connection holds no hyper connection
    /// either until `poll_wake` reports its first request.
    pub fn set_parking(&mut self, on: bool) {
        self.core.parking = on;
        self.core.parked = on;
    }

    /// True once the guard has ended hyper's connection to park it (see `set_parking`).
    pub fn is_parked(&self) -> bool {
        self.core.parked
    }

    /// The stream the guard reads from, e.g. to inspect TLS state.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// What a connection without a hyper connection should do next (see `H1Guard::poll_wake`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A validated HTTP/1 head (or the end of the stream with an answer pending) is ready.
    Http1,
    /// HTTP/2: the client's preface (or TLS ALPN) chose it; the bytes pass through untouched.
    Http2,
    /// Nothing more for hyper: the client closed, went idle past the timeout, or its next head
    /// was refused. Shutting the guard down writes the refusal, if any, and closes.
    Close,
    /// The connection went idle and was parked (its read buffer freed): the caller frees what it
    /// holds for the connection too, and waits again.
    Park,
}

impl<S: AsyncRead + AsyncWrite + Unpin> H1Guard<S> {
    /// Waits, holding no read buffer, until the client sends something hyper should see, and
    /// says which protocol serves it. Used for a new connection and for a parked one; the
    /// header and idle timeouts apply as when hyper is reading.
    pub fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Wake>> {
        loop {
            if let Some(wake) = self.core.woken() {
                self.core.parked = false;
                return Poll::Ready(Ok(wake));
            }
            let was_parked = self.core.parked;
            // A read into no space: the guard reads and judges into its own buffer, and returns
            // as soon as it has bytes ready (or an end) without handing any over.
            let mut none = ReadBuf::new(&mut []);
            ready!(Pin::new(&mut *self).poll_read(cx, &mut none))?;
            if self.core.parked && !was_parked {
                return Poll::Ready(Ok(Wake::Park));
            }
        }
    }

    /// After `poll_wake` reported `Http1`: the judged head, if it is a whole request by itself
    /// (no body follows, no upgrade), taken out of the guard's buffer, with where its parts are.
    /// `None` leaves the bytes for hyper.
    pub fn take_plain_head(&mut self) -> Option<(Bytes, &HeadFields)> {
        let g = &mut self.core;
        if g.state != State::Head || g.ready == 0 || g.reject.is_some() {
            return None;
        }
        g.buf.advance(g.skip);
        let head = g.buf.split_to(g.ready - g.skip).freeze();
        g.ready = 0;
        g.skip = 0;
        Some((head, &g.fields))
    }

    /// Refuses a head taken with `take_plain_head` that the server could not turn into a
    /// request: the refusal is logged now and written when the guard shuts down.
    pub fn refuse(&mut self, problem: Problem) {
        self.core.refuse_head(problem);
        self.core.reject_after = 0;
    }

    /// While a request taken with `take_plain_head` is being answered: reads ahead to notice the
    /// client going away, as hyper does. `Ready(true)`: the client closed (or the connection
    /// failed), so the answer is owed to no one. `Ready(false)`: more bytes were judged (a
    /// pipelined request, or a refusal) and wait their turn; stop watching. A refusal's EOF and
    /// the idle timeout wait until the request being answered has finished.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.core.ready > 0 || self.core.state != State::Head {
            return Poll::Ready(false);
        }
        let mut none = ReadBuf::new(&mut []);
        match Pin::new(&mut *self).poll_read(cx, &mut none) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(true),
            Poll::Ready(Ok(())) => Poll::Ready(self.core.eof && self.core.ready == 0 && self.core.state == State::Head),
        }
    }
}

/// What a connection waiting for its next request does when its deadline passes.
enum Between {
    /// Not idle long enough (or a response is still streaming): the deadline was moved.
    Wait,
    /// Idle past `PARK_AFTER`: end hyper's connection (see `H1Guard::set_parking`).
    Park,
    /// Idle past `edge.limits.idle_timeout`: close quietly.
    Close,
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
                    if inner.as_mut().poll_read(cx, out)?.is_pending() {
                        if g.body_too_slow(cx) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    let got = (out.filled().len() - before) as u64;
                    if got == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    g.body_received(got);
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
                Poll::Ready(Ok(n)) => {
                    if matches!(g.state, State::Body(_) | State::Chunked(_)) {
                        g.body_received(n as u64);
                    }
                    if g.state == State::Head && !g.head_started {
                        g.head_started = true;
                        g.header_armed = false;
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if g.state != State::Head {
                        if g.body_too_slow(cx) {
                            continue;
                        }
                        return Poll::Pending;
                    }
                    let busy = g.parking && !g.parked && g.released > 1;
                    if g.buf.is_empty() && g.buf.capacity() > 0 && !busy {
                        // An idle keep-alive connection holds no read buffer (10,000 idle
                        // connections would otherwise pin 160 MiB). A busy one — it already
                        // carried more than one request, and may be parked — keeps it until it
                        // parks, reusing one buffer for all its requests instead of allocating
                        // 8 KiB for each. Not after a first request: clients that open many
                        // connections for one request each would otherwise hold a buffer per
                        // connection until the connections park.
                        g.buf = BytesMut::new();
                    }
                    if g.head_started && !g.header_armed {
                        // The head is incomplete and the socket has no more for now: from here
                        // the rest of it has `header_timeout`.
                        g.header_armed = true;
                        let deadline = Instant::now() + g.limits.header_timeout;
                        g.sleep.as_mut().reset(deadline);
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
                    match g.between_requests() {
                        Between::Wait => continue,
                        Between::Park => {
                            // EOF for hyper, which owes nothing: its connection ends and the
                            // listener waits for the next request without it, and without a
                            // read buffer.
                            g.parked = true;
                            g.buf = BytesMut::new();
                            g.fields = HeadFields::default();
                            return Poll::Ready(Ok(()));
                        }
                        Between::Close => {}
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
    /// What `poll_wake` reports in the current state, or `None` to keep waiting.
    fn woken(&self) -> Option<Wake> {
        match self.state {
            State::Passthrough if self.released == 0 => Some(Wake::Http2),
            State::Rejected => Some(Wake::Close),
            State::Head if self.ready == 0 => self.eof.then_some(Wake::Close),
            _ => Some(Wake::Http1),
        }
    }

    /// A request body starts: it must arrive within `body_timeout`, extended as bytes come in.
    fn arm_body(&mut self) {
        let deadline = Instant::now() + self.limits.body_timeout;
        self.body_deadline = deadline;
        self.sleep.as_mut().reset(deadline);
    }

    fn body_received(&mut self, n: u64) {
        if self.limits.body_min_rate == 0 || n == 0 {
            return;
        }
        // 1 s more per `body_min_rate` bytes, in microseconds to keep small reads counting.
        let extra = Duration::from_micros(n.saturating_mul(1_000_000) / self.limits.body_min_rate);
        self.body_deadline += extra;
        self.sleep.as_mut().reset(self.body_deadline);
    }

    /// The socket has nothing while a body is expected: true (and the body refused) once its
    /// deadline has passed. Only a body being read counts — a request whose body nobody asks
    /// for is never polled here.
    fn body_too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        if !matches!(self.state, State::Body(_) | State::Chunked(_)) {
            return false;
        }
        if std::future::Future::poll(self.sleep.as_mut(), cx).is_pending() {
            return false;
        }
        self.refuse_body("the request body did not arrive within edge.limits.body_timeout at body_min_rate");
        true
    }

    fn arm_idle(&mut self) {
        self.head_started = false;
        self.header_armed = false;
        let deadline = Instant::now() + self.idle_check();
        self.sleep.as_mut().reset(deadline);
    }

    /// How long to wait before looking again at a connection between requests: the idle
    /// timeout, or sooner when it may be parked.
    fn idle_check(&self) -> Duration {
        if self.parking {
            self.limits.idle_timeout.min(PARK_AFTER)
        } else {
            self.limits.idle_timeout
        }
    }

    /// The deadline passed with no head started: still busy, parked, or idle for too long.
    fn between_requests(&mut self) -> Between {
        let now = Instant::now();
        if self.shared.in_flight.load(Ordering::Acquire) > 0 {
            // A response is still streaming on this connection: not idle.
            let deadline = now + self.idle_check();
            self.sleep.as_mut().reset(deadline);
            return Between::Wait;
        }
        // Idle counts from the end of the last response.
        let last = self.shared.in_flight.last_finish();
        let Some(idle_at) = last.map(|t| t + self.limits.idle_timeout).filter(|d| *d > now) else {
            return Between::Close;
        };
        let mut next = idle_at;
        if self.parking && !self.parked && self.buf.is_empty() {
            // Every request hyper was given must be answered and flushed: it then owes nothing.
            let park_at = match last {
                Some(t) if self.quiet() => t + PARK_AFTER,
                _ => now + PARK_AFTER,
            };
            if park_at <= now {
                return Between::Park;
            }
            next = next.min(park_at);
        }
        self.sleep.as_mut().reset(next);
        Between::Wait
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
        match judge_head(&pending[skip..], &self.limits, &mut self.fields) {
            Ok(None) => Step::More,
            Ok(Some((head_len, State::Passthrough))) => {
                // An upgrade: handed to hyper only once the connection is quiet (see `UpgradeHold`).
                self.first_request = false;
                self.state = State::UpgradeHold(skip + head_len);
                Step::Progress
            }
            Ok(Some((head_len, next))) => {
                self.first_request = false;
                self.skip = skip;
                self.ready += skip + head_len;
                self.released += 1;
                self.state = next;
                if next == State::Head {
                    self.arm_idle();
                } else {
                    self.arm_body();
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
        if g.parked {
            // hyper's connection ends because the guard parked it; the socket stays open.
            return Poll::Ready(Ok(()));
        }
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
