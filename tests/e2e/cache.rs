//! The response cache (`cache-lookup` / `cache-store`) and the value cache through a running
//! gateway: hits answered without the backend, with `Age` and `Cache-Status`; what varies the key;
//! RFC 9111 rules (no-store, private, max-age, request no-cache); methods that are never cached;
//! config errors; and entries shared by two gateways through the real Redis at 127.0.0.1:6379
//! (these tests fail, not skip, without it), or served as misses while Redis is down.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use crate::redis_support::{self, cleanup, prefix, TcpCut, REDIS};
use crate::support::*;

/// A backend whose body says how many requests it has answered (`n=3 GET /api/x`), and whose
/// answer headers depend on the path: `/nostore`, `/private`, `/short` (max-age=1), `/cookie`,
/// `/lang` (Vary: Accept-Language), `/big` (1.5 MiB).
async fn counting_backend() -> Backend {
    let n = Arc::new(AtomicUsize::new(0));
    let handler: Handler = Arc::new(move |s: &Seen| {
        let i = n.fetch_add(1, Ordering::SeqCst) + 1;
        let mut body = format!("n={i} {} {}", s.method, s.uri);
        if s.uri.contains("/big") {
            // Over cache-store's default max_body (1 MiB).
            body.push_str(&"x".repeat(3 << 19));
        }
        let mut r = Response::new(Full::new(Bytes::from(body)));
        let h = r.headers_mut();
        h.insert("content-type", "text/plain".parse().expect("hv"));
        let path = s.uri.split('?').next().unwrap_or("");
        let set = |h: &mut http::HeaderMap, name: &'static str, v: &'static str| {
            h.insert(name, v.parse().expect("hv"));
        };
        match path.rsplit('/').next().unwrap_or("") {
            "nostore" => set(h, "cache-control", "no-store"),
            "private" => set(h, "cache-control", "private, max-age=60"),
            "short" => set(h, "cache-control", "max-age=1"),
            "cookie" => set(h, "set-cookie", "session=1"),
            "lang" => set(h, "vary", "Accept-Language"),
            _ => {}
        }
        r
    });
    backend_with(handler, false).await
}

fn config(backend: SocketAddr, api: &str, lookup: &str, extra: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
admin: {{ bind: "127.0.0.1:0", token: "cache-test-admin-token" }}
backends:
  b:
    servers: [ {{ url: "http://{backend}" }} ]
{extra}
apis:
  {api}:
    path: /{api}
    backend: b
    policies:
      inbound:
        - cache-lookup: {lookup}
      outbound:
        - cache-store: {{ duration: 60s }}
"#
    )
}

async fn call(g: &TestGateway, method: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::builder().method(method).uri(g.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send(&client(), req.body(Full::default()).expect("request")).await
}

fn cache_status(got: &Got) -> String {
    got.headers.get("cache-status").map(|v| v.to_str().expect("ascii").to_owned()).unwrap_or_default()
}

fn age(got: &Got) -> u64 {
    got.headers.get("age").expect("Age on a hit").to_str().expect("ascii").parse().expect("seconds")
}

#[tokio::test]
async fn a_second_get_is_a_hit_with_a_growing_age_and_survives_a_reload() {
    let b = counting_backend().await;
    let yaml = config(b.addr, "cached", "{ caching_type: internal }", "");
    let g = gateway(&yaml).await;

    let first = call(&g, "GET", "/cached/items?b=2&a=1", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(cache_status(&first), "gatehouse; fwd=uri-miss; stored");
    assert!(first.headers.get("age").is_none());
    let second = call(&g, "GET", "/cached/items?a=1&b=2", &[]).await;
    assert_eq!(b.count(), 1, "the second GET (query in another order) did not reach the backend");
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers["content-type"], "text/plain");
    assert!(cache_status(&second).starts_with("gatehouse; hit; ttl="), "{}", cache_status(&second));
    assert!(age(&second) <= 1);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let third = call(&g, "GET", "/cached/items?a=1&b=2", &[]).await;
    assert!(age(&third) >= 1 && age(&third) > age(&second), "Age grows: {} then {}", age(&second), age(&third));
    // HEAD is answered from the GET entry, without a body.
    let head = call(&g, "HEAD", "/cached/items?a=1&b=2", &[]).await;
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], first.body.len().to_string().as_str());
    assert!(cache_status(&head).contains("hit"));
    // A reload keeps the in-memory cache.
    g.reload_with(&yaml).await.expect("reload");
    assert_eq!(call(&g, "GET", "/cached/items?a=1&b=2", &[]).await.body, first.body);
    assert_eq!(b.count(), 1);

    let admin = g.gw.admin_addr().await.expect("admin");
    let metrics = get(&format!("http://{admin}/metrics")).await.text();
    assert!(metrics.contains("gatehouse_response_cache_lookups_total{api=\"cached\",result=\"hit\"} 4"), "{metrics}");
    assert!(metrics.contains("gatehouse_response_cache_lookups_total{api=\"cached\",result=\"miss\"} 1"), "{metrics}");
}

