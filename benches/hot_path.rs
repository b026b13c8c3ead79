//! Micro-benchmarks of Gatehouse's per-request hot path and of a config reload.
//!
//! What is measured, and why:
//! - `route/*`: `RouteTable::lookup` on tables of 10, 10,000 and 40,000 routes (4 operation
//!   templates per API prefix; the largest is 10,000 API prefixes). The trees are radix trees,
//!   so a lookup should cost time proportional to the path, not to the route count: the paths
//!   have the same length at every size (zero-padded API names), and the times should match.
//! - `config_compile/*`: `snapshot::compile_str` of the quick-start config and of one with
//!   100 and 1,000 APIs; this is what a reload costs before the new snapshot is swapped in.
//! - `access_log/*`: formatting one realistic line with the `combined` and `json` formats
//!   (the request path does this for every request when the access log is on).
//! - `headers/*`: `proxy::strip_hop_by_hop` on a typical request and a backend response with
//!   `Connection: keep-alive`, `edge::set_forwarding_headers` for an untrusted and a trusted
//!   peer, and `edge::normalize::normalize_path` for a clean and a dirty path.
//!
//! Run with `cargo bench --bench hot_path` (add a filter such as `-- route` for one group).
//! Measurement is kept short (2 s per benchmark after 0.5 s warm-up) so the whole run stays
//! within a few minutes; pass `--measurement-time N` for steadier numbers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use gatehouse::edge::normalize::normalize_path;
use gatehouse::edge::{set_forwarding_headers, Downstream, Peer};
use gatehouse::observe::access_log::{HeadText, LogFormat, LogRecord};
use gatehouse::policy::Chain;
use gatehouse::proxy::strip_hop_by_hop;
use gatehouse::route::{join_template, Api, Lookup, Route, RouteTable, RouteTableBuilder};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Version};

// ---------------------------------------------------------------------------------------------
// Route matching

/// The operations every API gets, as (method, template).
const OPERATIONS: [(Method, &str); 4] = [
    (Method::GET, "/items"),
    (Method::GET, "/items/{id}"),
    (Method::PUT, "/items/{id}"),
    (Method::DELETE, "/items/{id}"),
];

/// A table of exactly `routes` routes: APIs `/api00000`, `/api00001`, ... each with the
/// operations above, on any host. Returns the table and the number of APIs.
fn route_table(routes: usize) -> (RouteTable, usize) {
    let chain = Arc::new(Chain::default());
    let mut b = RouteTableBuilder::default();
    let mut added = 0;
    let mut apis = 0;
    while added < routes {
        let name = format!("api{apis:05}");
        let api =
            Arc::new(Api { prefix: format!("/{name}"), name, backend: Some("orders".into()), server_timing: false });
        for (method, template) in OPERATIONS.iter().take(routes - added) {
            let route = Arc::new(Route {
                api: api.clone(),
                operation: Some(format!("{method}-{template}")),
                chain: chain.clone(),
                metrics: Default::default(),
            });
            for pattern in join_template(&api.prefix, template) {
                b.add(&[], &pattern, Some(method.clone()), route.clone()).expect("no conflict");
            }
            added += 1;
        }
        apis += 1;
    }
    let table = b.build().expect("table builds");
    assert_eq!(table.len(), routes);
    (table, apis)
}

fn found(l: Lookup<'_>) -> bool {
    matches!(l, Lookup::Found(..))
}

