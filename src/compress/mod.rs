//! Response compression (`edge.compression`, `apis.NAME.compression`): nginx's `gzip`/`brotli`
//! and Apache's mod_deflate/mod_brotli for every response the gateway sends, the backend's and
//! its own.
//!
//! The proxy reads what the client accepts ([`Accept::of`]) before the request is consumed,
//! and only when some compression is configured; once the response is final, [`apply`] decides
//! from the response's head whether it is compressed, rewrites that head and wraps the body in
//! an encoder ([`encode`]). `config` holds the YAML form and the compiled [`Table`].

pub mod config;
pub mod encode;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body::Body as _;

pub use config::{Coding, Spec, Table};

use crate::body::ResponseBody;

/// What a request accepts, taken before the request is consumed. Quality values are in
/// thousandths (`q=0.5` → 500); a coding the client did not name has the quality of `*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    br: u16,
    gzip: u16,
    /// Only when the client named `identity` itself.
    identity: Option<u16>,
    /// HEAD and upgrade requests are never touched.
    skip: bool,
}

impl Accept {
    /// Reads `Accept-Encoding` of a request (every field line; without one, nothing is accepted
    /// but identity).
    pub fn of(method: &Method, headers: &HeaderMap) -> Accept {
        let skip = *method == Method::HEAD || headers.contains_key(header::UPGRADE);
        let mut a = Accept::parse(headers.get_all(header::ACCEPT_ENCODING).iter().map(HeaderValue::as_bytes));
        a.skip = skip;
        a
    }

    fn parse<'a>(values: impl Iterator<Item = &'a [u8]>) -> Accept {
        let (mut br, mut gzip, mut identity, mut star) = (None, None, None, None);
        for value in values {
            for item in value.split(|c| *c == b',') {
                let mut parts = item.split(|c| *c == b';');
                let coding = trim(parts.next().unwrap_or_default());
                let mut q = Some(1000);
                for param in parts {
                    let param = trim(param);
                    if let Some(v) = param.strip_prefix(b"q=").or_else(|| param.strip_prefix(b"Q=")) {
                        q = qvalue(trim(v));
                    }
                }
                // An item with a malformed weight is ignored (RFC 9110 §12.4.2 grammar).
                let Some(q) = q else { continue };
                let slot = if coding.eq_ignore_ascii_case(b"br") {
                    &mut br
                } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                    &mut gzip
                } else if coding.eq_ignore_ascii_case(b"identity") {
                    &mut identity
                } else if coding == b"*" {
                    &mut star
                } else {
                    continue;
                };
                // Named twice: the more favourable weight counts.
                *slot = Some(slot.map_or(q, |old: u16| old.max(q)));
            }
        }
        let star = star.unwrap_or(0);
        Accept { br: br.unwrap_or(star), gzip: gzip.unwrap_or(star), identity, skip: false }
    }

    fn quality(&self, c: Coding) -> u16 {
        match c {
            Coding::Br => self.br,
            Coding::Gzip => self.gzip,
        }
    }

    /// The coding to use: among the configured ones the client accepts with its highest
    /// quality, the first in the server's order; none when the client prefers identity.
    pub fn choose(&self, codings: &[Coding]) -> Option<Coding> {
        let best = codings.iter().map(|c| self.quality(*c)).max().unwrap_or(0);
        if best == 0 || self.identity.is_some_and(|i| i > best) {
            return None;
        }
        codings.iter().copied().find(|c| self.quality(*c) == best)
    }
}

/// `0`, `0.5`, `1`, `1.000` → thousandths; anything else is malformed.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|c| *c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |p| p + 1);
    &v[s..e.max(s)]
}

/// Whether a response may be compressed under `spec`, whoever asked: a representation that
/// varies with Accept-Encoding says so even to clients that get it unencoded.
fn eligible(spec: &Spec, status: StatusCode, headers: &HeaderMap, known_len: Option<u64>) -> bool {
    if status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT)
        || headers.contains_key(header::CONTENT_ENCODING)
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return false;
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim());
    match media_type {
        Some(t) if spec.types.iter().any(|p| p.matches(t)) => {}
        _ => return false,
    }
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| v.as_bytes().split(|c| *c == b',').any(|d| trim(d).eq_ignore_ascii_case(b"no-transform")));
    !no_transform && known_len.is_none_or(|n| n >= spec.min_size)
}

/// Compresses `resp` for the client when the settings in force for `api` and the response
/// allow it: sets Content-Encoding, drops Content-Length (the body streams), adds
/// `Accept-Encoding` to Vary and weakens a strong ETag (the bytes differ from the identity
/// representation's). Called once per response, after every other stage has set its headers.
pub fn apply(table: &Table, api: Option<&str>, accept: Accept, resp: &mut Response<ResponseBody>) {
    if accept.skip {
        return;
    }
    let Some(spec) = table.for_api(api) else { return };
    let known_len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or_else(|| resp.body().size_hint().exact());
    if !eligible(spec, resp.status(), resp.headers(), known_len) {
        return;
    }
    let headers = resp.headers_mut();
    add_vary(headers);
    let Some(coding) = accept.choose(&spec.codings) else { return };
    headers.remove(header::CONTENT_LENGTH);
    // Byte ranges of the identity representation would not address the encoded one.
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding.as_str()));
    if let Some(etag) = headers.get(header::ETAG) {
        if etag.as_bytes().starts_with(b"\"") {
            let weak = [b"W/", etag.as_bytes()].concat();
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                headers.insert(header::ETAG, v);
            }
        }
    }
    let body = std::mem::replace(resp.body_mut(), ResponseBody::empty());
    *resp.body_mut() = body.encoded(encode::Encoder::new(coding, spec));
}

/// Adds `Accept-Encoding` to Vary, keeping what is there (`*` already covers it); several
/// field lines become one.
fn add_vary(headers: &mut HeaderMap) {
    let mut lines = 0;
    for v in headers.get_all(header::VARY) {
        lines += 1;
        let covered = v
            .as_bytes()
            .split(|c| *c == b',')
            .map(trim)
            .any(|t| t == b"*" || t.eq_ignore_ascii_case(b"accept-encoding"));
        if covered {
            return;
        }
    }
    if lines == 0 {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::VARY) {
        let v = trim(v.as_bytes());
        if !v.is_empty() {
            joined.extend_from_slice(v);
            joined.extend_from_slice(b", ");
        }
    }
    joined.extend_from_slice(b"Accept-Encoding");
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::VARY, v);
    }
}

#[cfg(test)]
mod tests;
