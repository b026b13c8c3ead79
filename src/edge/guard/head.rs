//! The pure judges of the HTTP/1 guard: no IO, no state beyond their arguments.
//!
//! [`judge_head`] decides whether a buffered request head is complete and unambiguous (line
//! endings, limits, request target, the Content-Length / Transfer-Encoding / Host rules) and
//! which body framing follows it; [`judge_chunk`] follows chunked framing incrementally. The
//! `H1Guard` in the parent module feeds them bytes and acts on their verdicts.

use std::mem::MaybeUninit;

use http::StatusCode;

use super::{Chunk, GuardLimits, State, MAX_HEADERS};
use crate::respond::Problem;

const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

pub(super) fn leading_crlf(b: &[u8]) -> usize {
    let mut i = 0;
    while b.len() >= i + 2 && &b[i..i + 2] == b"\r\n" {
        i += 2;
    }
    i
}

pub(super) fn bad(detail: &str) -> Problem {
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

/// Where the parts of the last head judged complete are: byte ranges into that head (leading
/// empty lines excluded), so the gateway's HTTP/1 server builds its request without parsing
/// the head a second time.
#[derive(Debug, Default)]
pub struct HeadFields {
    pub method: (u32, u32),
    pub target: (u32, u32),
    pub http11: bool,
    /// `Connection` tokens: `close`, `keep-alive`.
    pub close: bool,
    pub keep_alive: bool,
    /// Name start, name end, value start, value end of each header field, in order.
    pub fields: Vec<[u32; 4]>,
}

impl HeadFields {
    /// Whether the client lets the connection stay open after this request (RFC 9112 §9.3):
    /// HTTP/1.1 unless it says `close`, HTTP/1.0 only if it says `keep-alive`.
    pub fn keeps_alive(&self) -> bool {
        !self.close && (self.http11 || self.keep_alive)
    }
}

/// The byte range of `part` inside `whole` (`part` borrows from `whole`).
fn range_in(whole: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize) as u32;
    (start, start + part.len() as u32)
}

/// Judges a complete head, or asks for more bytes. Returns the head length and the body state;
/// a complete head's parts are recorded in `out`.
pub(super) fn judge_head(
    b: &[u8],
    limits: &GuardLimits,
    out: &mut HeadFields,
) -> Result<Option<(usize, State)>, Box<Problem>> {
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
    // No NUL, and a CR always followed by LF (bare CR is a smuggling vector): one pass.
    for at in memchr::memchr2_iter(b'\0', b'\r', head) {
        if head[at] == b'\0' {
            return Err(Box::new(bad("NUL byte in the request head")));
        }
        if head.get(at + 1) != Some(&b'\n') {
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
    // Compared as bytes: the target may hold non-ASCII bytes, and a `str` slice at 7 or 8 could
    // fall inside a character (a panic on client input; found by the `h1_server` fuzz target).
    let starts = |scheme: &[u8]| target.as_bytes().get(..scheme.len()).is_some_and(|p| p.eq_ignore_ascii_case(scheme));
    let absolute_form = target.len() > 8 && (starts(b"http://") || starts(b"https://"));
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
    out.method = range_in(head, method.as_bytes());
    out.target = range_in(head, target.as_bytes());
    out.http11 = http11;
    out.close = false;
    out.keep_alive = false;
    out.fields.clear();
    for h in req.headers.iter() {
        let name = h.name;
        let (ns, ne) = range_in(head, name.as_bytes());
        let (vs, ve) = range_in(head, h.value);
        out.fields.push([ns, ne, vs, ve]);
        // Only four names matter here, and their lengths tell them apart before any comparison.
        match name.len() {
            14 if name.eq_ignore_ascii_case("content-length") => {
                cl_count += 1;
                content_length =
                    Some(crate::framing::content_length(h.value).ok_or_else(|| bad("invalid Content-Length"))?);
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                te_count += 1;
                te_chunked = trim_ows(h.value).eq_ignore_ascii_case(b"chunked");
            }
            // Not the name itself (above) but the name with `_` for `-`: CGI-style backends read
            // `Transfer_Encoding` as `Transfer-Encoding`.
            14 | 17
                if underscore_spelling(name, "content-length") || underscore_spelling(name, "transfer-encoding") =>
            {
                return Err(Box::new(bad("a framing header name spelled with `_`")));
            }
            4 if name.eq_ignore_ascii_case("host") => {
                host_count += 1;
                host = trim_ows(h.value);
                if !valid_host(host) {
                    return Err(Box::new(bad("invalid Host header")));
                }
            }
            7 if name.eq_ignore_ascii_case("upgrade") => upgrade = true,
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in h.value.split(|c| *c == b',') {
                    let token = token.trim_ascii();
                    out.close |= token.eq_ignore_ascii_case(b"close");
                    out.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            _ => {}
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

/// A Host is a reg-name or IP literal with an optional port; anything else (userinfo, spaces,
/// paths, backslashes) is refused before it can influence routing.
fn valid_host(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 255
        && v.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b':' | b'[' | b']' | b'_'))
}

/// Validates chunked framing incrementally. Returns how many bytes were judged and the new state.
pub(super) fn judge_chunk(b: &[u8], chunk: Chunk) -> Result<(usize, State), &'static str> {
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