fn bench_routes(c: &mut Criterion) {
    let mut g = c.benchmark_group("route");
    for routes in [10, 10_000, 40_000] {
        let (table, apis) = route_table(routes);
        // An API in the middle of the table; same path length at every size.
        let hit = format!("/api{:05}/items/12345", apis / 2);
        let miss = "/apx00000/items/12345";
        assert!(found(table.lookup(None, &hit, &Method::GET)), "{hit}");
        assert!(matches!(table.lookup(None, miss, &Method::GET), Lookup::NotFound));
        g.bench_with_input(BenchmarkId::new("hit", routes), &hit, |b, hit| {
            b.iter(|| found(table.lookup(black_box(None), black_box(hit), black_box(&Method::GET))))
        });
        g.bench_with_input(BenchmarkId::new("miss_404", routes), &miss, |b, miss| {
            b.iter(|| found(table.lookup(black_box(None), black_box(miss), black_box(&Method::GET))))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Config compile (reload cost)

const SMALL_CONFIG: &str = include_str!("../examples/quickstart.yaml");

/// A config with `apis` APIs behind two backends, each with three operations.
fn big_config(apis: usize) -> String {
    let mut s = String::from(
        "listeners:\n  - { name: plain, bind: \"127.0.0.1:8080\" }\n\
         edge:\n  access_log: { format: combined, path: stdout }\n\
         backends:\n\
         \x20 orders:\n    servers: [ { url: \"http://127.0.0.1:9000\" } ]\n\
         \x20 users:\n    servers: [ { url: \"http://127.0.0.1:9001\" } ]\n\
         apis:\n",
    );
    for i in 0..apis {
        let backend = if i % 2 == 0 { "orders" } else { "users" };
        s.push_str(&format!(
            "  api{i:04}:\n    path: /api{i:04}\n    backend: {backend}\n    operations:\n\
             \x20     - {{ id: list, method: GET, template: /items }}\n\
             \x20     - {{ id: get, method: GET, template: \"/items/{{id}}\" }}\n\
             \x20     - {{ id: create, method: POST, template: /items }}\n"
        ));
    }
    s
}

fn bench_config(c: &mut Criterion) {
    let compile = |text: &str| gatehouse::snapshot::compile_str("gatehouse.yaml", text, Path::new("."));
    match compile(SMALL_CONFIG) {
        Ok(s) => assert_eq!(s.api_count(), 2),
        Err(e) => panic!("quickstart does not compile: {e:?}"),
    }
    let mut g = c.benchmark_group("config_compile");
    g.bench_function("quickstart", |b| b.iter(|| compile(black_box(SMALL_CONFIG)).is_ok()));
    // Two sizes, to show whether the cost grows linearly with the number of APIs.
    for apis in [100, 1_000] {
        let text = big_config(apis);
        match compile(&text) {
            Ok(s) => assert_eq!(s.api_count(), apis),
            Err(e) => panic!("config does not compile: {e:?}"),
        }
        g.bench_with_input(BenchmarkId::new("apis", apis), &text, |b, text| {
            b.iter(|| compile(black_box(text)).is_ok())
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Access-log formatting

fn log_record() -> LogRecord {
    let mut req = HeaderMap::new();
    req.insert("host", HeaderValue::from_static("api.example.com"));
    req.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    );
    req.insert("referer", HeaderValue::from_static("https://app.example.com/orders?tab=open"));
    req.insert("accept", HeaderValue::from_static("application/json"));
    req.insert("authorization", HeaderValue::from_static("Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"));
    let mut resp = HeaderMap::new();
    resp.insert("content-type", HeaderValue::from_static("application/json"));
    resp.insert("content-length", HeaderValue::from_static("1234"));
    // What the proxy keeps of the headers: those the formats print (JSON's are combined's).
    let (req_names, resp_names) = LogFormat::parse("combined").expect("format parses").headers_used();
    let api = Api { name: "orders".to_owned(), prefix: "/orders".to_owned(), backend: None, server_timing: false };
    let route = Route {
        api: Arc::new(api),
        operation: Some("get-item".to_owned()),
        chain: Arc::new(Chain::default()),
        metrics: Default::default(),
    };
    let mut head = HeadText::default();
    head.set_path("/orders/v2/items/12345");
    head.set_query(Some("expand=lines&subscription-key=abc123"));
    head.set_host(Some("api.example.com"));
    head.set_request_id("4bf92f3577b34da6a3ce929d0e0e4736");
    head.pick_headers(false, &req_names, &req);
    head.pick_headers(true, &resp_names, &resp);
    LogRecord {
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        peer_port: 51234,
        local_port: 8443,
        time: UNIX_EPOCH + Duration::from_millis(1_735_689_600_123),
        method: Method::GET,
        version: Version::HTTP_11,
        status: 200,
        bytes_sent: 1234,
        duration: Duration::from_micros(2_345),
        head,
        user: Some("alice@example.com".to_owned()),
        route: Some(Arc::new(route)),
        product: Some("gold".into()),
        subscription: Some("sub-42".into()),
        backend: Some("orders".into()),
        upstream_status: Some(200),
        time_edge: Duration::from_micros(12),
        time_policy: Duration::from_micros(40),
        time_backend: Some(Duration::from_micros(2_200)),
        ..LogRecord::default()
    }
}

fn bench_access_log(c: &mut Criterion) {
    let rec = log_record();
    let mut g = c.benchmark_group("access_log");
    for name in ["combined", "json"] {
        let format = LogFormat::parse(name).expect("format parses");
        let mut buf = Vec::with_capacity(1024);
        format.write(&rec, &mut buf);
        assert!(buf.len() > 100, "{}", String::from_utf8_lossy(&buf));
        // The buffer is reused, as the gateway reuses its thread-local one.
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                format.write(black_box(&rec), &mut buf);
                buf.len()
            })
        });
    }
    g.bench_function("parse_combined", |b| b.iter(|| LogFormat::parse(black_box("combined")).is_ok()));
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Header work on the request path

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    h
}

fn bench_headers(c: &mut Criterion) {
    let request = headers(&[
        ("host", "api.example.com"),
        ("user-agent", "curl/8.5.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.sig"),
        ("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("content-type", "application/json"),
    ]);
    let response = headers(&[
        ("content-type", "application/json"),
        ("content-length", "1234"),
        ("date", "Wed, 01 Jan 2025 00:00:00 GMT"),
        ("server", "nginx"),
        ("cache-control", "no-store"),
        ("connection", "keep-alive"),
    ]);
    let mut forwarded = request.clone();
    forwarded.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.9"));
    forwarded.insert("forwarded", HeaderValue::from_static("for=198.51.100.9;proto=https"));

    let mut g = c.benchmark_group("headers");
    // Each iteration gets a fresh clone (setup, not timed): the functions mutate the map.
    for (name, map) in [("strip_hop_by_hop/request", &request), ("strip_hop_by_hop/response_keep_alive", &response)] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(|| map.clone(), |h| strip_hop_by_hop(black_box(h)), BatchSize::SmallInput)
        });
    }

    let peer = Peer::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), true);
    let host = HeaderValue::from_static("api.example.com");
    for (name, map, trusted) in
        [("set_forwarding/untrusted", &request, false), ("set_forwarding/trusted_append", &forwarded, true)]
    {
        let d = Downstream { peer: &peer, peer_trusted: trusted, host: Some(&host) };
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || map.clone(),
                |h| set_forwarding_headers(black_box(h), black_box(&d)),
                BatchSize::SmallInput,
            )
        });
    }

    let clean = "/orders/v2/items/12345";
    let dirty = "/orders//v2/./items/%7Ebob/../%31%32345";
    assert_eq!(normalize_path(dirty).as_deref(), Ok(clean));
    for (name, path) in [("normalize_path/clean", clean), ("normalize_path/dirty", dirty)] {
        g.bench_function(name, |b| b.iter(|| normalize_path(black_box(path)).map(|p| p.len())));
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_routes, bench_config, bench_access_log, bench_headers
}
criterion_main!(benches);
