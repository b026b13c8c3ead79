//! The cache and fetch logic against a small token endpoint on loopback (the end-to-end tests
//! use a real OpenID provider).

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

#[derive(Default)]
struct Endpoint_ {
    hits: AtomicUsize,
    seen: Mutex<Vec<(Option<String>, String)>>,
}

/// A token endpoint answering `status` and `body` (with `{n}` → the hit number) after `delay`.
async fn endpoint(status: u16, body: &'static str, delay: Duration) -> (Uri, Arc<Endpoint_>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state: Arc<Endpoint_> = Arc::default();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: ::http::Request<hyper::body::Incoming>| {
                    let st = st.clone();
                    async move {
                        let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_owned());
                        let form = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        st.seen.lock().push((auth, String::from_utf8_lossy(&form).into_owned()));
                        let n = st.hits.fetch_add(1, Ordering::SeqCst) + 1;
                        tokio::time::sleep(delay).await;
                        let mut r = ::http::Response::new(Full::new(Bytes::from(body.replace("{n}", &n.to_string()))));
                        *r.status_mut() = StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (format!("http://{addr}/token").parse().expect("uri"), state)
}

fn client(url: Uri, auth: ClientAuth) -> Arc<Client> {
    Arc::new(Client {
        endpoint: super::Endpoint::Token(url),
        client_id: "gateway client".into(),
        auth,
        scope: Some("api://orders/.default".into()),
        resource: None,
        http: Http::new(None, Duration::from_secs(2)).expect("http"),
    })
}

