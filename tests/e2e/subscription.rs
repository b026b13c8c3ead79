//! Subscription keys through the running gateway: products, keys in header or query, the key
//! never reaching the backend, suspension seen by the gateway without a restart, and product
//! policies between global and API.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::*;
use gatehouse::store::State;

fn config(backend: std::net::SocketAddr, db: &std::path::Path) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: json, path: "{{log}}" }}
store: {{ url: "sqlite://{}", poll_interval: 200ms }}
backends:
  b:
    servers: [ {{ url: "http://{backend}" }} ]
products:
  starter:
    subscription_required: true
    apis: [ orders ]
    policies:
      inbound:
        - set-header: {{ name: X-Product, value: "{{product.name}}/{{subscription.name}}" }}
apis:
  orders:
    path: /orders
    backend: b
  open:
    path: /open
    backend: b
"#,
        db.display()
    )
}

async fn call(url: &str, key: Option<&str>) -> Got {
    let mut req = Request::get(url);
    if let Some(k) = key {
        req = req.header("Ocp-Apim-Subscription-Key", k);
    }
    send(&client(), req.body(Full::new(Bytes::new())).expect("request")).await
}

#[tokio::test]
async fn keys_admit_callers_of_their_product_and_never_reach_the_backend() {
    let b = backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gatehouse.db");
    let g = gateway(&config(b.addr, &db)).await;
    let store = g.gw.store().expect("the gateway opened its store").clone();
    let (primary, secondary) = subscribe(&store, "acme", "starter").await;

    // Missing or unknown key: 401 from the policy layer; the backend sees nothing.
    let v = assert_problem(&call(&g.url("/orders/1"), None).await, 401, "policy");
    assert_eq!(v["policy"], "subscription");
    assert_problem(&call(&g.url("/orders/1"), Some("not-a-key-not-a-key-not-a-key")).await, 401, "policy");
    assert_eq!(b.count(), 0);

    // The new subscription is seen within the poll interval; both keys work.
    let first = g.url("/orders/1");
    let got = until_status(200, || call(&first, Some(&primary))).await;
    assert_eq!(got.status, 200, "primary key: {}", got.text());
    assert_eq!(call(&g.url("/orders/2"), Some(&secondary)).await.status, 200);
    let q = format!("/orders/3?a=1&subscription-key={primary}");
    assert_eq!(call(&g.url(&q), None).await.status, 200);

    let seen = b.requests();
    assert_eq!(seen.len(), 3);
    for r in &seen {
        assert!(!r.headers.contains_key("ocp-apim-subscription-key"), "the key header reaches the backend");
        assert!(!r.uri.contains(&primary), "the key reaches the backend in {}", r.uri);
        // Product-scope policy ran, and sees the caller.
        assert_eq!(r.headers["x-product"], "starter/acme");
    }
    assert_eq!(seen[2].uri, "/3?a=1");

    // An API in no product needs no key.
    assert_eq!(call(&g.url("/open/x"), None).await.status, 200);

    // Suspension: 403 without a restart.
    store.set_state("acme", State::Suspended).await.expect("suspend");
    let got = until_status(403, || call(&first, Some(&primary))).await;
    let v = assert_problem(&got, 403, "policy");
    assert_eq!(v["policy"], "subscription");

    // The access log names the product and subscription and never the key.
    let lines = g.log_lines().await;
    assert!(lines.iter().all(|l| !l.contains(&primary) && !l.contains(&secondary)), "a key reached the log");
    let ok: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("\"status\":200")).expect("a 200")).expect("json");
    assert_eq!(ok["product"], "starter");
    assert_eq!(ok["subscription"], "acme");
}

#[tokio::test]
async fn a_key_in_an_apis_own_query_parameter_never_reaches_the_log() {
    let b = backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("gatehouse.db");
    let yaml = config(b.addr, &db).replace("apis: [ orders ]", "apis: [ orders, custom ]").replace(
        "  open:\n",
        "  custom:\n    path: /custom\n    backend: b\n    subscription_key: { header: X-Key, query: api_key }\n  open:\n",
    );
    let g = gateway(&yaml).await;
    let store = g.gw.store().expect("the gateway opened its store").clone();
    let (primary, _) = subscribe(&store, "acme", "starter").await;
    let url = g.url(&format!("/custom/1?a=1&api_key={primary}&b=2"));
    let got = until_status(200, || call(&url, None)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(b.requests()[0].uri, "/1?a=1&b=2", "the key parameter is removed before the backend");
    let lines = g.log_lines().await;
    assert!(lines.iter().all(|l| !l.contains(&primary)), "the key reached the log: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("api_key=[redacted]")), "{lines:#?}");
}

#[tokio::test]
async fn in_process_quotas_survive_a_restart_through_the_store() {
    let b = backend().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("quota.db");
    let yaml = format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
store: {{ url: "sqlite://{}" }}
backends:
  b:
    servers: [ {{ url: "http://{}" }} ]
apis:
  metered:
    path: /metered
    backend: b
    policies:
      inbound:
        - quota-by-key: {{ counter_key: "{{request.header.X-Tenant}}", calls: 3, renewal_period: 30d }}
"#,
        db.display(),
        b.addr
    );
    let tenant = |url: String| async move {
        send(&client(), Request::get(url).header("X-Tenant", "t1").body(Full::new(Bytes::new())).expect("request"))
            .await
    };
    let g = gateway(&yaml).await;
    assert_eq!(tenant(g.url("/metered/a")).await.status, 200);
    assert_eq!(tenant(g.url("/metered/b")).await.status, 200);
    // A drain saves the counters; a new gateway on the same store continues from them.
    g.gw.shutdown().await;
    drop(g);

    let g = gateway(&yaml).await;
    assert_eq!(tenant(g.url("/metered/c")).await.status, 200, "the third call of three");
    let v = assert_problem(&tenant(g.url("/metered/d")).await, 403, "policy");
    assert_eq!(v["policy"], "quota-by-key");
    assert_eq!(b.count(), 3);
}
