//! Transformation and control policies through a real gateway in front of recording backends:
//! what the backend receives after inbound policies, what the client receives after outbound
//! ones, the backend-call settings, answers at the gateway (mock-response, cors, check-header,
//! ip-filter) and located config errors.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use crate::support::*;

/// `yaml` with `B1`/`B2` replaced by the backends' addresses.
fn with_backends(yaml: &str, b1: &Backend, b2: Option<&Backend>) -> String {
    let y = yaml.replace("B1", &b1.addr.to_string());
    match b2 {
        Some(b2) => y.replace("B2", &b2.addr.to_string()),
        None => y,
    }
}

fn json_handler(body: &'static str) -> Handler {
    Arc::new(move |_s: &Seen| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        r.headers_mut().insert("content-type", "application/json".parse().expect("hv"));
        r.headers_mut().insert("x-internal", "secret".parse().expect("hv"));
        r
    })
}

#[tokio::test]
async fn inbound_policies_shape_what_the_backend_receives() {
    let b = backend().await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://B1/base" } ] }
apis:
  items:
    path: /items
    backend: b
    operations:
      - id: get-item
        method: GET
        template: "/{id}"
        policies:
          inbound:
            - set-variable: { name: who, value: "{request.header.X-User ?? 'anonymous'}" }
            - set-header: { name: X-Caller, value: "{var.who} via {api.name}/{operation.id}" }
            - set-header: { name: X-Drop, exists_action: delete }
            - set-header: { name: X-Keep, value: replaced, exists_action: skip }
            - set-header: { name: X-Multi, values: [ "a", "{id}" ] }
            - rewrite-uri: { template: "/v2/things/{id}?from={request.header.X-User}" }
            - set-query-parameter: { name: api-version, value: "2024-01-01" }
            - set-query-parameter: { name: debug, exists_action: delete }
            - set-method: POST
            - set-body: { value: '{{"item": "{id}", "by": "{var.who}"}}', content_type: application/json }
"#,
        &b,
        None,
    );
    let g = gateway(&yaml).await;
    let req = Request::get(g.url("/items/42?keep=1&debug=true"))
        .header("x-user", "a/b?c")
        .header("x-drop", "1")
        .header("x-keep", "original")
        .body(Full::default())
        .expect("req");
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = b.requests().pop().expect("backend called");
    assert_eq!(seen.method, http::Method::POST);
    // The header value is encoded so it cannot add path segments or a query of its own; the
    // client's other parameters are kept (copy_unmatched_params), `debug` is removed.
    assert_eq!(seen.uri, "/base/v2/things/42?from=a%2Fb%3Fc&keep=1&api-version=2024-01-01");
    assert_eq!(seen.headers["x-caller"], "a/b?c via items/get-item");
    assert!(seen.headers.get("x-drop").is_none());
    assert_eq!(seen.headers["x-keep"], "original");
    assert_eq!(seen.headers["x-multi"], "a,42");
    assert_eq!(seen.headers["content-type"], "application/json");
    let body: serde_json::Value = serde_json::from_slice(&seen.body).expect("json body");
    assert_eq!(body, serde_json::json!({ "item": "42", "by": "a/b?c" }));
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string());
}

#[tokio::test]
async fn json_edits_and_find_and_replace_on_request_and_response() {
    let b = backend_with(
        json_handler(r#"{"id":7,"internal":{"host":"http://10.0.0.5"},"note":"see http://10.0.0.5/x"}"#),
        false,
    )
    .await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://B1" } ] }
apis:
  api:
    path: /api
    backend: b
    policies:
      inbound:
        - set-body: { json: { set: { "/owner/ip": "{request.ip}", "source": gateway }, remove: [ "/password" ] } }
        - find-and-replace: { from: "colour", to: "color" }
      outbound:
        - find-and-replace: { from: "http://10.0.0.5", to: "https://public.example" }
        - set-body: { json: { remove: [ "internal" ], set: { "/served_by": "{api.name}", "/status": "{response.status}" } } }
        - set-header: { name: X-Internal, exists_action: delete }
        - set-header: { name: X-Served-By, value: gatehouse }
"#,
        &b,
        None,
    );
    let g = gateway(&yaml).await;
    let req = Request::post(g.url("/api/x"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"password":"p","colour":"red"}"#)))
        .expect("req");
    let got = send(&client(), req).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = b.requests().pop().expect("backend called");
    let sent: serde_json::Value = serde_json::from_slice(&seen.body).expect("json");
    assert_eq!(sent, serde_json::json!({ "color": "red", "owner": { "ip": "127.0.0.1" }, "source": "gateway" }));
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string());

    let answer = got.json();
    assert_eq!(
        answer,
        serde_json::json!({ "id": 7, "note": "see https://public.example/x", "served_by": "api", "status": "200" })
    );
    assert_eq!(got.headers["content-length"], got.body.len().to_string());
    assert!(got.headers.get("x-internal").is_none());
    assert_eq!(got.headers["x-served-by"], "gatehouse");

    // A request body that is not JSON is the client's fault.
    let req = Request::post(g.url("/api/x")).body(Full::new(Bytes::from_static(b"<xml/>"))).expect("req");
    let v = assert_problem(&send(&client(), req).await, 400, "policy");
    assert_eq!(v["policy"], "set-body");
}

