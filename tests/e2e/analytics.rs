//! Analytics through a running gateway: known traffic (successes, an edge 404, a policy 401, a
//! backend 502) counted exactly by API, operation and subscription at `GET /analytics`, on an
//! SQLite file and on PostgreSQL (127.0.0.1:5432, database `test`, `GATEHOUSE_TEST_PG` overrides;
//! the tests fail when it is missing; each works in a schema of its own, dropped afterwards); the
//! history survives a restart; a store outage never slows requests, and what was counted during
//! it reaches the store once it is back.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::support::*;
use gatehouse::config::store::StoreConfig;
use gatehouse::server::Gateway;
use gatehouse::store::Store;

const TOKEN: &str = "analytics-admin-token-0123456789";

fn pg_url() -> String {
    std::env::var("GATEHOUSE_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn config(store: &str, backend: SocketAddr, dead: SocketAddr) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
admin: {{ bind: "127.0.0.1:0", token: "{TOKEN}" }}
edge: {{ access_log: {{ format: off }} }}
store: {{ {store}, poll_interval: 200ms }}
telemetry: {{ analytics: {{ flush_interval: 200ms, node: gw-test }} }}
backends:
  b: {{ servers: [ {{ url: "http://{backend}" }} ] }}
  gone: {{ servers: [ {{ url: "http://{dead}" }} ], retry: {{ attempts: 1 }} }}
products:
  starter: {{ subscription_required: true, apis: [ orders ] }}
apis:
  orders:
    path: /orders
    backend: b
    operations:
      - {{ id: list, method: GET, template: "/" }}
      - {{ id: get, method: GET, template: "/{{id}}" }}
  catalog: {{ path: /catalog, backend: b }}
  legacy: {{ path: /legacy, backend: gone }}
"#
    )
}

async fn start(config: &Path) -> (Arc<Gateway>, SocketAddr, SocketAddr) {
    let snapshot = gatehouse::snapshot::compile_file(config).unwrap_or_else(|e| panic!("config: {e:#?}"));
    let gw = Gateway::start(snapshot, Some(config.to_owned())).await.expect("start (is PostgreSQL running?)");
    let addr = gw.listener_addr("main").await.expect("main");
    let admin = gw.admin_addr().await.expect("admin");
    (gw, addr, admin)
}

async fn call(addr: SocketAddr, path: &str, key: Option<&str>) -> u16 {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.header("Ocp-Apim-Subscription-Key", k);
    }
    send(&client(), req.body(Full::new(Bytes::new())).expect("request")).await.status.as_u16()
}

async fn analytics(admin: SocketAddr, query: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = Request::get(format!("http://{admin}/analytics{query}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let got = send(&client(), req.body(Full::new(Bytes::new())).expect("request")).await;
    (got.status.as_u16(), serde_json::from_slice(&got.body).unwrap_or(Value::Null))
}

fn total(v: &Value) -> u64 {
    v["rows"].as_array().map_or(0, |r| r.iter().map(|r| r["requests"].as_u64().unwrap_or(0)).sum())
}

/// The rows of `by=…`, waiting until all `n` requests are counted (a request is counted when
/// its response body ends, which may be just after the client has read it).
async fn rows_of(admin: SocketAddr, by: &str, n: u64) -> Value {
    let query = format!("?by={by}");
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, v) = analytics(admin, &query, Some(TOKEN)).await;
        assert_eq!(status, 200, "{v}");
        if total(&v) == n {
            return v;
        }
        last = v;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("expected {n} requests by {by}: {last}");
}

fn row<'a>(v: &'a Value, field: &str, name: Option<&str>) -> &'a Value {
    v["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[field].as_str() == name))
        .unwrap_or_else(|| panic!("no row with {field} = {name:?}: {v}"))
}

/// (requests, errors, edge, policy, backend) of a row.
fn counts(r: &Value) -> [u64; 5] {
    let n = |v: &Value| v.as_u64().unwrap_or(u64::MAX);
    let l = &r["errors_by_layer"];
    [n(&r["requests"]), n(&r["errors"]), n(&l["edge"]), n(&l["policy"]), n(&l["backend"])]
}

