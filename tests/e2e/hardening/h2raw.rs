//! Hand-built HTTP/2 requests (h2c prior knowledge): the h2 crate refuses to send the malformed
//! requests a downgrade-smuggling attacker sends, so these are frames written by hand, HPACK
//! literals without Huffman coding or indexing.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn int(out: &mut Vec<u8>, prefix_bits: u32, flags: u8, mut v: usize) {
    let max = (1usize << prefix_bits) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, names and values byte for byte.
pub fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        int(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        int(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

/// What came back on stream 1.
#[derive(Debug, Default)]
pub struct H2Outcome {
    pub response_headers: bool,
    /// The `:status` when the server sent it as a static-table index (200, 204, 206, 304, 400,
    /// 404, 500) or as a literal with an indexed name.
    pub status: Option<u16>,
    pub reset: Option<u32>,
    pub goaway: Option<u32>,
    pub data: Vec<u8>,
}

fn decode_status(block: &[u8]) -> Option<u16> {
    // Hyper's encoder starts the block with :status.
    let first = *block.first()?;
    let static_status = [(8, 200), (9, 204), (10, 206), (11, 304), (12, 400), (13, 404), (14, 500)];
    if first & 0x80 != 0 {
        return static_status.iter().find(|(i, _)| *i == first & 0x7f).map(|(_, s)| *s);
    }
    // Literal with a name index (any of the three kinds) and a plain 3-digit value.
    let len = *block.get(1)?;
    if len == 3 {
        return std::str::from_utf8(block.get(2..5)?).ok()?.parse().ok();
    }
    None
}

/// Opens an h2c connection, sends `frames` for stream 1 after the preface, and reads until the
/// stream ends, is reset, the connection goes away, or `wait` passes.
pub async fn send(addr: SocketAddr, frames: &[Vec<u8>], wait: Duration) -> H2Outcome {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for f in frames {
        out.extend_from_slice(f);
    }
    let _ = s.write_all(&out).await;
    let mut got = H2Outcome::default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Whole frames in the buffer.
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            match kind {
                SETTINGS if flags & 1 == 0 => {
                    let _ = s.write_all(&frame(SETTINGS, 1, 0, &[])).await;
                }
                HEADERS if stream == 1 => {
                    got.response_headers = true;
                    got.status = got.status.or_else(|| decode_status(&payload));
                    if flags & END_STREAM != 0 {
                        return got;
                    }
                }
                DATA if stream == 1 => {
                    got.data.extend_from_slice(&payload);
                    if flags & END_STREAM != 0 {
                        return got;
                    }
                }
                RST_STREAM if stream == 1 && payload.len() == 4 => {
                    got.reset = Some(u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]));
                    return got;
                }
                GOAWAY if payload.len() >= 8 => {
                    got.goaway = Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]));
                    return got;
                }
                _ => {}
            }
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return got,
        }
    }
}
