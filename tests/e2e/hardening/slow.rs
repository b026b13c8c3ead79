//! Slow clients (reliability.md §2.9): many slowloris heads at once, and slow request bodies —
//! stalled, trickled below `edge.limits.body_min_rate`, or never sent after a head the gateway
//! answers itself — are closed within the configured time while other clients are served.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::framing::{framing_config, settle, Conn};
use crate::support::*;

/// VmRSS of this process (the gateway runs in-process), in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A bystander's request is answered quickly.
async fn assert_served_quickly(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    let got = get(&format!("http://{addr}/api/bystander")).await;
    assert_eq!(got.status, 200, "{what}: {}", got.text());
    assert!(started.elapsed() < Duration::from_millis(500), "{what}: the bystander waited {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_slowloris_heads_are_all_closed_while_others_are_served() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "  limits: { header_timeout: 1s, idle_timeout: 1s }")).await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for i in 0..200 {
        let mut c = Conn::open(g.addr).await;
        c.send(format!("GET /api/slow{i} HTTP/1.1\r\nHost: gw.test\r\n").as_bytes()).await;
        conns.push(c);
    }
    // Keep trickling header lines into every connection while bystanders are served.
    for round in 0..4 {
        for c in &mut conns {
            c.send(format!("X-Round-{round}: v\r\n").as_bytes()).await;
        }
        assert_served_quickly(g.addr, &format!("round {round}")).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut open = 0;
    for c in &mut conns {
        if !c.closed_within(Duration::from_secs(3).saturating_sub(started.elapsed())).await {
            open += 1;
        }
    }
    assert_eq!(open, 0, "{open} slowloris connections outlived header_timeout (after {:?})", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    settle().await;
    assert!(b.requests().iter().all(|s| s.uri == "/bystander"), "a slowloris head reached the backend");
}

fn slow_body_config(addr: SocketAddr) -> String {
    framing_config(addr, "  limits: { header_timeout: 5s, idle_timeout: 5s, body_timeout: 1s, body_min_rate: 1KiB }")
}

/// A body that stops arriving: the proxied request is given up within `body_timeout`, the
/// connection closed, and the backend never gets a complete body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_closed_within_body_timeout() {
    let b = backend().await;
    let g = gateway(&slow_body_config(b.addr)).await;
    let heads = [
        (
            "proxied, Content-Length",
            "POST /api/stall HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\n0123456789",
        ),
        (
            "proxied, chunked",
            "POST /api/stall HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789",
        ),
        ("answered by the gateway", "POST /hello HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\n0123456789"),
    ];
    for (case, head) in heads {
        let started = Instant::now();
        let mut c = Conn::open(g.addr).await;
        c.send(head.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_served_quickly(g.addr, case).await;
        let closed = c.closed_within(Duration::from_secs(4)).await;
        let took = started.elapsed();
        assert!(closed, "{case}: the connection stayed open for {took:?}");
        // 1 s, plus 1 s per KiB received (10 bytes: nothing), plus scheduling slack.
        assert!(took < Duration::from_millis(2500), "{case}: closed after {took:?}");
        // The gateway may close at once when it answered by itself and does not need the body.
        if case.starts_with("proxied") {
            assert!(took >= Duration::from_millis(900), "{case}: closed after only {took:?}");
        }
    }
    settle().await;
    for s in b.requests() {
        assert!(
            s.uri == "/bystander" || s.body.len() < 100,
            "the backend got a complete body: {} {}",
            s.uri,
            s.body.len()
        );
    }
}

/// A body trickled below `body_min_rate` is cut; one sent steadily above it is not, however long
/// it takes in total.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_below_the_minimum_rate_is_cut_and_a_steady_one_passes() {
    let b = backend().await;
    let g = gateway(&slow_body_config(b.addr)).await;

    // 10 bytes every 200 ms = 50 B/s, far below 1 KiB/s.
    let started = Instant::now();
    let mut c = Conn::open(g.addr).await;
    c.send(b"POST /api/trickle HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 10000\r\n\r\n").await;
    let mut cut = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(b"0123456789").await;
        if c.closed_within(Duration::from_millis(1)).await {
            cut = true;
            break;
        }
    }
    let cut = cut || c.closed_within(Duration::from_secs(1)).await;
    assert!(cut, "a 50 B/s body was never cut");
    assert!(started.elapsed() < Duration::from_millis(2500), "cut after {:?}", started.elapsed());

    // 1 KiB every 250 ms = 4 KiB/s for 3 s: longer than body_timeout, above the rate.
    let started = Instant::now();
    let mut c = Conn::open(g.addr).await;
    c.send(b"POST /api/steady HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 12288\r\n\r\n").await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        c.send(&[b'a'; 1024]).await;
    }
    let r = c.response(Duration::from_secs(3)).await.unwrap_or_else(|| panic!("no answer: {}", c.leftover()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_millis(2900));
    settle().await;
    let steady = b.requests().into_iter().find(|s| s.uri == "/steady").expect("the steady upload arrived");
    assert_eq!(steady.body.len(), 12288);
    assert!(b.requests().iter().all(|s| s.uri != "/trickle" || s.body.len() < 10000));
}
