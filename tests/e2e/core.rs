//! The basic proxy path: routing, forwarding headers, gateway answers, layered errors.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_forwarding_headers_and_untouched_authorization() {
    let b = backend().await;
    let g = gateway(&simple_config(b.addr, "", "")).await;
    // Inner spacing is kept byte for byte; surrounding whitespace is not part of a field value (RFC 9110 §5.5).
    let auth = "Bearer  eyJhbGciOiJSUzI1NiJ9.e30.sig";
    let req = Request::get(g.url("/api/orders/7?x=1&y=%20"))
        .header("authorization", auth)
        .header("x-forwarded-for", "6.6.6.6")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .body(Full::default())
        .expect("req");
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.headers["x-backend"], "yes");
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.uri, "/orders/7?x=1&y=%20");
    assert_eq!(s.headers["authorization"].as_bytes(), auth.as_bytes());
    assert_eq!(s.headers["host"], g.addr.to_string(), "{:?}", s.headers);
    assert_eq!(s.headers["x-forwarded-for"], "127.0.0.1", "an untrusted client's X-Forwarded-For is replaced");
    assert_eq!(s.headers["x-forwarded-proto"], "http");
    assert_eq!(s.headers["x-forwarded-host"], g.addr.to_string());
    assert_eq!(s.headers["forwarded"], format!("for=127.0.0.1;proto=http;host=\"{}\"", g.addr));
    assert_eq!(s.headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let rid = got.headers["x-request-id"].to_str().expect("ascii");
    assert_eq!(rid.len(), 32);
    assert_eq!(s.headers["x-request-id"], rid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_and_edge_errors() {
    let b = backend().await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends: {{ b: {{ servers: [ {{ url: "http://{}" }} ] }} }}
apis:
  hello:
    path: /hello
    operations:
      - id: hi
        method: GET
        template: /
        policies:
          inbound:
            - return-response: {{ status: 201, headers: {{ content-type: text/plain }}, body: "hi there" }}
  orders:
    path: /orders
    backend: b
    operations:
      - {{ id: get-order, method: GET, template: "/{{id}}" }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    let got = get(&g.url("/hello")).await;
    assert_eq!(got.status, 201);
    assert_eq!(got.text(), "hi there");
    assert_eq!(got.headers["content-type"], "text/plain");
    assert_eq!(b.count(), 0);

    let v = assert_problem(&get(&g.url("/nowhere")).await, 404, "edge");
    assert_eq!(v["type"], "urn:gatehouse:error:no-route");
    let got =
        send(&client(), Request::post(g.url("/orders/1")).body(Full::new(Bytes::from_static(b"x"))).expect("req"))
            .await;
    assert_problem(&got, 405, "edge");
    assert_eq!(got.headers["allow"], "GET, HEAD");
    let got = get(&g.url("/orders/1")).await;
    assert_eq!(got.status, 200);
    assert_eq!(b.requests()[0].uri, "/1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_say_backend() {
    // A port with nothing listening: bind, read the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let g = gateway(&simple_config(closed, "", "")).await;
    let got = get(&g.url("/api/x")).await;
    let v = assert_problem(&got, 502, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:backend-connect");
    let ps = got.headers["proxy-status"].to_str().expect("ascii");
    assert!(ps.starts_with("gatehouse; error=connection_refused; next-hop="), "{ps}");

    // The backend's own 500 passes through untouched.
    let b = backend_with(status_handler(500), false).await;
    let g = gateway(&simple_config(b.addr, "", "")).await;
    let got = get(&g.url("/api/x")).await;
    assert_eq!(got.status, 500);
    assert_eq!(got.text(), "backend error body");
    assert!(!got.headers.contains_key("proxy-status"));
    let lines = g.log_lines().await;
    let last: serde_json::Value = serde_json::from_str(lines.last().expect("a log line")).expect("json");
    assert_eq!(last["layer"], "backend");
    assert_eq!(last["upstream_status"], 500);
    assert_eq!(last["api"], "api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_are_believed_and_hop_by_hop_headers_dropped() {
    let b = backend().await;
    let g = gateway(&simple_config(b.addr, "", "  trusted_proxies: [ \"127.0.0.1/32\" ]")).await;
    let req = Request::get(g.url("/api/x"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .header("x-request-id", "apache-unique-id-123")
        .header("connection", "keep-alive, X-Secret-Hop")
        .header("x-secret-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .body(Full::default())
        .expect("req");
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["x-request-id"], "apache-unique-id-123", "a trusted proxy's request id is kept");
    let s = &b.requests()[0];
    assert_eq!(s.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(s.headers["x-forwarded-proto"], "https");
    assert_eq!(
        s.headers["forwarded"],
        format!("for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=\"{}\"", g.addr)
    );
    assert_eq!(s.headers["x-request-id"], "apache-unique-id-123");
    for h in ["x-secret-hop", "keep-alive", "te"] {
        assert!(!s.headers.contains_key(h), "{h} reached the backend");
    }
    // The log carries the real client address, taken from the trusted X-Forwarded-For.
    let lines = g.log_lines().await;
    let last: serde_json::Value = serde_json::from_str(lines.last().expect("a log line")).expect("json");
    assert_eq!(last["client_ip"], "203.0.113.7");
    assert_eq!(last["request_id"], "apache-unique-id-123");
}
