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
    let suspicious = b.iter().any(|c| matches!(c, b'%' | b'\\'))
        || memchr::memmem::find(b, b"//").is_some()
        || memchr::memmem::find(b, b"/.").is_some();
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    // 1. Decode unreserved characters; keep other escapes upper-cased; refuse dangerous ones.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            return Err("backslash in the path");
        }
        if c == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("truncated percent-encoding in the path")?;
            let v = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid percent-encoding in the path")?;
            match v {
                b'/' | b'\\' | 0 => return Err("encoded slash, backslash or NUL in the path"),
                v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => decoded.push(v as char),
                v => {
                    decoded.push('%');
                    decoded.push_str(&format!("{v:02X}"));
                }
            }
            i += 3;
            continue;
        }
        decoded.push(c as char);
        i += 1;
    }
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
}