#[tokio::test]
async fn headers_query_parameters_and_response_vary_keep_entries_apart() {
    let b = counting_backend().await;
    let lookup = "{ vary_by_headers: [X-Tenant], vary_by_query_parameters: [page], caching_type: internal }";
    let g = gateway(&config(b.addr, "varied", lookup, "")).await;
    let a1 = call(&g, "GET", "/varied/list?page=1", &[("x-tenant", "a")]).await;
    let b1 = call(&g, "GET", "/varied/list?page=1", &[("x-tenant", "b")]).await;
    assert_ne!(a1.body, b1.body);
    let again = call(&g, "GET", "/varied/list?page=1&utm=mail", &[("x-tenant", "a")]).await;
    assert_eq!(again.body, a1.body, "an unnamed query parameter does not vary the key");
    let a2 = call(&g, "GET", "/varied/list?page=2", &[("x-tenant", "a")]).await;
    assert_ne!(a2.body, a1.body);
    assert_eq!(b.count(), 3);

    // The backend's Vary: another Accept-Language is a miss, the same one a hit.
    let en = call(&g, "GET", "/varied/lang", &[("accept-language", "en")]).await;
    assert_eq!(call(&g, "GET", "/varied/lang", &[("accept-language", "en")]).await.body, en.body);
    let de = call(&g, "GET", "/varied/lang", &[("accept-language", "de")]).await;
    assert_ne!(de.body, en.body);
    assert_eq!(b.count(), 5);
}

#[tokio::test]
async fn responses_that_forbid_storing_are_not_stored_and_max_age_shortens_the_entry() {
    let b = counting_backend().await;
    let g = gateway(&config(b.addr, "rules", "{ caching_type: internal }", "")).await;
    for path in ["/rules/nostore", "/rules/private", "/rules/cookie", "/rules/big"] {
        let before = b.count();
        let first = call(&g, "GET", path, &[]).await;
        let second = call(&g, "GET", path, &[]).await;
        assert_eq!(b.count(), before + 2, "{path} was served from the cache");
        assert_ne!(first.body, second.body);
        assert!(cache_status(&second).contains("detail="), "{path}: {}", cache_status(&second));
        assert_eq!(first.body.len(), second.body.len(), "{path}: the body arrives whole");
    }
    // max-age=1 under a 60s duration: a hit at once, a miss after a second.
    let first = call(&g, "GET", "/rules/short", &[]).await;
    assert_eq!(call(&g, "GET", "/rules/short", &[]).await.body, first.body);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(call(&g, "GET", "/rules/short", &[]).await.body, first.body);
}

#[tokio::test]
async fn request_no_cache_refreshes_no_store_bypasses_and_post_is_never_cached() {
    let b = counting_backend().await;
    let g = gateway(&config(b.addr, "fresh", "{ caching_type: internal }", "")).await;
    let first = call(&g, "GET", "/fresh/x", &[]).await;
    let refreshed = call(&g, "GET", "/fresh/x", &[("cache-control", "no-cache")]).await;
    assert_ne!(refreshed.body, first.body);
    assert_eq!(cache_status(&refreshed), "gatehouse; fwd=request; stored");
    assert_eq!(call(&g, "GET", "/fresh/x", &[]).await.body, refreshed.body, "no-cache stored the fresh answer");
    let bypass = call(&g, "GET", "/fresh/x", &[("pragma", "no-cache"), ("cache-control", "no-store")]).await;
    assert_ne!(bypass.body, refreshed.body);
    assert_eq!(cache_status(&bypass), "gatehouse; fwd=request");
    assert_eq!(call(&g, "GET", "/fresh/x", &[]).await.body, refreshed.body, "no-store stored nothing");
    assert_eq!(b.count(), 3);

    let p1 = call(&g, "POST", "/fresh/x", &[]).await;
    let p2 = call(&g, "POST", "/fresh/x", &[]).await;
    assert_ne!(p1.body, p2.body);
    assert_eq!(cache_status(&p2), "gatehouse; fwd=method");
    assert_eq!(b.count(), 5);
}

