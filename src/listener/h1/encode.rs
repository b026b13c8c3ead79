//! Response heads in HTTP/1.1 wire form, with the framing they imply (hyper's server rules:
//! `proto/h1/role.rs`, `Server::encode`), and the cached `Date` value.

use std::cell::RefCell;
use std::time::{Duration, Instant, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

use crate::framing;

/// How the body after a head is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body may follow (HEAD, 204, 304), or it is empty.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 client, unknown length).
    Close,
}

/// What is known of a response body's length before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLen {
    /// The body has already ended.
    None,
    Known(u64),
    Unknown,
}

/// The request a response answers, as far as its encoding depends on it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    pub method: &'a Method,
    pub http10: bool,
}

/// Appends the response head to `out`, and returns how its body is framed. `keep_alive` comes
/// in as what the request and the connection allow and goes out as what this response allows
/// (a `Connection: close` in it, a close-delimited body, an HTTP/1.0 client that did not ask).
pub fn head(
    status: StatusCode,
    reason: Option<&[u8]>,
    headers: &HeaderMap,
    asked: Asked<'_>,
    body: BodyLen,
    keep_alive: &mut bool,
    out: &mut Vec<u8>,
) -> Framing {
    // A 1xx cannot be a final answer (hyper answers 500 with an empty head too), and this server
    // serves no upgrades, so a 101 here would switch nothing: it must not leave a client (or a
    // proxy in front) believing the connection changed protocols.
    if status.is_informational() {
        *keep_alive = false;
        out.extend_from_slice(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n");
        date_line(out);
        out.extend_from_slice(b"\r\n");
        return Framing::Empty;
    }
    status_line(status, reason, asked.http10, out);
    let head_request = asked.method == Method::HEAD;
    let no_content = matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let can_body = !head_request && !no_content;

    let mut length: Option<u64> = None;
    let mut wrote_date = false;
    let mut said_close = false;
    let mut said_keep_alive = false;
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                // A HEAD answer states the length a GET would have had; otherwise the length
                // written is the body's own (below), or the first valid one in the map when
                // the body does not know it.
                if no_content || length.is_some() {
                    continue;
                }
                let parsed = framing::content_length(value.as_bytes());
                let keep = match body {
                    _ if head_request => parsed.is_some(),
                    BodyLen::Unknown => parsed.is_some(),
                    BodyLen::None | BodyLen::Known(_) => false,
                };
                if !keep {
                    continue;
                }
                length = parsed;
            }
            // The framing is this server's to choose; hop-by-hop framing from a backend or a
            // policy never reaches the client as such.
            header::TRANSFER_ENCODING => continue,
            header::CONNECTION => {
                for token in value.as_bytes().split(|c| *c == b',') {
                    let token = token.trim_ascii();
                    said_close |= token.eq_ignore_ascii_case(b"close");
                    said_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            header::DATE => wrote_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    let mut framing = match (length, body) {
        (Some(n), _) => Framing::Length(n),
        (None, BodyLen::Known(n)) if !no_content && n > 0 => {
            length_line(n, out);
            Framing::Length(n)
        }
        (None, BodyLen::None | BodyLen::Known(_)) => {
            if !no_content && !head_request {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Empty
        }
        (None, BodyLen::Unknown) if asked.http10 || !can_body => Framing::Close,
        (None, BodyLen::Unknown) => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
    };
    if !can_body {
        framing = Framing::Empty;
    }
    if framing == Framing::Close || said_close {
        *keep_alive = false;
    }
    if asked.http10 {
        if *keep_alive && !said_keep_alive {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    } else if !*keep_alive && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        date_line(out);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

fn status_line(status: StatusCode, reason: Option<&[u8]>, http10: bool, out: &mut Vec<u8>) {
    if status == StatusCode::OK && reason.is_none() && !http10 {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    // A reason must be written: many parsers expect one.
    out.extend_from_slice(reason.unwrap_or_else(|| status.canonical_reason().unwrap_or("<none>").as_bytes()));
    out.extend_from_slice(b"\r\n");
}

fn length_line(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b"content-length: ");
    framing::push_decimal(n, out);
    out.extend_from_slice(b"\r\n");
}

/// The `Date` value of the current second, formatted once per second per thread.
struct DateCache {
    second: u64,
    value: [u8; 29],
}

thread_local! {
    static DATE: RefCell<DateCache> = const { RefCell::new(DateCache { second: 0, value: [b' '; 29] }) };
}

fn date_line(out: &mut Vec<u8>) {
    let second = crate::observe::clock::unix_second(Instant::now());
    out.extend_from_slice(b"date: ");
    let written = DATE.try_with(|d| {
        let mut d = d.borrow_mut();
        if d.second != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            if text.len() == d.value.len() {
                d.value.copy_from_slice(text.as_bytes());
                d.second = second;
            }
        }
        out.extend_from_slice(&d.value);
    });
    if written.is_err() {
        out.extend_from_slice(httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second)).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn encode(
        status: u16,
        headers: &[(&str, &str)],
        method: Method,
        http10: bool,
        body: BodyLen,
        ka: bool,
    ) -> (String, Framing, bool) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                header::HeaderName::from_bytes(n.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        let mut keep_alive = ka;
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).expect("status");
        let framing = head(status, None, &map, Asked { method: &method, http10 }, body, &mut keep_alive, &mut out);
        let text = String::from_utf8(out).expect("utf-8");
        // The date changes; its presence is checked, its value masked.
        let masked: Vec<&str> =
            text.split("\r\n").map(|l| if l.starts_with("date: ") { "date: *" } else { l }).collect();
        (masked.join("\r\n"), framing, keep_alive)
    }

    #[test]
    fn a_known_length_is_written_from_the_body_and_the_maps_value_dropped() {
        let (text, framing, ka) =
            encode(200, &[("content-length", "5"), ("x-a", "1")], Method::GET, false, BodyLen::Known(100), true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 100\r\ndate: *\r\n\r\n");
        assert_eq!((framing, ka), (Framing::Length(100), true));
    }

    #[test]
    fn an_unknown_length_uses_the_maps_content_length_else_chunks() {
        let (text, framing, _) = encode(200, &[("content-length", "7")], Method::GET, false, BodyLen::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ndate: *\r\n\r\n");
        assert_eq!(framing, Framing::Length(7));
        let (text, framing, _) =
            encode(200, &[("transfer-encoding", "gzip")], Method::GET, false, BodyLen::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ndate: *\r\n\r\n");
        assert_eq!(framing, Framing::Chunked);
    }

    #[test]
    fn head_keeps_the_stated_length_and_sends_no_body() {
        let (text, framing, _) = encode(200, &[("content-length", "1234")], Method::HEAD, false, BodyLen::None, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\ndate: *\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
        let (text, framing, _) = encode(200, &[], Method::HEAD, false, BodyLen::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: *\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
    }

    #[test]
    fn no_content_and_not_modified_carry_no_framing() {
        for status in [204, 304] {
            let (text, framing, ka) = encode(
                status,
                &[("content-length", "10"), ("transfer-encoding", "chunked")],
                Method::GET,
                false,
                BodyLen::None,
                true,
            );
            assert!(!text.contains("content-length") && !text.contains("transfer-encoding"), "{text}");
            assert_eq!((framing, ka), (Framing::Empty, true));
        }
    }

    #[test]
    fn an_empty_body_says_content_length_zero() {
        let (text, framing, _) = encode(404, &[], Method::GET, false, BodyLen::None, true);
        assert_eq!(text, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\ndate: *\r\n\r\n");
        assert_eq!(framing, Framing::Empty);
    }

    #[test]
    fn closing_is_said_once() {
        let (text, _, ka) = encode(200, &[], Method::GET, false, BodyLen::None, false);
        assert!(text.contains("connection: close\r\n") && !ka);
        let (text, _, ka) = encode(503, &[("connection", "close")], Method::GET, false, BodyLen::None, true);
        assert_eq!(text.matches("connection").count(), 1);
        assert!(!ka);
    }

    #[test]
    fn http10_clients_get_http10_and_keep_alive_only_when_asked() {
        let (text, framing, ka) = encode(200, &[], Method::GET, true, BodyLen::Known(3), true);
        assert_eq!(text, "HTTP/1.0 200 OK\r\ncontent-length: 3\r\nconnection: keep-alive\r\ndate: *\r\n\r\n");
        assert_eq!((framing, ka), (Framing::Length(3), true));
        let (text, framing, ka) = encode(200, &[], Method::GET, true, BodyLen::Unknown, false);
        assert_eq!(text, "HTTP/1.0 200 OK\r\ndate: *\r\n\r\n");
        assert_eq!((framing, ka), (Framing::Close, false));
    }

    #[test]
    fn a_custom_reason_and_a_map_date_are_kept() {
        let mut out = Vec::new();
        let mut map = HeaderMap::new();
        map.insert(header::DATE, HeaderValue::from_static("Tue, 01 Jan 2030 00:00:00 GMT"));
        let mut ka = true;
        let asked = Asked { method: &Method::GET, http10: false };
        head(StatusCode::IM_A_TEAPOT, Some(b"Short and stout"), &map, asked, BodyLen::None, &mut ka, &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 418 Short and stout\r\ndate: Tue, 01 Jan 2030 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn informational_answers_become_500_and_close() {
        for status in [100, 101, 103] {
            let (text, framing, ka) =
                encode(status, &[("upgrade", "websocket")], Method::GET, false, BodyLen::None, true);
            assert!(text.starts_with("HTTP/1.1 500 Internal Server Error\r\n"), "{text}");
            assert!(!text.contains("upgrade") && text.contains("connection: close"), "{text}");
            assert_eq!((framing, ka), (Framing::Empty, false));
        }
    }
}
