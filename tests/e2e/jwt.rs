//! `validate-jwt`, `authorize` and `forward-identity` through the gateway, with tokens from a
//! real OpenID provider: panva/oidc-provider in `tests/oidc` (installed by `.ci/setup-oidc.sh`),
//! started per test on loopback, issuing JWT access tokens for client_credentials through
//! resource indicators. Key rotation, withdrawal and outages are done at the provider.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::oidc_support::{Idp, CLIENT_ID};
use crate::support::*;

fn header_kid(token: &str) -> String {
    let h = token.split('.').next().expect("header");
    let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).expect("b64")).expect("json");
    v["kid"].as_str().expect("kid").to_owned()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn payload(token: &str) -> Value {
    let p = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("b64")).expect("json")
}

/// One API `/orders` behind `validate-jwt` for the provider; `provider_extra` is added to the
/// provider's map, `api_extra` to the API's inbound list after validate-jwt.
fn config(idp: &Idp, backend: std::net::SocketAddr, provider_extra: &str, api_extra: &str) -> String {
    format!(
        r#"
listeners:
  - {{ name: main, bind: "127.0.0.1:0" }}
edge:
  access_log: {{ format: json, path: "{{log}}" }}
identity_providers:
  corp: {{ openid_configuration: "{discovery}"{provider_extra} }}
backends:
  b:
    servers: [ {{ url: "http://{backend}" }} ]
apis:
  orders:
    path: /orders
    backend: b
    policies:
      inbound:
        - validate-jwt: {{ provider: corp, audiences: [ "api://orders", "api://orders-es", "api://short" ], clock_skew: 0s }}
{api_extra}
"#,
        discovery = idp.discovery()
    )
}

async fn call(g: &TestGateway, path: &str, auth: Option<&str>) -> Got {
    call_with(g, "GET", path, auth, &[]).await
}

