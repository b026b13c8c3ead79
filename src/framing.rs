//! HTTP/1 framing values written and read on both sides of the gateway: `Content-Length`
//! values, and the lines of chunked bodies and lengths as bytes. Shared by the framing guard
//! (client requests), the own HTTP/1 server (`listener::h1`, responses) and the backend client
//! (`upstream::h1`), so the three agree on what a length is.

/// A `Content-Length` value (RFC 9110 §8.6): `1*DIGIT` between optional spaces or tabs; no
/// sign, no list, nothing else. At most 19 digits, so it always fits a `u64`.
pub fn content_length(v: &[u8]) -> Option<u64> {
    let start = v.iter().position(|c| *c != b' ' && *c != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|c| *c != b' ' && *c != b'\t').map_or(start, |p| p + 1);
    let v = &v[start..end.max(start)];
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The chunk-size line for `n` data bytes: lowercase hex digits and CRLF, in a buffer and its
/// length (no allocation, no formatting machinery).
pub fn chunk_size_line(n: usize) -> ([u8; 18], usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1) as usize;
    let mut line = [0u8; 18];
    for (i, slot) in line[..digits].iter_mut().enumerate() {
        *slot = HEX[(n >> (4 * (digits - 1 - i))) & 0xf];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    (line, digits + 2)
}

/// Appends `n` in decimal.
pub fn push_decimal(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(content_length(b" \t42 "), Some(42));
        assert_eq!(content_length(b"9999999999999999999"), Some(9_999_999_999_999_999_999));
        for bad in [&b""[..], b" ", b"+1", b"-1", b"1,1", b"1 1", b"0x10", b"1.0", b"10000000000000000000"] {
            assert_eq!(content_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        for (n, want) in [
            (0usize, "0\r\n"),
            (10, "a\r\n"),
            (255, "ff\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let (line, len) = chunk_size_line(n);
            assert_eq!(&line[..len], want.as_bytes());
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 100, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(n, &mut out);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
