//! Path normalisation before routing (RFC 3986 §6.2.2, reliability.md §2.4).
//!
//! The route, every policy decision and the forwarded request all use the path this returns,
//! so `/public/../private` cannot reach `/private` past a rule written for it. Encodings that
//! would change meaning after a backend decodes them (`%2F`, `%5C`, `%00`) and dot segments that
//! climb above the root are refused instead.

use std::borrow::Cow;

/// Normalises an origin-form path (no query). `Err` carries the reason for a 400.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    let b = path.as_bytes();
    if !b.starts_with(b"/") {
        return Err("the path must start with /");
    }
    let suspicious = b.iter().any(|c| matches!(c, b'%' | b'\\' | b';'))
        || memchr::memmem::find(b, b"//").is_some()
        || memchr::memmem::find(b, b"/.").is_some();
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Decode unreserved characters; keep other escapes upper-cased; refuse dangerous ones.
    // Bytes, not chars: a raw UTF-8 character is copied as it came.
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    // The escaped bytes of each run of escapes, to check that they form UTF-8.
    let mut escaped: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            return Err("backslash in the path");
        }
        if c == b';' {
            // Tomcat, Jetty and Spring drop `;params` from a segment (and read `..;` as `..`);
            // other servers keep them: a path a gateway and its backend would read differently.
            return Err("`;` in the path");
        }
        if c == b'%' {
            let v = hex_at(b, i + 1).ok_or("invalid percent-encoding in the path")?;
            match v {
                b'/' | b'\\' | 0 => return Err("encoded slash, backslash or NUL in the path"),
                // Encoded too: a server that decodes before it strips parameters reads `..%3B` as `..;`.
                b';' => return Err("`;` in the path"),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => decoded.push(v),
                v => {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    decoded.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 0xf)]]);
                    if v >= 0x80 {
                        escaped.push(v);
                    }
                }
            }
            i += 3;
            if v < 0x80 || b.get(i) != Some(&b'%') {
                // Overlong forms (`%c0%ae` for `.`) and other ill-formed UTF-8 are refused: some
                // decoders read them as the character they imitate.
                if std::str::from_utf8(&escaped).is_err() {
                    return Err("percent-encoded bytes in the path are not UTF-8");
                }
                escaped.clear();
            }
            continue;
        }
        decoded.push(c);
        i += 1;
    }
    if !escaped.is_empty() && std::str::from_utf8(&escaped).is_err() {
        return Err("percent-encoded bytes in the path are not UTF-8");
    }
    // `%252e`: a backend that decodes twice would see a dot (or a slash …). Judged on the
    // result, since decoding `%66` in `%252%66` is what makes `%252f`.
    if decoded.windows(5).any(|w| {
        w.starts_with(b"%25") && hex_at(w, 3).is_some_and(|v| matches!(v, b'.' | b'/' | b'\\' | b';' | b'%' | 0))
    }) {
        return Err("double percent-encoding in the path");
    }
    // Only ASCII was decoded and escapes were copied whole: still UTF-8.
    let decoded = String::from_utf8(decoded).map_err(|_| "the path is not UTF-8")?;
    // 2. Merge repeated slashes and resolve dot segments.
    let trailing_slash = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err("the path climbs above the root");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || trailing_slash {
        s.push('/');
    }
    Ok(Cow::Owned(s))
}

/// The byte that two hex digits at `at` encode.
fn hex_at(b: &[u8], at: usize) -> Option<u8> {
    let h = b.get(at..at + 2)?;
    let d = |c: u8| (c as char).to_digit(16);
    Some((d(h[0])? * 16 + d(h[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::normalize_path as n;

    #[test]
    fn normalises_and_refuses() {
        assert_eq!(n("/orders/1").as_deref(), Ok("/orders/1"));
        assert_eq!(n("/public/../private").as_deref(), Ok("/private"));
        assert_eq!(n("/public/%2e%2e/private").as_deref(), Ok("/private"));
        assert_eq!(n("/a//b/./c/").as_deref(), Ok("/a/b/c/"));
        assert_eq!(n("/%70rivate").as_deref(), Ok("/private"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/a%c3%a9").as_deref(), Ok("/a%C3%A9"));
        assert!(n("/a%2fb").is_err());
        assert!(n("/a%5cb").is_err());
        assert!(n("/a\\b").is_err());
        assert!(n("/a%00").is_err());
        assert!(n("/..").is_err());
        assert!(n("/a%zz").is_err());
        assert!(n("/a%2").is_err());
    }

    #[test]
    fn refuses_what_backends_read_differently() {
        // `;params`: `..;/` is `..` to Tomcat.
        assert!(n("/a/..;/b").is_err());
        assert!(n("/a;x=1").is_err());
        assert!(n("/a%3Bx").is_err());
        assert!(n("/a/..%3b/b").is_err());
        // Overlong UTF-8 dots and slashes, and other ill-formed escapes.
        assert!(n("/a/%c0%ae%c0%ae/b").is_err());
        assert!(n("/a/%e0%80%ae/b").is_err());
        assert!(n("/a/%c0%af").is_err());
        assert!(n("/a%e9").is_err());
        assert!(n("/a%c3").is_err());
        assert_eq!(n("/caf%C3%A9/%41").as_deref(), Ok("/caf%C3%A9/A"));
        assert_eq!(n("/%F0%9F%98%80//x").as_deref(), Ok("/%F0%9F%98%80/x"));
        // Double encoding of a dot, slash, backslash or NUL; a plain `%25` is fine.
        assert!(n("/a/%252e%252e/b").is_err());
        assert!(n("/a%252fb").is_err());
        assert!(n("/a%2500").is_err());
        assert!(n("/%252%66x").is_err());
        assert_eq!(n("/100%25/x").as_deref(), Ok("/100%25/x"));
        assert_eq!(n("/a%2541//b").as_deref(), Ok("/a%2541/b"));
        // Raw UTF-8 is copied as it came, not byte by byte as Latin-1.
        assert_eq!(n("/caf\u{e9}//x").as_deref(), Ok("/caf\u{e9}/x"));
    }
}