const TRAFFIC: u64 = 17;

/// Sends the known traffic: orders (5 list + 3 get with the key, 2 without → 401 policy),
/// catalog (4, no key needed), legacy (2 → 502 backend), one unknown path (404 edge).
async fn traffic(addr: SocketAddr, key: &str) {
    for _ in 0..5 {
        assert_eq!(call(addr, "/orders/", Some(key)).await, 200);
    }
    for i in 0..3 {
        assert_eq!(call(addr, &format!("/orders/{i}"), Some(key)).await, 200);
    }
    for i in 0..2 {
        assert_eq!(call(addr, &format!("/orders/{i}"), None).await, 401);
    }
    for i in 0..4 {
        assert_eq!(call(addr, &format!("/catalog/{i}"), None).await, 200);
    }
    for i in 0..2 {
        assert_eq!(call(addr, &format!("/legacy/{i}"), None).await, 502);
    }
    assert_eq!(call(addr, "/nowhere", None).await, 404);
}

async fn check_counts(admin: SocketAddr, source: &str) {
    let by_api = rows_of(admin, "api", TRAFFIC).await;
    assert_eq!(by_api["source"], source);
    assert_eq!(counts(row(&by_api, "api", Some("orders"))), [10, 2, 0, 2, 0], "{by_api}");
    assert_eq!(counts(row(&by_api, "api", Some("catalog"))), [4, 0, 0, 0, 0]);
    assert_eq!(counts(row(&by_api, "api", Some("legacy"))), [2, 2, 0, 0, 2]);
    assert_eq!(counts(row(&by_api, "api", Some(""))), [1, 1, 1, 0, 0], "unrouted");
    let orders = row(&by_api, "api", Some("orders"));
    assert_eq!(orders["status"]["2xx"], 8);
    assert_eq!(orders["status"]["4xx"], 2);
    assert!(orders["bytes_sent"].as_u64().expect("bytes") > 8 * 10, "{orders}");
    let lat = |q: &str| orders["latency_ms"][q].as_f64().unwrap_or_else(|| panic!("{q} in {orders}"));
    assert!(0.0 < lat("p50") && lat("p50") <= lat("p95") && lat("p95") <= lat("p99") && lat("p99") < 2000.0);

    let by_op = rows_of(admin, "operation", TRAFFIC).await;
    let op = |name: &str| {
        by_op["rows"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["api"] == "orders" && r["operation"] == name))
            .map(counts)
            .unwrap_or_else(|| panic!("no orders/{name}: {by_op}"))
    };
    assert_eq!(op("list"), [5, 0, 0, 0, 0]);
    assert_eq!(op("get"), [5, 2, 0, 2, 0]);

    let by_sub = rows_of(admin, "subscription", TRAFFIC).await;
    assert_eq!(counts(row(&by_sub, "subscription", Some("web"))), [8, 0, 0, 0, 0], "{by_sub}");
    assert_eq!(counts(row(&by_sub, "subscription", None)), [9, 5, 1, 2, 2]);
    let by_product = rows_of(admin, "product", TRAFFIC).await;
    assert_eq!(counts(row(&by_product, "product", Some("starter"))), [8, 0, 0, 0, 0]);
}