#[tokio::test]
async fn set_status_changes_code_and_reason() {
    let b = backend().await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://B1" } ] }
apis:
  api:
    path: /api
    backend: b
    policies:
      outbound:
        - choose:
            when:
              - condition: "response.status == 200 && request.query.hide == 'yes'"
                policies: [ { set-status: { code: 404, reason: Nothing Here } } ]
"#,
        &b,
        None,
    );
    let g = gateway(&yaml).await;
    let text =
        raw(g.addr, b"GET /api/a?hide=yes HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", Duration::from_secs(5))
            .await;
    assert!(text.starts_with("HTTP/1.1 404 Nothing Here\r\n"), "{text}");
    assert_eq!(get(&g.url("/api/a")).await.status, 200);
}

#[tokio::test]
async fn backend_section_picks_the_backend_its_deadline_and_retries() {
    let main = backend().await;
    let other = backend_with(status_handler(503), false).await;
    let slow = slow_backend(Duration::from_secs(3)).await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  main: { servers: [ { url: "http://B1" } ] }
  flaky: { servers: [ { url: "http://B2" } ] }
  slow: { servers: [ { url: "http://SLOW" } ] }
apis:
  api:
    path: /api
    backend: main
    policies:
      inbound:
        - choose:
            when:
              - condition: "request.header.X-Route == 'flaky'"
                policies: [ { set-backend-service: { backend_id: flaky } } ]
              - condition: "request.header.X-Route == 'slow'"
                policies: [ { set-backend-service: { backend_id: slow } } ]
      backend:
        - forward-request: { timeout_ms: 300 }
        - retry: { count: 2, interval: 0, statuses: [ 503 ] }
"#,
        &main,
        Some(&other),
    )
    .replace("SLOW", &slow.addr.to_string());
    let g = gateway(&yaml).await;
    let c = client();
    let routed = |r: &str| Request::get(g.url("/api/x")).header("x-route", r).body(Full::default()).expect("req");

    assert_eq!(send(&c, routed("main")).await.status, 200);
    assert_eq!((main.count(), other.count()), (1, 0));

    // Three attempts (1 + 2 retries), then the backend's own 503 goes out.
    let got = send(&c, routed("flaky")).await;
    assert_eq!(got.status, 503);
    assert_eq!(got.text(), "backend error body");
    assert_eq!(other.count(), 3);

    let started = std::time::Instant::now();
    let got = send(&c, routed("slow")).await;
    assert_problem(&got, 504, "backend");
    assert!(started.elapsed() < Duration::from_secs(3), "forward-request's timeout applies");
}

#[tokio::test]
async fn mock_response_answers_from_examples_without_a_backend() {
    let yaml = r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
apis:
  mocked:
    path: /mocked
    policies:
      inbound:
        - mock-response: {}
    operations:
      - id: get-order
        method: GET
        template: "/orders/{id}"
        examples:
          "200":
            application/json: { id: 7, status: shipped }
      - id: create-order
        method: POST
        template: "/orders"
        examples:
          "201": { text/plain: "created" }
      - id: inline
        method: GET
        template: "/inline"
        policies:
          inbound:
            - mock-response: { status_code: 202, example: "accepted" }
            - base
"#;
    let g = gateway(yaml).await;
    let got = get(&g.url("/mocked/orders/1")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.json(), serde_json::json!({ "id": 7, "status": "shipped" }));
    let got = send(&client(), Request::post(g.url("/mocked/orders")).body(Full::default()).expect("req")).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (201, "created"));
    let got = get(&g.url("/mocked/inline")).await;
    assert_eq!((got.status.as_u16(), got.text().as_str()), (202, "accepted"));
}

#[tokio::test]
async fn check_header_and_ip_filter_reject_with_their_problem() {
    let b = backend().await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://B1" } ] }
apis:
  checked:
    path: /checked
    backend: b
    policies:
      inbound:
        - check-header:
            name: X-Api-Version
            failed_check_httpcode: 400
            failed_check_error_message: "send X-Api-Version: 1 or 2"
            values: [ "1", "2" ]
  blocked:
    path: /blocked
    backend: b
    policies:
      inbound:
        - ip-filter: { action: forbid, addresses: [ "127.0.0.0/8", "::1" ] }
      on-error:
        - set-header: { name: X-Blocked, value: "yes" }
  allowed:
    path: /allowed
    backend: b
    policies:
      inbound:
        - ip-filter: { action: allow, addresses: [ "10.0.0.0/8" ], address_ranges: [ { from: 127.0.0.1, to: 127.0.0.1 } ] }
"#,
        &b,
        None,
    );
    let g = gateway(&yaml).await;
    let c = client();
    let versioned = |v: &str| Request::get(g.url("/checked/x")).header("x-api-version", v).body(Full::default());
    assert_eq!(send(&c, versioned("2").expect("req")).await.status, 200);
    let v = assert_problem(&send(&c, versioned("3").expect("req")).await, 400, "policy");
    assert_eq!(
        (v["policy"].as_str(), v["detail"].as_str()),
        (Some("check-header"), Some("send X-Api-Version: 1 or 2"))
    );
    assert_eq!(v["scope"], "api:checked");
    assert_problem(&get(&g.url("/checked/x")).await, 400, "policy");

    let got = get(&g.url("/blocked/x")).await;
    let v = assert_problem(&got, 403, "edge");
    assert_eq!((v["policy"].as_str(), v["scope"].as_str()), (Some("ip-filter"), Some("api:blocked")));
    assert_eq!(got.headers["x-blocked"], "yes", "on-error runs after an ip-filter refusal");

    assert_eq!(get(&g.url("/allowed/x")).await.status, 200);
    assert_eq!(b.count(), 2, "refused requests never reach the backend");
}

