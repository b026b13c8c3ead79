//! Validator tests: static keys without network, and a loopback JWKS server for rotation,
//! refetch limits and provider outages.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::claims::{ClaimRule, Match, Verified};
use super::testkeys::{claims, hs256_with, TestKey};
use super::validator::{Quick, Rejection};
use super::{unix_now, Invalid, Validator};
use crate::config::Document;
use crate::identity::providers::{compile, compile_one, Registry};

const ISS: &str = "https://idp.test/";
const AUD: &str = "api://orders";

fn provider_yaml(body: &str) -> Document {
    Document::parse("t.yaml", &format!("identity_providers:\n  corp: {body}\n")).expect("yaml")
}

fn inline(keys: &[&TestKey], extra: &str) -> Document {
    let jwks: Vec<Value> = keys.iter().map(|k| k.jwk_json()).collect();
    provider_yaml(&format!("{{ issuer: \"{ISS}\", keys: {}{extra} }}", Value::Array(jwks)))
}

fn validator(doc: &Document, registry: &Registry) -> Validator {
    let spec = compile_one(doc, "corp").expect("present").expect("valid provider");
    Validator {
        provider: registry.provider(spec),
        issuers: Vec::new(),
        audiences: vec![AUD.into()],
        clock_skew: 30,
        require_expiration_time: true,
        required_claims: Vec::new(),
    }
}

/// `validate_now`'s verdict, checked against the cached path's: before (when the token was
/// cached already) and after (a token whose signature verified is cached now), both agree.
fn now_result(v: &Validator, token: &str, now: u64) -> Result<Arc<Verified>, Rejection> {
    let before = v.validate_cached(token.as_bytes(), now);
    let r = match v.validate_now(token, now) {
        Quick::Done(r) => r,
        Quick::Wait => panic!("a static provider never waits"),
    };
    for cached in [before, v.validate_cached(token.as_bytes(), now)].into_iter().flatten() {
        assert_eq!(cached, r, "the cached path decides as validate_now does");
    }
    r
}

fn errors_of(doc: &Document) -> Vec<String> {
    let mut errors = Vec::new();
    compile(doc, &mut errors);
    errors.into_iter().map(|e| e.message).collect()
}

#[test]
fn rs256_es256_eddsa_tokens_verify_against_inline_keys() {
    let keys = [TestKey::rsa("r1"), TestKey::ec("e1"), TestKey::ed("d1")];
    let registry = Registry::new();
    let v = validator(&inline(&[&keys[0], &keys[1], &keys[2]], ""), &registry);
    for k in &keys {
        let t = k.sign(json!({}), &claims(ISS, AUD));
        let c = now_result(&v, &t, unix_now()).unwrap_or_else(|e| panic!("{} rejected: {e:?}", k.alg));
        assert_eq!(c.claims["sub"], "user-1");
    }
}