/// The whole story on one store: traffic, exact counts, the admin API's errors, a restart.
async fn known_traffic(store_yaml: &str, store_cfg: &StoreConfig, dir: &Path) {
    let b = backend().await;
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
    let path = dir.join("gatehouse.yaml");
    std::fs::write(&path, config(store_yaml, b.addr, dead)).expect("write config");
    let store = Store::open(store_cfg, dir).await.expect("open the store (is PostgreSQL running?)");
    let (key, _) = subscribe(&store, "web", "starter").await;

    let (gw, addr, admin) = start(&path).await;
    traffic(addr, &key).await;
    check_counts(admin, "store").await;

    // The admin token is needed; bad parameters are named.
    assert_eq!(analytics(admin, "?by=api", None).await.0, 401);
    let (status, p) = analytics(admin, "?by=host", Some(TOKEN)).await;
    assert_eq!(status, 400);
    assert_eq!(p["type"], "urn:gatehouse:error:analytics-parameter");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("`by`")), "{p}");
    let (status, p) = analytics(admin, "?from=1750000000&to=1740000000", Some(TOKEN)).await;
    assert!(status == 400 && p["detail"].as_str().is_some_and(|d| d.contains("`from`")), "{p}");
    // A time series: per-minute rows add up to the same totals.
    let (status, per_minute) = analytics(admin, "?by=api&interval=minute", Some(TOKEN)).await;
    assert_eq!((status, total(&per_minute)), (200, TRAFFIC), "{per_minute}");

    // Shutdown writes the current minute; a new process reads the history from the store.
    gw.shutdown().await;
    let mut rows = Vec::new();
    store
        .scan_aggregates(0, i64::MAX, Some("gw-test"), |r| {
            rows.push(r);
            Ok(())
        })
        .await
        .expect("scan");
    assert_eq!(rows.iter().map(|r| r.requests).sum::<i64>(), TRAFFIC as i64, "{rows:?}");
    assert!(rows.iter().any(|r| r.api == "legacy" && r.layer == "backend" && r.status_class == 5));
    let (gw, _, admin) = start(&path).await;
    check_counts(admin, "store").await;
    gw.shutdown().await;
    store.close().await;
}

#[tokio::test]
async fn analytics_count_known_traffic_in_sqlite_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = StoreConfig { url: "sqlite://analytics.db".into(), ..StoreConfig::default() };
    known_traffic("url: \"sqlite://analytics.db\"", &cfg, dir.path()).await;
}

async fn drop_schema(schema: &str) {
    let opts: sqlx::postgres::PgConnectOptions = pg_url().parse().expect("pg url");
    let mut conn = sqlx::ConnectOptions::connect(&opts).await.expect("PostgreSQL is required");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).execute(&mut conn).await.expect("drop");
}

/// Runs `f` with a fresh schema name, dropping the schema afterwards whatever happened.
async fn with_schema<F: std::future::Future<Output = ()>>(tag: &str, f: impl FnOnce(String) -> F) {
    let schema = format!("gh_analytics_{tag}_{}", std::process::id());
    let result = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(f(schema.clone()))).await;
    drop_schema(&schema).await;
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[tokio::test]
async fn analytics_count_known_traffic_in_postgres_and_survive_a_restart() {
    with_schema("known", |schema| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StoreConfig { url: pg_url(), schema: Some(schema.clone()), ..StoreConfig::default() };
        known_traffic(&format!("url: \"{}\", schema: {schema}", pg_url()), &cfg, dir.path()).await;
    })
    .await;
}

/// A loopback TCP forwarder to PostgreSQL that can be cut (every connection closed, new ones
/// refused at once) and restored.
struct Forwarder {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<parking_lot::Mutex<CancellationToken>>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(target: (String, u16)) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(parking_lot::Mutex::new(CancellationToken::new()));
        let (up2, conns2) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is closed at once
                }
                let cut = conns2.lock().clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect((target.0.as_str(), target.1)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Forwarder { addr, up, conns, task }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let mut token = self.conns.lock();
        token.cancel();
        *token = CancellationToken::new();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
        self.conns.lock().cancel();
    }
}

/// `url` with its host and port replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@")).unwrap_or_default();
    format!("{scheme}://{user}{addr}{tail}")
}