#[tokio::test]
async fn cors_preflight_is_answered_at_the_gateway() {
    // The backend's own Vary must survive the Vary: Origin that CORS adds.
    let b = backend_with(
        Arc::new(|_s: &Seen| {
            let mut r = Response::new(Full::new(Bytes::from_static(b"cart")));
            r.headers_mut().insert("vary", http::HeaderValue::from_static("Accept-Encoding"));
            r
        }),
        false,
    )
    .await;
    let yaml = with_backends(
        r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://B1" } ] }
apis:
  shop:
    path: /shop
    backend: b
    policies:
      inbound:
        - cors:
            allowed_origins: [ "https://app.example" ]
            allowed_methods: [ GET, PUT ]
            allowed_headers: [ content-type ]
            expose_headers: [ x-request-id ]
            allow_credentials: true
            preflight_result_max_age: 300
    operations:
      - { id: get-cart, method: GET, template: "/cart" }
  plain:
    path: /plain
    backend: b
    operations:
      - { id: get, method: GET, template: "/x" }
"#,
        &b,
        None,
    );
    let g = gateway(&yaml).await;
    let c = client();
    let preflight = |path: &str, origin: &str| {
        Request::options(g.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type")
            .body(Full::default())
            .expect("req")
    };
    // The operation only declares GET, yet the preflight is answered (not 405).
    let got = send(&c, preflight("/shop/cart", "https://app.example")).await;
    assert_eq!(got.status, 204, "{}", got.text());
    assert_eq!(got.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(got.headers["access-control-allow-methods"], "GET, PUT");
    assert_eq!(got.headers["access-control-allow-headers"], "content-type");
    assert_eq!(got.headers["access-control-allow-credentials"], "true");
    assert_eq!(got.headers["access-control-max-age"], "300");
    let got = send(&c, preflight("/shop/cart", "https://evil.example")).await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("access-control-allow-origin").is_none());
    assert_eq!(b.count(), 0, "preflights never reach the backend");

    let req = Request::get(g.url("/shop/cart")).header("origin", "https://app.example").body(Full::default());
    let got = send(&c, req.expect("req")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["access-control-allow-origin"], "https://app.example");
    assert_eq!(got.headers["access-control-expose-headers"], "x-request-id");
    let vary: Vec<&str> = got.headers.get_all("vary").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(vary, ["Accept-Encoding", "Origin"], "Vary is merged, not replaced");

    // Without a cors policy, OPTIONS on a GET-only operation is still 405.
    assert_problem(&send(&c, preflight("/plain/x", "https://app.example")).await, 405, "edge");
}

#[test]
fn policy_config_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
backends:
  b: { servers: [ { url: "http://127.0.0.1:9" } ] }
apis:
  a:
    path: /a
    backend: b
    policies:
      inbound:
        - set-header: { name: X-Tier, value: "{var.tier}" }
        - ip-filter: { action: allow, addresses: [ "10.0.0.0/8", "10.0.0.0/33" ] }
        - set-backend-service: { backend_id: nowhere }
        - rewrite-uri: { template: "/x/{idd}" }
        - choose: { when: [ { condition: "request.methd == 'GET'", policies: [] } ] }
      outbound:
        - forward-request: { timeout: 5 }
"#;
    let errors = match gatehouse::snapshot::compile_str("g.yaml", yaml, dir.path()) {
        Ok(_) => panic!("the config has errors"),
        Err(e) => e,
    };
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(
        has("g.yaml:12:46: apis.a.policies.inbound[0].set-header.value: `var.tier` is not set by any set-variable"),
        "{text:#?}"
    );
    assert!(
        has("g.yaml:13:66: apis.a.policies.inbound[1].ip-filter.addresses[1]: `10.0.0.0/33` is not an IP address"),
        "{text:#?}"
    );
    assert!(has("apis.a.policies.inbound[2].set-backend-service.backend_id: `nowhere` is not a backend"), "{text:#?}");
    assert!(has("apis.a.policies.inbound[3].rewrite-uri.template: unknown name `idd`"), "{text:#?}");
    assert!(has("apis.a.policies.inbound[4].choose.when[0].condition: unknown name `request.methd`"), "{text:#?}");
    assert!(
        has("apis.a.policies.outbound[0].forward-request: `forward-request` cannot run in `outbound`"),
        "{text:#?}"
    );
}
