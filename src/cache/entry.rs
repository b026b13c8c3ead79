//! A stored response as bytes, the same in memory and in Redis: binary-safe (any header value,
//! any body), versioned, and read back without copying the body.
//!
//! Layout (big-endian): `GHC1`, stored-at and expires-at (Unix ms, u64 each), status (u16),
//! flags (u8), the request's values of the response's `Vary` fields (count u16; per field its
//! name, then u8 present and the value), the headers (count u16; per header name and value),
//! then the body to the end. Names are u16-length-prefixed, values u32-length-prefixed.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

const MAGIC: &[u8; 4] = b"GHC1";
/// The response may be served to requests with `Authorization` (RFC 9111 §3.5).
const FLAG_SHARED: u8 = 1;

/// A stored response.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    pub status: u16,
    pub shared_with_authorized: bool,
    /// The storing request's values of the fields the response's `Vary` named (lower-case
    /// names; `None`: absent). A later request must carry the same to be served.
    pub vary: Vec<(String, Option<Bytes>)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A request's value of `name`: all field lines joined with `, ` (`None` when absent).
pub fn request_value(headers: &HeaderMap, name: &str) -> Option<Bytes> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    let mut out = BytesMut::from(first.as_bytes());
    for v in all {
        out.put_slice(b", ");
        out.put_slice(v.as_bytes());
    }
    Some(out.freeze())
}

impl Entry {
    /// Whether `request` carries the same values of the `Vary` fields as the storing request.
    pub fn vary_matches(&self, request: &HeaderMap) -> bool {
        self.vary.iter().all(|(name, v)| request_value(request, name) == *v)
    }

    pub fn encode(&self) -> Bytes {
        let head: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 6).sum();
        let mut b = BytesMut::with_capacity(32 + head + self.body.len());
        b.put_slice(MAGIC);
        b.put_u64(self.stored_at_ms);
        b.put_u64(self.expires_at_ms);
        b.put_u16(self.status);
        b.put_u8(if self.shared_with_authorized { FLAG_SHARED } else { 0 });
        b.put_u16(u16::try_from(self.vary.len()).unwrap_or(u16::MAX));
        for (name, value) in self.vary.iter().take(usize::from(u16::MAX)) {
            put_name(&mut b, name.as_bytes());
            match value {
                Some(v) => {
                    b.put_u8(1);
                    put_value(&mut b, v);
                }
                None => b.put_u8(0),
            }
        }
        b.put_u16(u16::try_from(self.headers.len()).unwrap_or(u16::MAX));
        for (name, value) in self.headers.iter().take(usize::from(u16::MAX)) {
            put_name(&mut b, name.as_str().as_bytes());
            put_value(&mut b, value.as_bytes());
        }
        b.put_slice(&self.body);
        b.freeze()
    }

    /// `None` for anything that is not a whole entry of this version.
    pub fn decode(data: &Bytes) -> Option<Entry> {
        let mut r = Reader { data, at: 0 };
        if r.take(4)? != MAGIC {
            return None;
        }
        let stored_at_ms = r.u64()?;
        let expires_at_ms = r.u64()?;
        let status = r.u16()?;
        let flags = r.take(1)?[0];
        let mut vary = Vec::new();
        for _ in 0..r.u16()? {
            let name = std::str::from_utf8(r.name()?).ok()?.to_owned();
            let value = match r.take(1)?[0] {
                0 => None,
                _ => Some(r.value()?),
            };
            vary.push((name, value));
        }
        let count = r.u16()?;
        let mut headers = HeaderMap::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = HeaderName::from_bytes(r.name()?).ok()?;
            let value = HeaderValue::from_maybe_shared(r.value()?).ok()?;
            headers.append(name, value);
        }
        let body = data.slice(r.at..);
        Some(Entry {
            stored_at_ms,
            expires_at_ms,
            status,
            shared_with_authorized: flags & FLAG_SHARED != 0,
            vary,
            headers,
            body,
        })
    }
}

fn put_name(b: &mut BytesMut, name: &[u8]) {
    let n = &name[..name.len().min(usize::from(u16::MAX))];
    b.put_u16(n.len() as u16);
    b.put_slice(n);
}

fn put_value(b: &mut BytesMut, value: &[u8]) {
    let v = &value[..value.len().min(u32::MAX as usize)];
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

struct Reader<'a> {
    data: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.data.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn name(&mut self) -> Option<&[u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }

    fn value(&mut self) -> Option<Bytes> {
        let n = usize::try_from(u32::from_be_bytes(self.take(4)?.try_into().ok()?)).ok()?;
        let start = self.at;
        self.take(n)?;
        Some(self.data.slice(start..start + n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.append("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        headers.append("x-bin", HeaderValue::from_bytes(b"\xff\x80 opaque").expect("obs-text"));
        Entry {
            stored_at_ms: 1_700_000_000_123,
            expires_at_ms: 1_700_000_060_123,
            status: 203,
            shared_with_authorized: true,
            vary: vec![("accept-language".into(), Some(Bytes::from_static(b"de, en"))), ("x-absent".into(), None)],
            headers,
            body: Bytes::from_static(b"\x00\x01binary body\xff"),
        }
    }

    #[test]
    fn round_trips_binary_headers_and_bodies() {
        let e = sample();
        let data = e.encode();
        assert_eq!(Entry::decode(&data), Some(e));
    }

    #[test]
    fn truncated_or_foreign_data_is_no_entry() {
        let data = sample().encode();
        // Cut inside the head: not an entry (cut inside the body is a shorter body, by design
        // unreachable: entries are written whole).
        for cut in [0, 3, 10, 25, 40] {
            assert_eq!(Entry::decode(&data.slice(..cut)), None, "cut at {cut}");
        }
        assert_eq!(Entry::decode(&Bytes::from_static(b"GHC2xxxxxxxxxxxxxxxxxxxxxxxx")), None);
    }

    #[test]
    fn vary_values_must_match() {
        let e = sample();
        let mut req = HeaderMap::new();
        req.append("accept-language", HeaderValue::from_static("de"));
        req.append("accept-language", HeaderValue::from_static("en"));
        assert!(e.vary_matches(&req));
        req.insert("x-absent", HeaderValue::from_static("now present"));
        assert!(!e.vary_matches(&req));
    }
}
