//! The HTTP/1 framing guard (`edge::guard::H1Guard`) on arbitrary client bytes.
//!
//! The harness plays hyper: it reads what the guard releases and, when the guard waits for the
//! answer to an upgrade, writes a status line (101 or 200, chosen by the input). Checked:
//! - the guard never panics and always ends (time is paused, so deadlines pass instantly);
//! - it only ever releases a prefix of what the client sent (it invents and reorders nothing);
//! - every request head it releases parses strictly and has unambiguous framing: never both
//!   Content-Length and Transfer-Encoding, at most one Content-Length, a Transfer-Encoding only
//!   as a lone `chunked`, and no head on a `Transfer_Encoding`-style spelling.
#![no_main]

mod common;

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{fed_guard, runtime};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    runtime().block_on(async {
        let mut guard = fed_guard(mode, input).await;
        let mut released = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..10_000 {
            let _ = guard.flush().await;
            match tokio::time::timeout(Duration::from_secs(120), guard.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => released.extend_from_slice(&buf[..n]),
                // Waiting for an upgrade's answer: give one, as hyper would.
                Err(_) => {
                    let status: &[u8] = if mode & 0x80 != 0 {
                        b"HTTP/1.1 101 Switching Protocols\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
                    };
                    if guard.write_all(status).await.is_err() {
                        break;
                    }
                }
            }
        }
        assert!(input.starts_with(&released), "the guard released bytes the client did not send in that order");
        check_heads(&released);
    });
});

/// Walks the released bytes as a strict HTTP/1 server would and checks each head's framing.
fn check_heads(mut b: &[u8]) {
    loop {
        while let Some(rest) = b.strip_prefix(b"\r\n") {
            b = rest;
        }
        if b.is_empty() || b.starts_with(b"PRI * HTTP/2.0") {
            return;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let len = match req.parse(b) {
            Ok(httparse::Status::Complete(len)) => len,
            // A partial head at the end (the client stopped): nothing more was released.
            Ok(httparse::Status::Partial) => return,
            Err(e) => panic!("the guard released a head httparse refuses: {e}: {:?}", String::from_utf8_lossy(b)),
        };
        let mut cl = Vec::new();
        let mut te = Vec::new();
        let mut upgrade = false;
        for h in req.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            assert!(name != "transfer_encoding" && name != "content_length", "framing header spelled with `_`");
            match name.as_str() {
                "content-length" => cl.push(h.value.to_vec()),
                "transfer-encoding" => te.push(h.value.to_vec()),
                "upgrade" => upgrade = true,
                _ => {}
            }
        }
        assert!(cl.is_empty() || te.is_empty(), "released a head with both Content-Length and Transfer-Encoding");
        assert!(cl.len() <= 1, "released a head with {} Content-Length fields", cl.len());
        assert!(te.len() <= 1, "released a head with {} Transfer-Encoding fields", te.len());
        if let Some(t) = te.first() {
            assert!(t.eq_ignore_ascii_case(b"chunked"), "released Transfer-Encoding {:?}", String::from_utf8_lossy(t));
        }
        b = &b[len..];
        if upgrade {
            // What follows belongs to the upgraded protocol (or the next head): stop checking.
            return;
        }
        if let Some(v) = cl.first() {
            let n: usize = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("a released Content-Length is a number");
            if b.len() < n {
                return;
            }
            b = &b[n..];
        } else if !te.is_empty() {
            // Skip the chunked body strictly; an incomplete one ends the release.
            loop {
                let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return };
                let line = &b[..nl];
                let size_end = line.iter().position(|c| *c == b';').unwrap_or(line.len());
                let size = std::str::from_utf8(&line[..size_end])
                    .ok()
                    .and_then(|s| usize::from_str_radix(s.trim_end_matches([' ', '\t']), 16).ok());
                let Some(size) = size else {
                    panic!("released a malformed chunk line {:?}", String::from_utf8_lossy(line))
                };
                b = &b[nl + 2..];
                if size == 0 {
                    // Trailers up to the empty line.
                    loop {
                        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else { return };
                        b = &b[nl + 2..];
                        if nl == 0 {
                            break;
                        }
                    }
                    break;
                }
                if b.len() < size + 2 {
                    return;
                }
                assert_eq!(&b[size..size + 2], b"\r\n", "released chunk data longer than its size");
                b = &b[size + 2..];
            }
        }
    }
}