async fn call_with(g: &TestGateway, method: &str, path: &str, auth: Option<&str>, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::builder().method(method).uri(g.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(&client(), req.body(Full::default()).expect("req")).await
}

/// Asserts a validate-jwt 401 with `invalid_token` and the given detail.
fn assert_invalid(got: &Got, detail: &str) {
    let v = assert_problem(got, 401, "policy");
    assert_eq!(v["policy"], "validate-jwt", "{v}");
    assert_eq!(v["scope"], "api:orders", "{v}");
    assert_eq!(v["type"], "urn:gatehouse:error:jwt-invalid", "{v}");
    assert_eq!(v["detail"], detail, "{v}");
    let challenge = got.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn real_tokens_are_accepted_and_bad_ones_rejected() {
    let idp = Idp::start();
    let b = backend().await;
    let g = gateway(&config(&idp, b.addr, "", "")).await;
    let short = idp.token("api://short", "orders.read").await;
    let short_issued = Instant::now();

    let rs = idp.token("api://orders", "orders.read orders.write").await;
    let got = call(&g, "/orders/1", Some(&rs)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = b.requests();
    assert_eq!(seen[0].headers["authorization"], format!("Bearer {rs}"), "Authorization reaches the backend as sent");
    let es = idp.token("api://orders-es", "orders.read").await;
    assert_eq!(call(&g, "/orders/1", Some(&es)).await.status, 200, "ES256 token");

    let missing = call(&g, "/orders/1", None).await;
    let v = assert_problem(&missing, 401, "policy");
    assert_eq!(v["type"], "urn:gatehouse:error:jwt-missing");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");

    let wrong_aud = idp.token("api://payments", "payments.read").await;
    assert_invalid(&call(&g, "/orders/1", Some(&wrong_aud)).await, "token audience not accepted");
    let wrong_iss = idp.token_from(&idp.other_issuer, "api://orders", "orders.read").await;
    assert_eq!(header_kid(&wrong_iss), header_kid(&rs), "same key, other issuer");
    assert_invalid(&call(&g, "/orders/1", Some(&wrong_iss)).await, "token issuer not accepted");

    // A valid signature over another payload.
    let parts: Vec<&str> = rs.split('.').collect();
    let mut claims = payload(&rs);
    claims["aud"] = json!("api://orders");
    claims["scope"] = json!("orders.admin");
    let forged = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    assert_invalid(&call(&g, "/orders/1", Some(&forged)).await, "token signature invalid");
    // alg none.
    let none = format!("{}.{}.", b64(&json!({ "alg": "none", "kid": header_kid(&rs) })), b64(&claims));
    assert_invalid(&call(&g, "/orders/1", Some(&none)).await, "unsigned tokens are not accepted");
    // HS256 keyed with the provider's RSA public key (as JWK JSON, and its modulus).
    let jwks = idp.jwks().await;
    let rsa = jwks["keys"].as_array().expect("keys").iter().find(|k| k["kty"] == "RSA").expect("rsa key").clone();
    for secret in [rsa.to_string(), rsa["n"].as_str().expect("n").to_owned()] {
        let input = format!("{}.{}", b64(&json!({ "alg": "HS256", "typ": "JWT", "kid": rsa["kid"] })), b64(&claims));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(aws_lc_rs::hmac::sign(&key, input.as_bytes()));
        assert_invalid(&call(&g, "/orders/1", Some(&format!("{input}.{sig}"))).await, "token algorithm not accepted");
    }
    // Malformed, oversized, binary.
    assert_invalid(&call(&g, "/orders/1", Some("abc")).await, "token malformed");
    assert_invalid(&call(&g, "/orders/1", Some(&"a.b".repeat(3000))).await, "token malformed");
    let big = format!("{}.{}.{}", parts[0], "A".repeat(13_000), parts[2]);
    assert_invalid(&call(&g, "/orders/1", Some(&big)).await, "token signature invalid");
    let mut req = Request::get(g.url("/orders/1")).body(Full::default()).expect("req");
    let binary = HeaderValue::from_bytes(b"Bearer \xff\xfe\x80.\x81.\x82").expect("obs-text");
    req.headers_mut().insert("authorization", binary);
    assert_invalid(&send(&client(), req).await, "token malformed");
    let double = call_with(&g, "GET", "/orders/1", Some(&rs), &[("authorization", "Bearer x.y.z")]).await;
    assert_invalid(&double, "token malformed");

    // Expired: the short resource's tokens live one second (and the policy allows no skew).
    let wait = Duration::from_millis(2100).saturating_sub(short_issued.elapsed());
    tokio::time::sleep(wait).await;
    assert_invalid(&call(&g, "/orders/1", Some(&short)).await, "token expired");
    assert_eq!(b.count(), 2, "only the two valid tokens reached the backend");
}

#[tokio::test]
async fn key_rotation_costs_no_request_and_withdrawn_keys_stop_working() {
    let idp = Idp::start();
    let b = backend().await;
    let g = Arc::new(gateway(&config(&idp, b.addr, ", refresh_interval: 2s", "")).await);
    let old = idp.token("api://orders", "orders.read").await;
    assert_eq!(call(&g, "/orders/1", Some(&old)).await.status, 200);

    // Load runs through the rotation; every request uses the newest token the client has.
    let current = Arc::new(parking_lot::Mutex::new(old.clone()));
    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (g, current, failures, done) = (g.clone(), current.clone(), failures.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) && n < 2000 {
                let token = current.lock().clone();
                let got = call(&g, "/orders/1", Some(&token)).await;
                if got.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    eprintln!("failed during rotation: {} {}", got.status, got.text());
                }
                n += 1;
            }
            n
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits_before = idp.jwks_hits().await;
    idp.admin("POST", "/rotate").await;
    let new = idp.token("api://orders", "orders.read").await;
    assert_ne!(header_kid(&new), header_kid(&old), "the provider signs with the new key");
    *current.lock() = new.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for w in workers {
        sent += w.await.expect("worker");
    }
    assert_eq!(failures.load(Ordering::SeqCst), 0, "no request failed across the rotation ({sent} sent)");
    let refetches = idp.jwks_hits().await - hits_before;
    assert!(refetches <= 2, "the unknown kid cost one shared refetch (+ at most one background refresh): {refetches}");
    assert_eq!(call(&g, "/orders/1", Some(&old)).await.status, 200, "the old key is still published");

    // Withdrawal: the background refresh (2s) drops the old key; old tokens stop working even
    // though they were verified and cached before.
    idp.admin("POST", "/withdraw").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = call(&g, "/orders/1", Some(&old)).await;
        if got.status == 401 {
            assert_invalid(&got, "token signing key not found");
            break;
        }
        assert!(Instant::now() < deadline, "old token still accepted 10s after withdrawal");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call(&g, "/orders/1", Some(&new)).await.status, 200);
}

#[tokio::test]
async fn provider_down_keeps_cached_keys_working() {
    let mut idp = Idp::start();
    let b = backend().await;
    let g = gateway(&config(&idp, b.addr, ", refresh_interval: 1s, fetch_timeout: 1s", "")).await;
    let seen = idp.token("api://orders", "orders.read").await;
    let unseen = idp.token("api://orders", "orders.write").await;
    assert_eq!(call(&g, "/orders/1", Some(&seen)).await.status, 200);
    let kid = header_kid(&seen);
    // Stop the provider (by PID) and let background refreshes fail a few times.
    idp.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(call(&g, "/orders/1", Some(&seen)).await.status, 200, "cached token");
    assert_eq!(call(&g, "/orders/1", Some(&unseen)).await.status, 200, "new token, known key");
    // A token naming a key the gateway never saw is refused promptly, not hung.
    let mut claims = payload(&seen);
    claims["jti"] = json!("other");
    let unknown = format!("{}.{}.c2ln", b64(&json!({ "alg": "RS256", "kid": format!("{kid}-x") })), b64(&claims));
    let started = Instant::now();
    assert_invalid(&call(&g, "/orders/1", Some(&unknown)).await, "token signing key not found");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn forged_kids_do_not_hammer_the_provider() {
    let idp = Idp::start();
    let b = backend().await;
    let g = Arc::new(gateway(&config(&idp, b.addr, ", min_refetch_interval: 500ms", "")).await);
    let good = idp.token("api://orders", "orders.read").await;
    assert_eq!(call(&g, "/orders/1", Some(&good)).await.status, 200);
    let claims = payload(&good);
    let before = idp.jwks_hits().await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let g = g.clone();
        let forged = format!("{}.{}.c2ln", b64(&json!({ "alg": "RS256", "kid": format!("forged-{i}") })), b64(&claims));
        tasks.push(tokio::spawn(async move { call(&g, "/orders/1", Some(&forged)).await.status.as_u16() }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 401);
    }
    let fetches = idp.jwks_hits().await - before;
    let allowed = started.elapsed().as_millis() as u64 / 500 + 2;
    assert!(fetches <= allowed, "{fetches} JWKS fetches for 200 forged kids in {:?}", started.elapsed());
    assert_eq!(b.count(), 1);
}

#[tokio::test]
async fn rbac_per_operation_and_what_reaches_the_backend() {
    let idp = Idp::start();
    let b = backend().await;
    let ops = r#"    operations:
      - { id: list,   method: GET,    template: "/",     policies: { inbound: [ base, { authorize: { scopes: [ orders.read ] } } ] } }
      - { id: create, method: POST,   template: "/",     policies: { inbound: [ base, { authorize: { scopes: [ orders.write ] } } ] } }
      - { id: remove, method: DELETE, template: "/{id}", policies: { inbound: [ base, { authorize: { roles: [ admin ] } } ] } }
      - id: audit
        method: GET
        template: "/audit"
        policies: { inbound: [ base, { validate-jwt: { provider: corp, audiences: [ "api://orders" ], required_claims: { scope: { all_of: [ orders.read, orders.write ] } } } } ] }
  private:
    path: /private
    backend: b
    policies:
      inbound:
        - validate-jwt: { provider: corp, audiences: [ "api://orders" ] }
        - forward-identity: { authorization: strip, claims_as_headers: { X-Client-Id: client_id, X-Scopes: scope, X-Missing: nope } }"#;
    let g = gateway(&config(&idp, b.addr, "", ops)).await;
    let read = idp.token("api://orders", "orders.read").await;
    let both = idp.token("api://orders", "orders.read orders.write").await;

    assert_eq!(call(&g, "/orders/", Some(&read)).await.status, 200);
    let denied = call_with(&g, "POST", "/orders/", Some(&read), &[]).await;
    let v = assert_problem(&denied, 403, "policy");
    assert_eq!(v["policy"], "authorize");
    assert_eq!(v["scope"], "operation:orders/create");
    assert_eq!(v["type"], "urn:gatehouse:error:insufficient-scope");
    assert_eq!(denied.headers["www-authenticate"], "Bearer error=\"insufficient_scope\", scope=\"orders.write\"");
    assert_eq!(call_with(&g, "POST", "/orders/", Some(&both), &[]).await.status, 200);
    let no_role = call_with(&g, "DELETE", "/orders/7", Some(&both), &[]).await;
    assert_eq!(assert_problem(&no_role, 403, "policy")["policy"], "authorize");
    let unauthenticated = call_with(&g, "POST", "/orders/", None, &[]).await;
    assert_eq!(assert_problem(&unauthenticated, 401, "policy")["policy"], "validate-jwt");

    let audit = call(&g, "/orders/audit", Some(&read)).await;
    let v = assert_problem(&audit, 403, "policy");
    assert_eq!(v["policy"], "validate-jwt");
    assert_eq!(v["scope"], "operation:orders/audit");
    assert_eq!(audit.headers["www-authenticate"], "Bearer error=\"insufficient_scope\"");
    assert_eq!(call(&g, "/orders/audit", Some(&both)).await.status, 200);

    let before = b.count();
    let spoof = [("x-client-id", "admin"), ("x-missing", "spoofed")];
    let got = call_with(&g, "GET", "/private/x", Some(&both), &spoof).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = &b.requests()[before];
    assert!(!seen.headers.contains_key("authorization"), "the token is stripped");
    assert_eq!(seen.headers["x-client-id"], CLIENT_ID, "the claim replaced the client's header");
    assert_eq!(seen.headers["x-scopes"], "orders.read orders.write");
    assert!(!seen.headers.contains_key("x-missing"), "absent claim: the client's header is removed too");
}

#[tokio::test]
async fn a_reload_keeps_the_provider_warm() {
    let idp = Idp::start();
    let b = backend().await;
    let yaml = config(&idp, b.addr, "", "");
    let g = gateway(&yaml).await;
    let t = idp.token("api://orders", "orders.read").await;
    assert_eq!(call(&g, "/orders/1", Some(&t)).await.status, 200);
    let hits = idp.jwks_hits().await;
    let yaml = yaml.replace("{log}", &g.log_path().display().to_string());
    g.reload_with(&yaml.replace("path: /orders", "path: /orders\n    hosts: []")).await.expect("reload");
    assert_eq!(call(&g, "/orders/1", Some(&t)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(idp.jwks_hits().await, hits, "an unchanged provider is not fetched again on reload");
}

#[test]
fn config_errors_are_located_and_all_reported() {
    let yaml = r#"
listeners:
  - { name: main, bind: "127.0.0.1:0" }
identity_providers:
  corp: { jwks_uri: "https://idp.example.com/jwks", algorithms: [ HS256 ] }
  ok: { jwks_uri: "https://idp.example.com/jwks" }
backends:
  b: { servers: [ { url: "http://127.0.0.1:9" } ] }
apis:
  orders:
    path: /orders
    backend: b
    policies:
      inbound:
        - validate-jwt: { provider: nobody, audiences: [ "api://orders" ] }
        - validate-jwt: { provider: ok, clock_skew: 1h, query_parameter_name: t, cookie_name: c }
        - validate-jwt: { provider: corp, audiences: [ a ] }
        - authorize: { }
        - forward-identity: { authorization: drop }
        - forward-identity: { claims_as_headers: { Host: sub, X-Ok: sub } }
"#;
    let errors = match gatehouse::snapshot::compile_str("t.yaml", yaml, std::path::Path::new(".")) {
        Ok(_) => panic!("the config must not compile"),
        Err(e) => e,
    };
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let has = |needle: &str| assert!(text.iter().any(|t| t.contains(needle)), "missing {needle:?} in {text:#?}");
    has("t.yaml:5:");
    has("HS256/HS384/HS512 need an `hmac_secret`");
    has("unknown identity provider `nobody`");
    has("at least one audience is required");
    has("clock_skew must be at most 5m");
    has("at most one of header_name, query_parameter_name and cookie_name");
    has("identity provider `corp` has errors");
    has("give `scopes`, `roles` or both");
    has("`Host` cannot carry a claim");
    has("inbound[4].forward-identity.authorization");
}

#[tokio::test]
async fn tokens_from_a_cookie_or_a_query_parameter() {
    let idp = Idp::start();
    let b = backend().await;
    let extra = r#"  cookie:
    path: /cookie
    backend: b
    policies:
      inbound:
        - validate-jwt: { provider: corp, audiences: [ "api://orders" ], cookie_name: session }
  query:
    path: /query
    backend: b
    policies:
      inbound:
        - validate-jwt: { provider: corp, audiences: [ "api://orders" ], query_parameter_name: access_token }"#;
    let g = gateway(&config(&idp, b.addr, "", extra)).await;
    let t = idp.token("api://orders", "orders.read").await;
    let cookie = format!("theme=dark; session={t}");
    assert_eq!(call_with(&g, "GET", "/cookie/x", None, &[("cookie", &cookie)]).await.status, 200);
    assert_eq!(call(&g, &format!("/query/x?a=1&access_token={t}"), None).await.status, 200);
    let bearer_only = call(&g, "/cookie/x", Some(&t)).await;
    assert_eq!(assert_problem(&bearer_only, 401, "policy")["type"], "urn:gatehouse:error:jwt-missing");
    // One signature character changed (in the middle, so every bit of it counts).
    let mut forged_token = t.clone().into_bytes();
    let i = t.len() - 20;
    forged_token[i] = if forged_token[i] == b'A' { b'B' } else { b'A' };
    let forged_token = String::from_utf8(forged_token).expect("ascii");
    let forged = call(&g, &format!("/query/x?access_token={forged_token}"), None).await;
    assert_eq!(assert_problem(&forged, 401, "policy")["detail"], "token signature invalid");
}