#[tokio::test]
async fn vary_by_subscription_gives_each_subscription_its_entry() {
    let b = counting_backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gatehouse.db");
    let extra = format!(
        "store: {{ url: \"sqlite://{}\", poll_interval: 200ms }}\nproducts:\n  starter: {{ subscription_required: true, apis: [ subs ] }}",
        db.display()
    );
    let g = gateway(&config(b.addr, "subs", "{ vary_by_subscription: true, caching_type: internal }", &extra)).await;
    let store = g.gw.store().expect("store").clone();
    let mut keys = Vec::new();
    for name in ["one", "two"] {
        keys.push(subscribe(&store, name, "starter").await.0);
    }
    let header = "Ocp-Apim-Subscription-Key";
    // The gateway sees new subscriptions within the store's poll interval.
    let until_known = |key: String| {
        let g = &g;
        async move {
            for _ in 0..50 {
                let got = call(g, "GET", "/subs/x", &[(header, &key)]).await;
                if got.status != 401 {
                    return got;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("subscription never became known");
        }
    };
    let first = until_known(keys[0].clone()).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let other = until_known(keys[1].clone()).await;
    assert_ne!(other.body, first.body, "another subscription has its own entry");
    assert_eq!(call(&g, "GET", "/subs/x", &[(header, &keys[0])]).await.body, first.body);
    assert_eq!(call(&g, "GET", "/subs/x", &[(header, &keys[1])]).await.body, other.body);
    assert_eq!(b.count(), 2);
}

#[tokio::test]
async fn cached_values_reach_a_header_and_can_be_removed() {
    let b = backend().await;
    let yaml = format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
backends:
  b:
    servers: [ {{ url: "http://{}" }} ]
apis:
  remember:
    path: /remember
    backend: b
    policies:
      inbound:
        - cache-lookup-value: {{ key: "greeting-{{request.query.u}}", variable_name: greeting, default_value: none }}
        - set-header: {{ name: X-Greeting, value: "{{var.greeting}}" }}
        - cache-store-value: {{ key: "greeting-{{request.query.u}}", value: "hello {{request.query.u}}", duration: 60s }}
  forget:
    path: /forget
    policies:
      inbound:
        - cache-remove-value: {{ key: "greeting-{{request.query.u}}" }}
        - return-response: {{ status: 204 }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    let greeting = |n: usize| b.requests()[n].headers["x-greeting"].to_str().expect("ascii").to_owned();
    call(&g, "GET", "/remember/x?u=bob", &[]).await;
    assert_eq!(greeting(0), "none");
    call(&g, "GET", "/remember/x?u=bob", &[]).await;
    assert_eq!(greeting(1), "hello bob");
    call(&g, "GET", "/remember/x?u=eve", &[]).await;
    assert_eq!(greeting(2), "none");
    assert_eq!(call(&g, "GET", "/forget?u=bob", &[]).await.status, 204);
    call(&g, "GET", "/remember/x?u=bob", &[]).await;
    assert_eq!(greeting(3), "none");
}

#[test]
fn bad_cache_config_is_reported_with_its_location() {
    let yaml = r#"
listeners: [ { name: main, bind: "127.0.0.1:0" } ]
backends: { b: { servers: [ { url: "http://127.0.0.1:9" } ] } }
cache: { memory: lots }
apis:
  a:
    path: /a
    backend: b
    policies:
      inbound:
        - cache-lookup-value: { key: "{var.missing}", variable_name: v }
        - cache-store-value: { key: k, value: v, duration: 0s }
        - cache-lookup: { caching_type: external }
      outbound:
        - cache-store: { duration: -5s }
"#;
    let errors = gatehouse::snapshot::compile_str("g.yaml", yaml, std::path::Path::new(".")).err().expect("errors");
    let text: Vec<String> = errors.iter().map(|e| format!("{}:{}: {}: {}", e.line, e.col, e.path, e.message)).collect();
    let has = |path: &str, msg: &str| text.iter().any(|t| t.contains(&format!(" {path}: ")) && t.contains(msg));
    let p = "apis.a.policies";
    assert!(has("cache.memory", ""), "{text:#?}");
    assert!(has(&format!("{p}.inbound[0].cache-lookup-value.key"), "`var.missing` is not set"), "{text:#?}");
    assert!(has(&format!("{p}.inbound[1].cache-store-value.duration"), "at least 1ms"), "{text:#?}");
    assert!(has(&format!("{p}.inbound[2].cache-lookup.caching_type"), "needs `cluster.redis`"), "{text:#?}");
    assert!(has(&format!("{p}.outbound[0].cache-store.duration"), ""), "{text:#?}");
    assert!(errors.iter().all(|e| e.line > 0), "every error has a line: {errors:#?}");

    // cache-store without any cache-lookup.
    let yaml = yaml
        .replace("- cache-lookup: { caching_type: external }", "- set-header: { name: X-A, value: a }")
        .replace("-5s", "5s");
    let errors = gatehouse::snapshot::compile_str("g.yaml", &yaml, std::path::Path::new(".")).err().expect("errors");
    assert!(
        errors
            .iter()
            .any(|e| e.path == format!("{p}.outbound[0].cache-store") && e.message.contains("no `cache-lookup`")),
        "{errors:#?}"
    );
}

// ---- shared through Redis ------------------------------------------------------------------

fn cluster(url: &str, prefix: &str) -> String {
    format!("cluster: {{ redis: \"{url}\", key_prefix: \"{prefix}\", redis_timeout: 200ms }}")
}

#[tokio::test]
async fn two_gateways_share_entries_through_redis() {
    let b = counting_backend().await;
    let p = prefix("cache-shared");
    let yaml = config(b.addr, "shared", "{ caching_type: external }", &cluster(REDIS, &p));
    let (g1, g2) = (gateway(&yaml).await, gateway(&yaml).await);
    let first = call(&g1, "GET", "/shared/item", &[]).await;
    assert_eq!(cache_status(&first), "gatehouse; fwd=uri-miss; stored");
    // The entry is written in the background: wait until Redis has it.
    let mut c = redis_support::conn().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query_async(&mut c).await.expect("KEYS");
        if !keys.is_empty() {
            let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut c).await.expect("PTTL");
            assert!(ttl > 50_000 && ttl <= 60_000, "the entry expires with the duration: {ttl} ms");
            break;
        }
        assert!(Instant::now() < deadline, "the entry never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = call(&g2, "GET", "/shared/item", &[]).await;
    assert_eq!(second.body, first.body, "the other gateway served the shared entry");
    assert!(cache_status(&second).starts_with("gatehouse; hit"));
    assert!(second.headers.contains_key("age"));
    assert_eq!(b.count(), 1);
    cleanup(&p).await;
}

#[tokio::test]
async fn with_redis_down_requests_are_misses_and_never_hang() {
    let b = counting_backend().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let p = prefix("cache-down");
    let down = format!("redis://{closed}");
    let external = gateway(&config(b.addr, "down", "{ caching_type: external }", &cluster(&down, &p))).await;
    for _ in 0..3 {
        let t = Instant::now();
        let got = call(&external, "GET", "/down/x", &[]).await;
        assert_eq!(got.status, 200);
        assert!(cache_status(&got).starts_with("gatehouse; fwd=uri-miss"), "{}", cache_status(&got));
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    }
    assert_eq!(b.count(), 3, "external: every request is a miss");

    // prefer-external: memory stands in while Redis fails.
    let before = b.count();
    let prefer = gateway(&config(b.addr, "down", "{ caching_type: prefer-external }", &cluster(&down, &p))).await;
    let first = call(&prefer, "GET", "/down/y", &[]).await;
    // The store is attempted in the background (bounded by redis_timeout), then falls back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&prefer, "GET", "/down/y", &[]).await.body, first.body);
    assert_eq!(b.count(), before + 1);

    // A Redis that accepts and never answers: bounded by redis_timeout.
    let hole = TcpCut::start().await;
    hole.blackhole();
    let stuck = gateway(&config(b.addr, "down", "{ caching_type: external }", &cluster(&hole.url(), &p))).await;
    let t = Instant::now();
    assert_eq!(call(&stuck, "GET", "/down/z", &[]).await.status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
}