async fn metric(admin: SocketAddr, name: &str) -> u64 {
    let got = get(&format!("http://{admin}/metrics")).await;
    got.text()
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test]
async fn a_store_outage_never_slows_requests_and_its_analytics_arrive_later() {
    with_schema("outage", |schema| async move {
        let pg: sqlx::postgres::PgConnectOptions = pg_url().parse().expect("pg url");
        let fwd = Forwarder::start((pg.get_host().to_owned(), pg.get_port())).await;
        let via = through(&pg_url(), fwd.addr);
        let b = backend().await;
        let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gatehouse.yaml");
        let store = format!("url: \"{via}\", schema: {schema}");
        std::fs::write(&path, config(&store, b.addr, dead)).expect("write config");
        let (gw, addr, admin) = start(&path).await;

        fwd.cut();
        let started = Instant::now();
        for i in 0..20 {
            let t = Instant::now();
            assert_eq!(call(addr, &format!("/catalog/{i}"), None).await, 200);
            assert!(t.elapsed() < Duration::from_millis(500), "request {i} took {:?} during the outage", t.elapsed());
        }
        // The minute of that traffic ends and a write fails; requests stay prompt meanwhile.
        let deadline = Instant::now() + Duration::from_secs(90);
        while metric(admin, "gatehouse_analytics_write_failures_total").await == 0 {
            assert!(Instant::now() < deadline, "no write was attempted during the outage");
            let t = Instant::now();
            assert_eq!(call(addr, "/catalog/more", None).await, 200);
            assert!(t.elapsed() < Duration::from_millis(500), "a request took {:?} during the outage", t.elapsed());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let during = metric(admin, "gatehouse_analytics_rows_written_total").await;
        assert_eq!(during, 0, "nothing can be written while the store is cut");
        assert!(started.elapsed() < Duration::from_secs(120));

        fwd.restore();
        let cfg = StoreConfig { url: pg_url(), schema: Some(schema.clone()), ..StoreConfig::default() };
        let direct = Store::open(&cfg, dir.path()).await.expect("open PostgreSQL directly");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut catalog = 0;
            direct
                .scan_aggregates(0, i64::MAX, Some("gw-test"), |r| {
                    if r.api == "catalog" {
                        catalog += r.requests;
                    }
                    Ok(())
                })
                .await
                .expect("scan");
            // The 20 requests sent during the outage (later ones may still be in this minute).
            if catalog >= 20 {
                break;
            }
            assert!(Instant::now() < deadline, "the outage's analytics never arrived ({catalog} of 20)");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(metric(admin, "gatehouse_analytics_rows_written_total").await > 0);
        direct.close().await;
        gw.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn without_a_store_analytics_are_served_from_memory() {
    let b = backend().await;
    let yaml = format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
admin: {{ bind: "127.0.0.1:0", token: "{TOKEN}" }}
edge: {{ access_log: {{ format: off }} }}
telemetry: {{ metrics: false, analytics: {{ flush_interval: 100ms }} }}
backends:
  b: {{ servers: [ {{ url: "http://{}" }} ] }}
apis:
  catalog: {{ path: /catalog, backend: b }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    assert!(g.gw.store().is_none());
    let admin = g.gw.admin_addr().await.expect("admin");
    for i in 0..6 {
        assert_eq!(call(g.addr, &format!("/catalog/{i}"), None).await, 200);
    }
    assert_eq!(call(g.addr, "/elsewhere", None).await, 404);
    // Several flushes pass: finished minutes move to the in-memory history and still count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v = rows_of(admin, "api", 7).await;
    assert_eq!(v["source"], "memory");
    assert_eq!(counts(row(&v, "api", Some("catalog"))), [6, 0, 0, 0, 0], "{v}");
    assert_eq!(counts(row(&v, "api", Some(""))), [1, 1, 1, 0, 0]);
    // Metrics off does not turn analytics off; `enabled: false` does (after a reload).
    let off = yaml.replace("flush_interval: 100ms", "enabled: false");
    g.reload_with(&off).await.expect("reload");
    assert_eq!(call(g.addr, "/catalog/x", None).await, 200);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(total(&rows_of(admin, "api", 7).await), 7, "the history stays, nothing new is counted");
    g.gw.shutdown().await;
}
