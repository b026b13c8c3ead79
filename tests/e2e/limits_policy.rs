//! Rate limits, quotas and concurrency through the gateway: in-process counters, and counters
//! shared by three gateways through the real Redis at 127.0.0.1:6379 (those tests fail when it
//! is missing), including an outage made by cutting a TCP proxy the test owns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use crate::redis_support::{self, cleanup, prefix, TcpCut, REDIS};
use crate::support::*;

/// A gateway config with backend `b` at `addr`, API `orders` at `/orders` (operations
/// `get-order` GET `/{id}` and `list` GET `/`), its inbound policies, and `extra` top-level YAML.
fn config(addr: std::net::SocketAddr, inbound: &str, extra: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
backends:
  b:
    servers: [ {{ url: "http://{addr}" }} ]
apis:
  orders:
    path: /orders
    backend: b
    policies:
      inbound: {inbound}
    operations:
      - {{ id: get-order, method: GET, template: "/{{id}}" }}
      - {{ id: list, method: GET, template: "/all/items" }}
{extra}
"#
    )
}

async fn get_as(url: &str, user: &str) -> Got {
    send(&client(), Request::get(url).header("x-user", user).body(Full::default()).expect("req")).await
}

#[tokio::test]
async fn rate_limit_by_key_counts_per_key_and_answers_429_with_retry_after() {
    let b = backend().await;
    let inbound = r#"[ { rate-limit-by-key: { calls: 3, renewal_period: 60s, counter_key: "{request.header.X-User}", ratelimit_headers: true, remaining_calls_header_name: X-Calls-Left } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    for left in ["2", "1", "0"] {
        let got = get_as(&g.url("/orders/1"), "alice").await;
        assert_eq!(got.status, 200);
        assert_eq!(got.headers["x-calls-left"], left);
        assert_eq!(got.headers["ratelimit-limit"], "3");
        assert_eq!(got.headers["ratelimit-remaining"], left);
        let reset: u64 = got.headers["ratelimit-reset"].to_str().expect("ascii").parse().expect("seconds");
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let got = get_as(&g.url("/orders/1"), "alice").await;
    let v = assert_problem(&got, 429, "policy");
    assert_eq!(v["policy"], "rate-limit-by-key");
    assert_eq!(v["scope"], "api:orders");
    assert_eq!(v["type"], "urn:gatehouse:error:rate-limited");
    let retry: u64 = got.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=120).contains(&retry), "retry-after {retry}");
    // Another key has its own counter; the refused call never reached the backend.
    assert_eq!(get_as(&g.url("/orders/1"), "bob").await.status, 200);
    assert_eq!(b.count(), 4);
}

#[tokio::test]
async fn increment_condition_counts_only_successful_calls() {
    // The backend fails for /orders/bad; those calls do not count.
    let handler: Handler = Arc::new(|s: &Seen| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"x")));
        if s.uri.contains("bad") {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        r
    });
    let b = backend_with(handler, false).await;
    let inbound = r#"[ { rate-limit-by-key: { calls: 2, renewal_period: 60s, counter_key: "{request.ip}", increment_condition: "response.status < 400" } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    for _ in 0..5 {
        assert_eq!(get(&g.url("/orders/bad")).await.status, 500, "failures do not use the limit up");
    }
    assert_eq!(get(&g.url("/orders/1")).await.status, 200);
    assert_eq!(get(&g.url("/orders/2")).await.status, 200);
    assert_problem(&get(&g.url("/orders/3")).await, 429, "policy");
    // At the limit even a call that would not count is refused.
    assert_problem(&get(&g.url("/orders/bad")).await, 429, "policy");
}

#[tokio::test]
async fn quota_bandwidth_counts_the_response_bodies_sent() {
    // 600-byte responses against a 1 KiB bandwidth quota: the third call finds it used up, and
    // failed calls (not counted by the increment condition) use none of it.
    let handler: Handler = Arc::new(|s: &Seen| {
        let mut r = Response::new(Full::new(Bytes::from(vec![b'x'; 600])));
        if s.uri.contains("bad") {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        r
    });
    let b = backend_with(handler, false).await;
    let inbound = r#"[ { quota-by-key: { bandwidth: "1KiB", renewal_period: 1h, counter_key: "{request.ip}", increment_condition: "response.status < 400" } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    for _ in 0..3 {
        let got = get(&g.url("/orders/bad")).await;
        assert_eq!(got.status, 500);
        assert_eq!(got.body.len(), 600);
    }
    for _ in 0..2 {
        let got = get(&g.url("/orders/1")).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body.len(), 600);
    }
    // Counted when the body ended: give the connection's end a moment.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let v = assert_problem(&get(&g.url("/orders/1")).await, 403, "policy");
    assert_eq!(v["policy"], "quota-by-key");
    assert_eq!(b.count(), 5, "the refused call never reached the backend");
}