#[test]
fn forged_unsigned_and_confused_tokens_are_rejected() {
    let rsa = TestKey::rsa("r1");
    let registry = Registry::new();
    let v = validator(&inline(&[&rsa], ""), &registry);
    let now = unix_now();
    let good = rsa.sign(json!({}), &claims(ISS, AUD));
    // Payload swapped under a valid signature.
    let (head, rest) = good.split_once('.').expect("dots");
    let sig = rest.rsplit_once('.').expect("dot").1;
    let other = rsa.sign(json!({}), &json!({ "iss": ISS, "aud": AUD, "sub": "admin", "exp": now + 60 }));
    let other_payload = other.split('.').nth(1).expect("payload");
    let forged = format!("{head}.{other_payload}.{sig}");
    assert_eq!(now_result(&v, &forged, now), Err(Rejection::Invalid(Invalid::Signature)));
    // alg none, with or without a signature.
    let none = format!("{}.{}.", b64(r#"{"alg":"none","kid":"r1"}"#), other_payload);
    assert_eq!(now_result(&v, &none, now), Err(Rejection::Invalid(Invalid::Unsigned)));
    // HS256 keyed with the RSA public key material (modulus bytes and the JWK JSON).
    let n = rsa.jwk.n.clone().expect("n");
    for secret in [n.as_bytes().to_vec(), rsa.jwk_json().to_string().into_bytes()] {
        let confused = hs256_with(&secret, "r1", &claims(ISS, AUD));
        assert_eq!(now_result(&v, &confused, now), Err(Rejection::Invalid(Invalid::Algorithm)));
    }
    // ECDSA with r = s = 0 (CVE-2022-21449) and a signature of the wrong length.
    let ec_key = TestKey::ec("e1");
    let ec_provider = Registry::new();
    let ev = validator(&inline(&[&ec_key], ""), &ec_provider);
    let ec_good = ec_key.sign(json!({}), &claims(ISS, AUD));
    let ec_input = ec_good.rsplit_once('.').expect("dot").0;
    for sig in [vec![0u8; 64], vec![0u8; 1], vec![0xffu8; 64]] {
        use base64::Engine as _;
        let t = format!("{ec_input}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(now_result(&ev, &t, now), Err(Rejection::Invalid(Invalid::Signature)));
    }
    // A kid naming the RSA key with an EC algorithm finds no key that answers ES256.
    let ec = TestKey::ec("r1");
    assert_eq!(
        now_result(&v, &ec.sign(json!({}), &claims(ISS, AUD)), now),
        Err(Rejection::Invalid(Invalid::KeyNotFound))
    );
    // An embedded jwk with the attacker's key is ignored.
    let attacker = TestKey::rsa("r1");
    let t = attacker.sign(json!({ "jwk": attacker.jwk_json(), "jku": "http://127.0.0.1:1/" }), &claims(ISS, AUD));
    assert_eq!(now_result(&v, &t, now), Err(Rejection::Invalid(Invalid::Signature)));
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn issuer_audience_times_and_required_claims() {
    let k = TestKey::ec("e1");
    let registry = Registry::new();
    let mut v = validator(&inline(&[&k], ""), &registry);
    let now = unix_now();
    let sign = |c: Value| k.sign(json!({}), &c);
    let ok =
        sign(json!({ "iss": ISS, "aud": [AUD, "other"], "exp": now + 60, "roles": ["orders.read"], "scp": "a b" }));
    assert!(now_result(&v, &ok, now).is_ok());
    assert_eq!(
        now_result(&v, &sign(json!({ "iss": "https://evil/", "aud": AUD, "exp": now + 60 })), now),
        Err(Rejection::Invalid(Invalid::Issuer))
    );
    assert_eq!(
        now_result(&v, &sign(json!({ "iss": ISS, "aud": "api://payments", "exp": now + 60 })), now),
        Err(Rejection::Invalid(Invalid::Audience))
    );
    assert_eq!(
        now_result(&v, &sign(json!({ "iss": ISS, "aud": AUD, "exp": now - 120 })), now),
        Err(Rejection::Invalid(Invalid::Expired))
    );
    assert_eq!(
        now_result(&v, &sign(json!({ "iss": ISS, "aud": AUD })), now),
        Err(Rejection::Invalid(Invalid::NoExpiry))
    );
    assert_eq!(
        now_result(&v, &sign(json!({ "iss": ISS, "aud": AUD, "exp": now + 600, "nbf": now + 300 })), now),
        Err(Rejection::Invalid(Invalid::NotYetValid))
    );
    v.required_claims = vec![
        ClaimRule { name: "roles".into(), values: vec!["orders.read".into()], mode: Match::All },
        ClaimRule { name: "scp".into(), values: vec!["x".into(), "b".into()], mode: Match::Any },
    ];
    assert!(now_result(&v, &ok, now).is_ok());
    v.required_claims.push(ClaimRule { name: "roles".into(), values: vec!["orders.write".into()], mode: Match::All });
    assert_eq!(now_result(&v, &ok, now), Err(Rejection::Insufficient("roles".into())));
    // Explicit issuers replace the provider's.
    v.required_claims.clear();
    v.issuers = vec!["https://other/".into()];
    assert_eq!(now_result(&v, &ok, now), Err(Rejection::Invalid(Invalid::Issuer)));
}

#[test]
fn a_cached_token_skips_the_signature_but_not_the_claim_checks() {
    let k = TestKey::rsa("r1");
    let registry = Registry::new();
    let v = validator(&inline(&[&k], ""), &registry);
    let now = unix_now();
    let t = k.sign(json!({}), &json!({ "iss": ISS, "aud": AUD, "exp": now + 60 }));
    let first = now_result(&v, &t, now).expect("valid");
    let second = now_result(&v, &t, now).expect("valid again");
    assert!(Arc::ptr_eq(&first, &second), "the second answer comes from the cache");
    assert_eq!(now_result(&v, &t, now + 120), Err(Rejection::Invalid(Invalid::Expired)));
    // Times are judged against the clock of each request, also for a cached token.
    let later = k.sign(json!({}), &json!({ "iss": ISS, "aud": AUD, "nbf": now + 300, "exp": now + 600 }));
    assert_eq!(now_result(&v, &later, now), Err(Rejection::Invalid(Invalid::NotYetValid)));
    assert!(now_result(&v, &later, now + 400).is_ok(), "valid once nbf has passed");
    assert_eq!(now_result(&v, &later, now + 700), Err(Rejection::Invalid(Invalid::Expired)));
    // Another policy with another audience does not inherit the first one's verdict.
    let mut other = validator(&inline(&[&k], ""), &registry);
    other.audiences = vec!["api://payments".into()];
    assert_eq!(now_result(&other, &t, now), Err(Rejection::Invalid(Invalid::Audience)));
}

#[test]
fn hmac_only_with_a_configured_secret() {
    let secret = "0123456789abcdef0123456789abcdef-secret";
    let doc = provider_yaml(&format!("{{ issuer: \"{ISS}\", hmac_secret: \"{secret}\", algorithms: [HS256] }}"));
    let registry = Registry::new();
    let v = validator(&doc, &registry);
    let now = unix_now();
    let good = TestKey::hmac(secret.as_bytes()).sign(json!({}), &claims(ISS, AUD));
    assert!(now_result(&v, &good, now).is_ok());
    let wrong = TestKey::hmac(b"another-secret-that-is-long-enough-000").sign(json!({}), &claims(ISS, AUD));
    assert_eq!(now_result(&v, &wrong, now), Err(Rejection::Invalid(Invalid::Signature)));
    let rsa = TestKey::rsa("r1");
    assert_eq!(
        now_result(&v, &rsa.sign(json!({}), &claims(ISS, AUD)), now),
        Err(Rejection::Invalid(Invalid::Algorithm))
    );
}

#[test]
fn provider_config_errors() {
    let msgs = errors_of(&provider_yaml("{ algorithms: [HS256], jwks_uri: \"http://127.0.0.1:1/jwks\" }"));
    assert!(msgs.iter().any(|m| m.contains("need an `hmac_secret`")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ hmac_secret: short }"));
    assert!(msgs.iter().any(|m| m.contains("at least 32 bytes")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ jwks_uri: \"ftp://x/\", algorithms: [none] }"));
    assert!(msgs.iter().any(|m| m.contains("not an http(s) URL")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("`none` is never accepted")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ openid_configuration: \"https://a/\", jwks_uri: \"https://b/\" }"));
    assert!(msgs.iter().any(|m| m.contains("not both")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ issuer: x }"));
    assert!(msgs.iter().any(|m| m.contains("needs `openid_configuration`")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ keys: [ { kty: RSA, kid: a, n: AQAB, e: AQAB } ] }"));
    assert!(msgs.iter().any(|m| m.contains("at least 2048")), "{msgs:?}");
    let msgs = errors_of(&provider_yaml("{ keys: [ { kty: oct, k: AAAA } ] }"));
    assert!(!msgs.is_empty(), "oct keys and unknown members are refused");
    assert!(errors_of(&provider_yaml("{ jwks_uri: \"https://idp/jwks\", colour: blue }"))
        .iter()
        .any(|m| m.contains("unknown key")));
}

/// A loopback JWKS endpoint whose keys, availability and hit count the test controls.
struct Jwks {
    url: String,
    keys: Mutex<Vec<Value>>,
    hits: AtomicUsize,
    down: AtomicBool,
}

async fn jwks_server() -> Arc<Jwks> {
    jwks_server_tls(None).await
}

/// The JWKS server over TLS when `tls` is given.
async fn jwks_server_tls(tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Jwks> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state = Arc::new(Jwks {
        url: format!("{scheme}://{addr}/jwks"),
        keys: Mutex::new(Vec::new()),
        hits: AtomicUsize::new(0),
        down: AtomicBool::new(false),
    });
    let s = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let s = s.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let s = s.clone();
                    async move {
                        s.hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = if s.down.load(Ordering::SeqCst) {
                            (503, "down".to_string())
                        } else {
                            (200, json!({ "keys": *s.keys.lock() }).to_string())
                        };
                        let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        Ok::<_, Infallible>(resp)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(cfg) => {
                        if let Ok(stream) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    state
}

#[tokio::test]
async fn remote_keys_rotation_refetch_limits_and_outage() {
    let server = jwks_server().await;
    let (k1, k2) = (TestKey::ec("k1"), TestKey::ec("k2"));
    server.keys.lock().push(k1.jwk_json());
    let doc = provider_yaml(&format!(
        "{{ jwks_uri: \"{}\", issuer: \"{ISS}\", min_refetch_interval: 300ms, unknown_kid_ttl: 30s, fetch_timeout: 2s }}",
        server.url
    ));
    let registry = Registry::new();
    let v = Arc::new(validator(&doc, &registry));
    let now = unix_now();
    let t1 = k1.sign(json!({}), &claims(ISS, AUD));
    v.validate(&t1, now).await.expect("k1 token valid after the first fetch");

    // Rotation: k2 is published and used; the first k2 token triggers one refetch.
    server.keys.lock().push(k2.jwk_json());
    let t2 = k2.sign(json!({}), &claims(ISS, AUD));
    let before = server.hits.load(Ordering::SeqCst);
    let all = futures_util::future::join_all((0..20).map(|_| {
        let (v, t2) = (v.clone(), t2.clone());
        async move { v.validate(&t2, now).await }
    }))
    .await;
    assert!(all.iter().all(Result::is_ok), "every concurrent k2 request passes: {all:?}");
    assert_eq!(server.hits.load(Ordering::SeqCst) - before, 1, "one fetch shared by all waiters");

    // A flood of forged kids: fetches bounded by the refetch interval, repeats answered from the
    // negative cache.
    let before = server.hits.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for i in 0..40 {
        let forged = TestKey::ec(&format!("forged-{}", i % 4));
        let r = v.validate(&forged.sign(json!({}), &claims(ISS, AUD)), now).await;
        assert_eq!(r, Err(Rejection::Invalid(Invalid::KeyNotFound)));
    }
    let fetched = server.hits.load(Ordering::SeqCst) - before;
    let allowed = (started.elapsed().as_millis() / 300 + 1) as usize;
    assert!(fetched <= allowed && fetched <= 4, "{fetched} fetches for 40 forged tokens ({allowed} allowed)");

    // Provider down: known keys keep working, cached or not.
    server.down.store(true, Ordering::SeqCst);
    let fresh = k1.sign(json!({}), &json!({ "iss": ISS, "aud": AUD, "exp": now + 100, "jti": "new" }));
    v.validate(&t1, now).await.expect("cached token during outage");
    assert!(v.validate_cached(t1.as_bytes(), now).is_some_and(|r| r.is_ok()), "and on the cached path");
    v.validate(&fresh, now).await.expect("new token, known key, during outage");
    let unknown = TestKey::ec("k3").sign(json!({}), &claims(ISS, AUD));
    assert_eq!(v.validate(&unknown, now).await, Err(Rejection::Invalid(Invalid::KeyNotFound)));
    assert_eq!(v.provider.key_count(), 2, "a failed fetch keeps the last good keys");

    // Back up with k1 withdrawn: k1 tokens (even cached) stop working once the keys refresh.
    server.down.store(false, Ordering::SeqCst);
    server.keys.lock().retain(|k| k["kid"] != "k1");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let k4 = TestKey::ec("k4");
    server.keys.lock().push(k4.jwk_json());
    v.validate(&k4.sign(json!({}), &claims(ISS, AUD)), now).await.expect("k4 fetched on demand");
    assert!(v.validate_cached(t1.as_bytes(), now).is_none(), "the cached path does not serve a withdrawn key");
    assert_eq!(v.validate(&t1, now).await, Err(Rejection::Invalid(Invalid::KeyNotFound)));
    v.validate(&t2, now).await.expect("k2 still published");
    assert!(v.validate_cached(t2.as_bytes(), now).is_some_and(|r| r.is_ok()));
}

#[tokio::test]
async fn registry_keeps_a_provider_while_its_config_is_unchanged() {
    let k = TestKey::rsa("r1");
    let registry = Registry::new();
    let a = validator(&inline(&[&k], ""), &registry);
    let b = validator(&inline(&[&k], ""), &registry);
    assert!(Arc::ptr_eq(&a.provider, &b.provider));
    let c = validator(&inline(&[&k], ", token_cache_size: 5"), &registry);
    assert!(!Arc::ptr_eq(&a.provider, &c.provider), "a changed config is a new provider");
    drop((a, b, c));
    assert!(registry.get("corp").is_none(), "nothing keeps a provider no policy uses");
}

#[tokio::test]
async fn garbage_tokens_never_panic() {
    let k = TestKey::rsa("r1");
    let registry = Registry::new();
    let v = validator(&inline(&[&k], ""), &registry);
    let now = unix_now();
    let long = "a.".repeat(20_000);
    let binary = String::from_utf8_lossy(&[0xff, 0x00, 0x2e, 0xfe, 0x2e, 0x01]).into_owned();
    let header_only = format!("{}..", b64(r#"{"alg":"RS256","kid":"r1"}"#));
    let bad_sig = format!("{}.{}.!!!", b64(r#"{"alg":"RS256","kid":"r1"}"#), b64("{}"));
    let bad_payload = {
        let h = b64(r#"{"alg":"RS256","kid":"r1"}"#);
        let p = b64("not json");
        let sig = k.raw_signature(format!("{h}.{p}").as_bytes());
        use base64::Engine as _;
        format!("{h}.{p}.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig))
    };
    for t in [long.as_str(), &binary, "", "Bearer", &header_only, &bad_sig, &bad_payload, "a.b.c"] {
        assert!(matches!(v.validate(t, now).await, Err(Rejection::Invalid(_))), "{t:.40}");
    }
}

#[tokio::test]
async fn https_jwks_trusted_through_a_configured_ca() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    let server_cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server cert");
    let server = jwks_server_tls(Some(Arc::new(server_cfg))).await;
    let k = TestKey::ec("k1");
    server.keys.lock().push(k.jwk_json());
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("idp-ca.pem"), cert.pem()).expect("write ca");
    let file = dir.path().join("gatehouse.yaml").display().to_string();
    let yaml = |extra: &str| {
        format!("identity_providers:\n  corp: {{ jwks_uri: \"{}\", issuer: \"{ISS}\"{extra} }}\n", server.url)
    };
    let token = k.sign(json!({}), &claims(ISS, AUD));

    let registry = Registry::new();
    let trusted = Document::parse(&file, &yaml(", ca: idp-ca.pem")).expect("yaml");
    let v = validator(&trusted, &registry);
    v.validate(&token, unix_now()).await.expect("keys fetched over TLS with the configured CA");

    let untrusted_registry = Registry::new();
    let system_roots = Document::parse(&file, &yaml("")).expect("yaml");
    let v = validator(&system_roots, &untrusted_registry);
    assert_eq!(v.validate(&token, unix_now()).await, Err(Rejection::Invalid(Invalid::KeysUnavailable)));

    let missing = Document::parse(&file, &yaml(", ca: nowhere.pem")).expect("yaml");
    assert!(errors_of(&missing).iter().any(|m| m.contains("nowhere.pem")), "{:?}", errors_of(&missing));
}
