//! What the HTTP/1 fuzz targets share: a current-thread runtime with paused time (deadlines
//! pass at once), the guard's limits, and a guard fed the input in pieces.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream};

use gatehouse::edge::guard::{ConnShared, GuardLimits, H1Guard};

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().expect("runtime")
    })
}

pub fn limits() -> GuardLimits {
    GuardLimits {
        header_bytes: 2048,
        headers: 32,
        uri_bytes: 512,
        body_bytes: 4096,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        body_timeout: Duration::from_secs(20),
        body_min_rate: 500,
    }
}

/// A guard whose client has sent `input` in pieces of 1–19 bytes (chosen by `mode`: the guard
/// must judge the same bytes the same way however they arrive) and then closed its side.
/// Every request the guard hands over counts as answered, so a refusal is never held back
/// waiting for responses the harness will not write.
pub async fn fed_guard(mode: u8, input: &[u8]) -> H1Guard<DuplexStream> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let shared = Arc::new(ConnShared::default());
    shared.in_flight.fetch_add(1 << 20, std::sync::atomic::Ordering::AcqRel);
    shared.in_flight.finish_at(1 << 20, std::sync::atomic::Ordering::AcqRel, std::time::Instant::now());
    let guard = H1Guard::new(server, limits(), shared, None, false);
    let piece = usize::from(mode % 7) * 3 + 1;
    for c in input.chunks(piece) {
        client.write_all(c).await.expect("duplex write");
    }
    client.shutdown().await.expect("shutdown");
    guard
}
