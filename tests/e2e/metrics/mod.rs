//! Observability. Here: Prometheus metrics at `GET /metrics` on the admin listener, read with a
//! real text-format parser after known traffic: counts by API, status class and the layer that
//! failed (edge, backend, none), histograms per layer, backend health, events, bounded
//! cardinality, and the `Server-Timing` header. `traces`: OTLP export and trace propagation.

mod traces;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use prometheus_parse::{Sample, Scrape, Value};

use crate::support::*;

async fn scrape(admin: SocketAddr) -> Scrape {
    let got = get(&format!("http://{admin}/metrics")).await;
    assert_eq!(got.status, 200);
    assert!(got.headers["content-type"].to_str().expect("ascii").starts_with("text/plain; version=0.0.4"));
    Scrape::parse(got.text().lines().map(|l| Ok(l.to_owned()))).expect("valid Prometheus text")
}

fn find<'a>(s: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples.iter().find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn counter(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        None => 0.0,
        other => panic!("{metric} is not a counter: {other:?}"),
    }
}

fn histogram_count(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, metric, labels).map(|x| &x.value) {
        Some(Value::Histogram(buckets)) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
        None => 0.0,
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

/// Scrapes until `ready` holds: a request is recorded when its response body ends, which may be a
/// moment after the client has read it.
async fn scrape_until(admin: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let s = scrape(admin).await;
        if ready(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    scrape(admin).await
}

fn config(ok: SocketAddr, failing: SocketAddr, dead: SocketAddr, extra: &str) -> String {
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
admin: {{ bind: "127.0.0.1:0", token: "metrics-test-admin-token" }}
edge: {{ access_log: {{ format: off }}, limits: {{ max_requests_per_connection: 100000 }} }}
{extra}
backends:
  b: {{ servers: [ {{ url: "http://{ok}" }} ] }}
  failing: {{ servers: [ {{ url: "http://{failing}" }} ] }}
  dead: {{ servers: [ {{ url: "http://{dead}" }} ], retry: {{ attempts: 1 }} }}
apis:
  mx-ok:
    path: /ok
    backend: b
    operations:
      - {{ id: get-item, method: GET, template: "/items/{{id}}" }}
      - {{ id: any, method: "*", template: "/{{*rest}}" }}
  mx-failing: {{ path: /failing, backend: failing }}
  mx-dead: {{ path: /dead, backend: dead }}
  mx-hello:
    path: /hello
    policies:
      inbound:
        - return-response: {{ status: 201, body: "hi" }}
"#
    )
}

/// An address nothing listens on (bound, then closed).
async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_by_layer() {
    let ok = backend().await;
    let failing = backend_with(status_handler(500), false).await;
    let dead = dead_addr().await;
    let g = gateway(&config(ok.addr, failing.addr, dead, "")).await;
    let admin = g.gw.admin_addr().await.expect("admin");

    let c = client();
    for i in 0..3 {
        assert_eq!(get(&g.url(&format!("/ok/items/{i}"))).await.status, 200);
    }
    assert_eq!(get(&g.url("/ok/other/path")).await.status, 200);
    for _ in 0..2 {
        assert_problem(&get(&g.url("/no/such/api")).await, 404, "edge");
    }
    // Refused by the HTTP/1 framing guard before any request exists: counted all the same.
    let smuggle =
        b"POST /ok/items/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let answer = raw(g.addr, smuggle, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let post = Request::post(g.url("/hello")).body(Full::new(Bytes::from_static(b"x"))).expect("req");
    assert_eq!(send(&c, post).await.status, 201);
    assert_eq!(get(&g.url("/failing/x")).await.status, 500, "a backend's own 500 passes through");
    assert_problem(&get(&g.url("/dead/x")).await, 502, "backend");
    gatehouse::observe::metrics::jwks_fetch("mx-corp", true);
    gatehouse::observe::metrics::jwks_fetch("mx-corp", false);
    gatehouse::observe::metrics::cache_lookup("mx-cache", true);
    gatehouse::observe::metrics::rate_limit_decision("mx-rate-limit", false);

    let req = "gatehouse_requests_total";
    let s = scrape_until(admin, |s| {
        counter(s, req, &[("api", "mx-dead")]) >= 1.0 && counter(s, req, &[("api", "mx-failing")]) >= 1.0
    })
    .await;
    let get_item =
        [("api", "mx-ok"), ("operation", "get-item"), ("product", ""), ("status_class", "2xx"), ("layer", "")];
    assert_eq!(counter(&s, req, &get_item), 3.0);
    assert_eq!(counter(&s, req, &[("api", "mx-ok"), ("operation", "any"), ("status_class", "2xx")]), 1.0);
    assert_eq!(counter(&s, req, &[("api", ""), ("operation", ""), ("status_class", "4xx"), ("layer", "edge")]), 3.0);
    assert_eq!(counter(&s, req, &[("api", "mx-hello"), ("status_class", "2xx"), ("layer", "")]), 1.0);
    assert_eq!(counter(&s, req, &[("api", "mx-failing"), ("status_class", "5xx"), ("layer", "backend")]), 1.0);
    assert_eq!(counter(&s, req, &[("api", "mx-dead"), ("status_class", "5xx"), ("layer", "backend")]), 1.0);

    let ok_item = [("api", "mx-ok"), ("operation", "get-item")];
    assert_eq!(histogram_count(&s, "gatehouse_request_duration_seconds", &ok_item), 3.0);
    for layer in ["edge", "backend"] {
        let labels = [("api", "mx-ok"), ("operation", "get-item"), ("layer", layer)];
        assert_eq!(histogram_count(&s, "gatehouse_layer_duration_seconds", &labels), 3.0, "{layer}");
    }
    let hello_policy = [("api", "mx-hello"), ("layer", "policy")];
    assert_eq!(histogram_count(&s, "gatehouse_layer_duration_seconds", &hello_policy), 1.0);
    let hello_backend = [("api", "mx-hello"), ("layer", "backend")];
    assert_eq!(histogram_count(&s, "gatehouse_layer_duration_seconds", &hello_backend), 0.0, "no backend was called");
    assert_eq!(histogram_count(&s, "gatehouse_backend_duration_seconds", &[("backend", "b")]), 4.0);
    assert_eq!(histogram_count(&s, "gatehouse_backend_duration_seconds", &[("backend", "dead")]), 1.0);

    let server = format!("http://{}", ok.addr);
    assert_eq!(counter(&s, "gatehouse_backend_server_up", &[("backend", "b"), ("server", &server)]), 1.0);
    let jwks = "gatehouse_jwks_fetches_total";
    assert_eq!(counter(&s, jwks, &[("provider", "mx-corp"), ("result", "ok")]), 1.0);
    assert_eq!(counter(&s, jwks, &[("provider", "mx-corp"), ("result", "error")]), 1.0);
    assert_eq!(counter(&s, "gatehouse_cache_lookups_total", &[("cache", "mx-cache"), ("result", "hit")]), 1.0);
    let rl = [("policy", "mx-rate-limit"), ("decision", "limited")];
    assert_eq!(counter(&s, "gatehouse_rate_limit_decisions_total", &rl), 1.0);

    // A reload keeps the counts: the series outlive snapshots.
    let yaml = std::fs::read_to_string(g.config_path()).expect("config");
    g.reload_with(&yaml).await.expect("reload");
    assert_eq!(get(&g.url("/ok/items/9")).await.status, 200);
    let s = scrape_until(admin, |s| counter(s, req, &get_item) >= 4.0).await;
    assert_eq!(counter(&s, req, &get_item), 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_paths_keys_and_addresses_do_not_create_series() {
    let ok = backend().await;
    let dead = dead_addr().await;
    let g = gateway(&config(ok.addr, ok.addr, dead, "")).await;
    let admin = g.gw.admin_addr().await.expect("admin");
    let before = scrape(admin)
        .await
        .samples
        .iter()
        .filter(|x| !x.metric.contains("jwks") && !x.metric.contains("cache_") && !x.metric.contains("rate_limit"))
        .count();

    const N: usize = 10_000;
    const TASKS: usize = 8;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let g_url = g.url("");
            tokio::spawn(async move {
                let c = client();
                let mut statuses: HashMap<u16, usize> = HashMap::new();
                for i in (t..N).step_by(TASKS) {
                    let path = if i % 2 == 0 {
                        format!("/ok/items/{i}?subscription-key=k{i}")
                    } else {
                        format!("/unrouted/{i}")
                    };
                    let req = Request::get(format!("{g_url}{path}"))
                        .header("x-forwarded-for", format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
                        .header("ocp-apim-subscription-key", format!("key-{i}"))
                        .body(Full::default())
                        .expect("req");
                    *statuses.entry(send(&c, req).await.status.as_u16()).or_default() += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("task") {
            *statuses.entry(k).or_default() += v;
        }
    }
    assert_eq!(statuses.get(&200), Some(&(N / 2)));
    assert_eq!(statuses.get(&404), Some(&(N / 2)));

    let req = "gatehouse_requests_total";
    let s = scrape_until(admin, |s| {
        counter(s, req, &[("api", "mx-ok"), ("operation", "get-item")]) >= (N / 2) as f64
            && counter(s, req, &[("api", ""), ("layer", "edge")]) >= (N / 2) as f64
    })
    .await;
    assert_eq!(counter(&s, req, &[("api", "mx-ok"), ("operation", "get-item")]), (N / 2) as f64);
    let series: Vec<&Sample> = s.samples.iter().filter(|x| x.metric == req).collect();
    assert!(series.len() <= 2, "10,000 distinct paths, keys and addresses made {} series: {series:?}", series.len());
    // Two request series; six histograms (whole request and edge for both, backend for the API,
    // the backend's own), each one parsed sample plus `_sum` and `_count`: a constant, not N.
    let ours = |s: &Scrape| {
        s.samples
            .iter()
            .filter(|x| !x.metric.contains("jwks") && !x.metric.contains("cache_") && !x.metric.contains("rate_limit"))
            .count()
    };
    assert!(ours(&s) <= before + 2 + 6 * 3, "{before} samples before, {} after", ours(&s));
    let text = get(&format!("http://{admin}/metrics")).await.text();
    for leak in ["key-1", "k10", "10.0.0.1", "/unrouted"] {
        assert!(!text.contains(leak), "/metrics contains {leak}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_timing_only_where_enabled() {
    let b = slow_backend(Duration::from_millis(30)).await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends: {{ b: {{ servers: [ {{ url: "http://{}" }} ] }} }}
apis:
  timed: {{ path: /timed, backend: b, server_timing: true }}
  quiet: {{ path: /quiet, backend: b }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    let got = get(&g.url("/timed/x")).await;
    assert_eq!(got.status, 200);
    let v = got.headers.get("server-timing").expect("Server-Timing").to_str().expect("ascii").to_owned();
    let parts: Vec<(&str, f64)> = v
        .split(", ")
        .map(|p| {
            let (name, dur) = p.split_once(";dur=").expect("name;dur=ms");
            (name, dur.parse().expect("milliseconds"))
        })
        .collect();
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), ["edge", "backend"], "{v}");
    assert!(parts[1].1 >= 30.0, "the backend took at least 30 ms: {v}");
    assert!(parts[0].1 < parts[1].1, "{v}");
    assert!(get(&g.url("/quiet/x")).await.headers.get("server-timing").is_none(), "off by default");
}
