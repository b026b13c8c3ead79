//! The backend's response head: parsed once complete (interim 1xx heads skipped, within the head
//! limit), its framing fields judged (RFC 9112 §6.3), its hop-by-hop fields left out, and its
//! other fields put in the request's header map, emptied.

use std::mem::MaybeUninit;

use bytes::Buf;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

use super::{Chunk, Conn, Decode, Error, MAX_HEADERS, MAX_HEAD_BYTES};

/// Field names as the server spelled them in its last response, by position, with the parsed
/// name and whether it is hop-by-hop. A server sends the same fields in the same order response
/// after response, so a name is mostly recognised by one comparison of its bytes instead of
/// parsed again (about 120 instructions a field, callgrind).
#[derive(Default)]
pub(super) struct NameCache(Vec<(Box<[u8]>, HeaderName, bool)>);

/// Positions remembered; a head with more fields parses the rest as usual.
const NAME_CACHE_LEN: usize = 32;

impl NameCache {
    /// The name at position `i` spelled `raw`, and whether it is hop-by-hop.
    fn name(&mut self, i: usize, raw: &[u8]) -> Result<(HeaderName, bool), Error> {
        if let Some((seen, name, hop)) = self.0.get(i) {
            if **seen == *raw {
                return Ok((name.clone(), *hop));
            }
        }
        let name = HeaderName::from_bytes(raw).map_err(|_| Error::Invalid("invalid header name"))?;
        let hop = crate::hop::hop_by_hop_bit(&name) != 0;
        let entry = (Box::from(raw), name.clone(), hop);
        if let Some(slot) = self.0.get_mut(i) {
            *slot = entry;
        } else if i == self.0.len() && i < NAME_CACHE_LEN {
            self.0.push(entry);
        }
        Ok((name, hop))
    }
}

impl Conn {
    /// A complete final response head at the start of the buffer, taken off it; `None` while
    /// it is incomplete.
    ///
    /// The request (`parts`) has been answered once a head is complete, so its header map,
    /// emptied, holds the response's fields: one map serves both, and no map is allocated or
    /// freed per exchange.
    pub(super) fn parse_head(
        &mut self,
        parts: &mut http::request::Parts,
        interim: &mut usize,
    ) -> Result<Option<Head>, Error> {
        let method = &parts.method;
        loop {
            let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
            let mut parsed = httparse::Response::new(&mut []);
            let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut parsed,
                &self.read,
                &mut slots,
            ) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("more than 100 header fields")),
                Err(_) => return Err(Error::Invalid("malformed response head")),
            };
            let code = parsed.code.unwrap_or(0);
            let version = if parsed.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
            if (100..200).contains(&code) {
                if code == 101 {
                    return Err(Error::Invalid("101 Switching Protocols to a request that asked for no upgrade"));
                }
                // Interim heads count toward the head limit too, so they cannot come forever.
                *interim += len;
                if *interim > MAX_HEAD_BYTES {
                    return Err(Error::Invalid("interim (1xx) responses beyond the head limit"));
                }
                self.read.advance(len);
                continue;
            }
            let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("invalid status code"))?;
            let mut frame = ResponseFraming::default();
            let base = self.read.as_ptr() as usize;
            self.fields.clear();
            for (i, h) in parsed.headers.iter().enumerate() {
                let (name, hop) = self.names.name(i, h.name.as_bytes())?;
                frame.note(&name, h.value);
                // Hop-by-hop fields are this connection's, never the client's: left out here so
                // the proxy's own pass finds none (a `Connection` naming other fields stays for it).
                if hop && (name != header::CONNECTION || !crate::hop::connection_nominates(h.value)) {
                    continue;
                }
                let start = h.value.as_ptr() as usize - base;
                self.fields.push((name, start, start + h.value.len()));
            }
            let head = self.read.split_to(len).freeze();
            // Should the head still turn out invalid below, the request has lost its fields;
            // it is never sent again then (a response came: `Upload::got_any`).
            let mut headers = std::mem::take(&mut parts.headers);
            headers.clear();
            headers.reserve(self.fields.len());
            for (name, start, end) in self.fields.drain(..) {
                let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                    .map_err(|_| Error::Invalid("invalid header value"))?;
                headers.append(name, value);
            }
            let mut reusable = version == Version::HTTP_11 && !frame.close;
            let no_body =
                *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
            let decode = if no_body {
                // No body to read, but framing this confused says the connection cannot be trusted.
                if frame.chunked.is_some() || frame.length_invalid {
                    reusable = false;
                }
                Decode::Length(0)
            } else if let Some(chunked) = frame.chunked {
                if frame.length.is_some() || frame.length_invalid {
                    // Both framings: the length is a lie told to someone; never reuse this one.
                    headers.remove(header::CONTENT_LENGTH);
                    reusable = false;
                }
                if chunked {
                    Decode::Chunked(Chunk::Size)
                } else {
                    reusable = false;
                    Decode::Close
                }
            } else if frame.length_invalid {
                return Err(Error::Invalid("invalid or conflicting Content-Length"));
            } else if let Some(n) = frame.length {
                Decode::Length(n)
            } else {
                reusable = false;
                Decode::Close
            };
            return Ok(Some(Head { status, version, headers, decode, reusable }));
        }
    }
}

/// What the response head says about framing and the connection.
#[derive(Default)]
struct ResponseFraming {
    /// `Transfer-Encoding` present: whether its final coding is chunked.
    chunked: Option<bool>,
    length: Option<u64>,
    length_invalid: bool,
    close: bool,
}

impl ResponseFraming {
    fn note(&mut self, name: &HeaderName, value: &[u8]) {
        if *name == header::CONTENT_LENGTH {
            for v in value.split(|&c| c == b',') {
                match (crate::framing::content_length(v), self.length) {
                    (Some(n), None) => self.length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => self.length_invalid = true,
                }
            }
        } else if *name == header::TRANSFER_ENCODING {
            for coding in value.split(|&c| c == b',') {
                let coding = coding.trim_ascii();
                if !coding.is_empty() {
                    self.chunked = Some(coding.eq_ignore_ascii_case(b"chunked"));
                }
            }
            self.chunked.get_or_insert(false);
        } else if *name == header::CONNECTION {
            self.close |= value.split(|&c| c == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
}

/// A parsed final response head.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    pub(super) decode: Decode,
    pub(super) reusable: bool,
}
