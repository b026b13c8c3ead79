//! Path normalisation (`edge::normalize`): whatever it accepts, routing, policies and the
//! backend all see the same path, and no backend that decodes percent-escapes once can turn it
//! into a different one.
#![no_main]

use libfuzzer_sys::fuzz_target;

use gatehouse::edge::normalize::normalize_path;

/// What a backend that decodes percent-escapes once sees.
fn decode_once(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    // The proxy normalises the path of a URI hyper accepted: no raw controls, spaces, `#`, `?`.
    match http::uri::PathAndQuery::try_from(path) {
        Ok(pq) if pq.path() == path && pq.query().is_none() => {}
        _ => return,
    }
    let Ok(n) = normalize_path(path) else { return };
    let n: &str = &n;
    assert!(n.starts_with('/'), "{path:?} -> {n:?}");
    // Idempotent: normalising the forwarded path again changes nothing, so a second gateway (or
    // a reload between two hops) routes it the same way.
    match normalize_path(n) {
        Ok(again) => assert_eq!(again, n, "not idempotent: {path:?} -> {n:?} -> {again:?}"),
        Err(e) => panic!("{path:?} -> {n:?} is refused on a second pass: {e}"),
    }
    // No empty, `.` or `..` segment survives (a trailing slash is the only empty one).
    let body = n.strip_suffix('/').unwrap_or(n);
    for seg in body.split('/').skip(1) {
        assert!(!matches!(seg, "" | "." | ".."), "{path:?} -> {n:?} keeps segment {seg:?}");
    }
    // A backend that decodes once sees the same segments: no encoded `/`, `\`, NUL or dot
    // segment is left to be decoded behind the gateway's back.
    let decoded = decode_once(n);
    assert!(!decoded.contains(&b'\\') && !decoded.contains(&0), "{path:?} -> {n:?} decodes to {decoded:?}");
    assert_eq!(
        decoded.iter().filter(|c| **c == b'/').count(),
        n.bytes().filter(|c| *c == b'/').count(),
        "{path:?} -> {n:?}: decoding adds a segment"
    );
    let dbody = decoded.strip_suffix(b"/").unwrap_or(&decoded);
    for seg in dbody.split(|c| *c == b'/').skip(1) {
        assert!(!matches!(seg, b"." | b".."), "{path:?} -> {n:?} decodes to a dot segment");
        // Tomcat and Jetty strip `;params` before resolving dots: `..;x` is `..` to them.
        let before_params = seg.split(|c| *c == b';').next().unwrap_or(seg);
        assert!(
            !matches!(before_params, b"." | b".."),
            "{path:?} -> {n:?}: `{}` is a dot segment to Tomcat",
            String::from_utf8_lossy(seg)
        );
    }
    // Decoded percent-escapes are well-formed UTF-8: no overlong `%c0%ae` dot for a lenient decoder.
    assert!(std::str::from_utf8(&decoded).is_ok(), "{path:?} -> {n:?} decodes to ill-formed UTF-8");
});