#[tokio::test]
async fn rate_limit_applies_api_and_operation_levels_and_survives_a_reload() {
    let b = backend().await;
    let inbound = r#"[ { rate-limit: { calls: 100, renewal_period: 60s, apis: { orders: { calls: 4, renewal_period: 60s, operations: { get-order: { calls: 2, renewal_period: 60s } } } } } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    assert_eq!(get(&g.url("/orders/1")).await.status, 200);
    assert_eq!(get(&g.url("/orders/2")).await.status, 200);
    let v = assert_problem(&get(&g.url("/orders/3")).await, 429, "policy");
    assert_eq!(v["policy"], "rate-limit");
    // The operation is used up, the API is not: another operation still passes.
    assert_eq!(get(&g.url("/orders/all/items")).await.status, 200);

    // A reload (with a changed limit) keeps the counters: 3 of the API's calls are used.
    let reloaded = inbound.replace("calls: 100", "calls: 90");
    g.reload_with(&config(b.addr, &reloaded, "")).await.expect("reload");
    assert_eq!(get(&g.url("/orders/all/items")).await.status, 200);
    assert_problem(&get(&g.url("/orders/all/items")).await, 429, "policy");
    assert_eq!(b.count(), 4);
}

#[tokio::test]
async fn quota_by_key_answers_403_until_the_period_ends() {
    let b = backend().await;
    let inbound = r#"[ { quota-by-key: { calls: 2, renewal_period: 30d, counter_key: "{request.header.X-User}" } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    assert_eq!(get_as(&g.url("/orders/1"), "carol").await.status, 200);
    assert_eq!(get_as(&g.url("/orders/1"), "carol").await.status, 200);
    let got = get_as(&g.url("/orders/1"), "carol").await;
    let v = assert_problem(&got, 403, "policy");
    assert_eq!(v["policy"], "quota-by-key");
    assert_eq!(v["type"], "urn:gatehouse:error:quota-exceeded");
    let retry: u64 = got.headers["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!(retry > 0 && retry <= 30 * 86_400, "renews within the period: {retry}");
    assert_eq!(get_as(&g.url("/orders/1"), "dave").await.status, 200);
}

#[tokio::test]
async fn limit_concurrency_refuses_while_the_backend_is_busy() {
    let b = slow_backend(Duration::from_millis(600)).await;
    let inbound = r#"[ { limit-concurrency: { key: "{api.name}", max_count: 1 } } ]"#;
    let g = gateway(&config(b.addr, inbound, "")).await;
    let url = g.url("/orders/1");
    let first = tokio::spawn(async move { get(&url).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = assert_problem(&get(&g.url("/orders/2")).await, 429, "policy");
    assert_eq!(v["policy"], "limit-concurrency");
    assert_eq!(first.await.expect("first"), 200);
    // The permit came back with the first response.
    assert_eq!(get(&g.url("/orders/3")).await.status, 200);
}

#[test]
fn bad_limit_config_is_reported_with_its_location() {
    let yaml = config(
        "127.0.0.1:9".parse().expect("addr"),
        r#"[ { rate-limit-by-key: { calls: -5, renewal_period: 60s, counter_key: "{request.ip}" } },
             { rate-limit-by-key: { calls: 5, renewal_period: 60s, counter_key: "{jwt.nope.x}" } },
             { quota: { renewal_period: 30d } },
             { rate-limit-by-key: { calls: 5, renewal_period: 60s, counter_key: "{request.ip}", increment_count: 6 } } ]"#,
        "cluster: { redis: \"http://nope\", lease: 0 }",
    );
    let errors =
        gatehouse::snapshot::compile_str("g.yaml", &yaml, std::path::Path::new(".")).err().expect("config errors");
    let text: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
    let has = |path: &str, msg: &str| text.iter().any(|t| t.starts_with(path) && t.contains(msg));
    let p = "apis.orders.policies.inbound";
    assert!(has(&format!("{p}[0].rate-limit-by-key.calls"), ""), "{text:#?}");
    assert!(has(&format!("{p}[1].rate-limit-by-key.counter_key"), "jwt.nope.x"), "{text:#?}");
    assert!(has(&format!("{p}[2].quota"), "calls, bandwidth or both"), "{text:#?}");
    assert!(has(&format!("{p}[3].rate-limit-by-key.increment_count"), "between 1 and calls"), "{text:#?}");
    assert!(has("cluster.redis", "redis:// URL"), "{text:#?}");
    assert!(has("cluster.lease", "at least 1"), "{text:#?}");
    assert!(errors.iter().all(|e| e.line > 0), "every error has a line: {errors:#?}");
}

// ---- shared through Redis ------------------------------------------------------------------

fn cluster(url: &str, prefix: &str, extra: &str) -> String {
    format!("cluster: {{ redis: \"{url}\", key_prefix: \"{prefix}\"{extra} }}")
}

/// Waits so that a burst of a few seconds stays inside one fixed window of Redis' clock.
async fn away_from_window_edge(period_ms: u64) {
    let mut c = redis_support::conn().await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    let left = period_ms - (s * 1000 + us / 1000) % period_ms;
    if left < 10_000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

#[tokio::test]
async fn three_gateways_sharing_redis_admit_100_per_minute_within_the_bound() {
    let b = backend().await;
    let p = prefix("e2e-3gw");
    let inbound = r#"[ { rate-limit-by-key: { calls: 100, renewal_period: 60s, counter_key: "shared" } } ]"#;
    let yaml = config(b.addr, inbound, &cluster(REDIS, &p, ""));
    let gws = [gateway(&yaml).await, gateway(&yaml).await, gateway(&yaml).await];
    away_from_window_edge(60_000).await;
    let c = client();
    let mut admitted = 0u64;
    let mut refused = 0u64;
    for i in 0..300 {
        let got = send(&c, Request::get(gws[i % 3].url("/orders/1")).body(Full::default()).expect("req")).await;
        match got.status.as_u16() {
            200 => admitted += 1,
            429 => refused += 1,
            other => panic!("unexpected {other}: {}", got.text()),
        }
    }
    let trips: u64 =
        gws.iter().map(|g| g.gw.active().snapshot.env.limits.get().redis().expect("cluster mode").round_trips()).sum();
    println!(
        "3 gateways, 100/min shared through Redis (lease 5): admitted {admitted}, refused {refused}, \
         {trips} Redis round trips for 300 requests"
    );
    // About one per lease of 5 admitted calls, plus about one per refusing node per second.
    assert!(trips <= 40, "{trips} round trips");
    // Stated bound (docs/rate-limits.md): never more than the limit, at most nodes × (lease − 1)
    // fewer.
    assert!((88..=100).contains(&admitted), "admitted {admitted}");
    assert_eq!(b.count() as u64, admitted);
    cleanup(&p).await;
}

#[tokio::test]
async fn redis_outage_through_the_gateway_fails_open_or_closed_and_recovers() {
    let b = backend().await;
    let p = prefix("e2e-outage");
    let proxy = TcpCut::start().await;
    let inbound = r#"[ { rate-limit-by-key: { calls: 1000, renewal_period: 60s, counter_key: "k" } } ]"#;
    let exact = ", sync: exact, redis_timeout: 100ms";
    let open = gateway(&config(b.addr, inbound, &cluster(&proxy.url(), &p, exact))).await;
    let closed_extra = format!("{exact}, on_redis_failure: closed");
    let closed = gateway(&config(b.addr, inbound, &cluster(&proxy.url(), &p, &closed_extra))).await;
    assert_eq!(get(&open.url("/orders/1")).await.status, 200);
    assert_eq!(get(&closed.url("/orders/1")).await.status, 200);

    proxy.blackhole();
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(get(&open.url("/orders/1")).await.status, 200, "fail-open admits");
        let got = get(&closed.url("/orders/1")).await;
        let v = assert_problem(&got, 503, "policy");
        assert_eq!(v["type"], "urn:gatehouse:error:limit-unavailable");
        assert_eq!(got.headers["retry-after"], "1");
        assert!(t.elapsed() < Duration::from_millis(800), "no request hangs on a dead Redis: {:?}", t.elapsed());
    }

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&closed.url("/orders/1")).await.status != 200 {
        assert!(Instant::now() < deadline, "the gateway did not recover after Redis returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cleanup(&p).await;
}