fn secret(s: &str) -> ClientAuth {
    ClientAuth::SecretBasic(Secret::new(s))
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch_and_the_cache() {
    let (url, ep) = endpoint(
        200,
        r#"{"access_token":"tok-{n}","token_type":"Bearer","expires_in":3600}"#,
        Duration::from_millis(100),
    )
    .await;
    let c = client(url, secret("s3:cr&t"));
    let entry = Tokens::default().entry(c.key());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (e, c) = (entry.clone(), c.clone());
            tokio::spawn(async move { e.token(&c).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("join").expect("token"), "Bearer tok-1");
    }
    assert_eq!(entry.token(&c).await.expect("token"), "Bearer tok-1");
    assert_eq!(ep.hits.load(Ordering::SeqCst), 1, "one fetch for 21 requests");
    assert_eq!(entry.fetches(), 1);
    let (auth, form) = ep.seen.lock()[0].clone();
    assert_eq!(form, "grant_type=client_credentials&scope=api%3A%2F%2Forders%2F.default");
    // RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
    assert_eq!(auth.as_deref(), Some(basic("gateway client", "s3:cr&t").to_str().expect("ascii")));
    assert_eq!(basic("a b", "c:d").to_str().ok(), Some("Basic YStiOmMlM0Fk"));
}

#[tokio::test]
async fn refreshes_ahead_of_expiry_in_the_background() {
    // 2 s lifetime: refresh from 1 s on, usable until 1.5 s.
    let (url, ep) =
        endpoint(200, r#"{"access_token":"tok-{n}","token_type":"bearer","expires_in":"2"}"#, Duration::ZERO).await;
    let c = client(url, secret("s"));
    let entry = Tokens::default().entry(c.key());
    assert_eq!(entry.token(&c).await.expect("token"), "Bearer tok-1");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(entry.cached(&c).expect("still usable"), "Bearer tok-1", "the old token serves while refreshing");
    let deadline = Instant::now() + Duration::from_secs(2);
    while entry.cached(&c).is_none_or(|h| h != "Bearer tok-2") {
        assert!(Instant::now() < deadline, "no background refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ep.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failures_are_classified_and_held_briefly() {
    let (url, ep) = endpoint(503, r#"{"error":"temporarily_unavailable"}"#, Duration::ZERO).await;
    let c = client(url, secret("s"));
    let entry = Tokens::default().entry(c.key());
    let e = entry.token(&c).await.expect_err("503");
    assert!(e.unavailable());
    assert_eq!(e.to_string(), "refused with status 503 Service Unavailable (temporarily_unavailable)");
    assert!(entry.token(&c).await.is_err());
    assert_eq!(ep.hits.load(Ordering::SeqCst), 1, "the failure is held, not retried per request");

    let (url, _) =
        endpoint(401, r#"{"error":"invalid_client","error_description":"secret s3cret wrong"}"#, Duration::ZERO).await;
    let e = Tokens::default().entry(client(url.clone(), secret("s")).key()).token(&client(url, secret("s"))).await;
    let e = e.expect_err("401");
    assert!(!e.unavailable());
    assert!(!e.to_string().contains("s3cret"), "only the error code is kept: {e}");

    for (body, what) in [
        (r#"{"access_token":"t","token_type":"DPoP"}"#, "Bearer"),
        (r#"{"token_type":"Bearer"}"#, "not a token response"),
        (r#"{"access_token":"t","token_type":"Bearer","expires_in":"soon"}"#, "expires_in"),
        (r#"{"access_token":"bad\nvalue","token_type":"Bearer"}"#, "header value"),
    ] {
        let (url, _) = endpoint(200, body, Duration::ZERO).await;
        let c = client(url, secret("s"));
        let e = Tokens::default().entry(c.key()).token(&c).await.expect_err(body);
        assert!(e.to_string().contains(what), "{body}: {e}");
    }

    let dead: Uri = "http://127.0.0.1:9/token".parse().expect("uri");
    let c = client(dead, secret("s"));
    let e = Tokens::default().entry(c.key()).token(&c).await.expect_err("refused");
    assert!(e.unavailable(), "{e}");
}

#[tokio::test]
async fn timeouts_bound_the_fetch() {
    let (url, _) = endpoint(200, r#"{"access_token":"t","token_type":"Bearer"}"#, Duration::from_secs(5)).await;
    let mut c = Arc::into_inner(client(url, secret("s"))).expect("sole owner");
    c.http = Http::new(None, Duration::from_millis(200)).expect("http");
    let c = Arc::new(c);
    let started = Instant::now();
    let e = Tokens::default().entry(c.key()).token(&c).await.expect_err("timeout");
    assert!(matches!(e, TokenError::Timeout(_)) && e.unavailable(), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn private_key_jwt_sends_a_verifiable_assertion() {
    let (url, ep) =
        endpoint(200, r#"{"access_token":"t","token_type":"Bearer","expires_in":60}"#, Duration::ZERO).await;
    let kp = rcgen::KeyPair::generate().expect("key"); // ECDSA P-256
    let a = Assertion::new(kp.serialize_pem().as_bytes(), "ES256", Some("k1".into())).expect("assertion");
    assert!(Assertion::new(kp.serialize_pem().as_bytes(), "RS256", None).is_err(), "an EC key cannot do RS256");
    assert!(Assertion::new(b"junk", "ES256", None).is_err());
    assert!(Assertion::new(kp.serialize_pem().as_bytes(), "HS256", None).is_err());
    let c = client(url.clone(), ClientAuth::PrivateKeyJwt(Arc::new(a)));
    Tokens::default().entry(c.key()).token(&c).await.expect("token");
    let (auth, form) = ep.seen.lock()[0].clone();
    assert!(auth.is_none());
    let assertion = form.split('&').find_map(|p| p.strip_prefix("client_assertion=")).expect("assertion");
    assert!(form.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"));
    let key = jsonwebtoken::DecodingKey::from_ec_pem(kp.public_key_pem().as_bytes()).expect("public key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&[url.to_string()]);
    v.set_issuer(&["gateway client"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &v).expect("verifies");
    assert_eq!(data.header.kid.as_deref(), Some("k1"));
    assert_eq!(data.claims["sub"], "gateway client");
}

#[test]
fn entries_are_shared_by_key_while_in_use() {
    let tokens = Tokens::default();
    let url: Uri = "http://idp/token".parse().expect("uri");
    let a = tokens.entry(client(url.clone(), secret("old")).key());
    let b = tokens.entry(client(url.clone(), secret("rotated")).key());
    assert!(Arc::ptr_eq(&a, &b), "a rotated secret keeps the cached token");
    let mut other = Arc::into_inner(client(url, secret("s"))).expect("sole owner");
    other.scope = Some("other".into());
    assert!(!Arc::ptr_eq(&a, &tokens.entry(other.key())));
    drop((a, b));
    let _ = tokens.entry(TokenKey { endpoint: "x".into(), client_id: "y".into(), scope: None, resource: None });
    assert_eq!(tokens.entries.lock().len(), 1, "dead entries are pruned");
}
