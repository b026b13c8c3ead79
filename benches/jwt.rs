//! Micro-benchmarks of JWT validation (what `validate-jwt` costs per request).
//!
//! - `jwt/cached_rs256`: a token seen before: SHA-256 of the token, a cache lookup, the key
//!   still-published check and the claim checks (issuer, audience, times). This is the cost of
//!   a repeat caller, i.e. almost every request.
//! - `jwt/cold_rs256`, `jwt/cold_es256`: the verified-token cache is off (`token_cache_size: 0`),
//!   so every call parses the header, picks the key by `kid`, verifies the signature (RSA-2048
//!   PKCS#1 v1.5 / P-256 ECDSA) and parses the claims: a first-seen token.
//!
//! Run with `cargo bench --bench jwt`. Keys are generated at start (aws-lc-rs) and the tokens
//! signed here, so the benchmark needs no network.

use std::hint::black_box;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::config::Document;
use gatehouse::identity::jwt::validator::Quick;
use gatehouse::identity::jwt::{unix_now, Validator};
use gatehouse::identity::providers::{compile_one, Registry};
use serde_json::json;

const ISS: &str = "https://idp.bench/";
const AUD: &str = "api://orders";

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

enum Key {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

impl Key {
    fn jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            Key::Rsa(kp) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
                json!({ "kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e) })
            }
            Key::Ec(kp) => {
                let p = kp.public_key().as_ref();
                json!({ "kty": "EC", "kid": kid, "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..65]) })
            }
        }
    }

    fn token(&self, kid: &str) -> String {
        let alg = match self {
            Key::Rsa(_) => "RS256",
            Key::Ec(_) => "ES256",
        };
        let now = unix_now();
        let header = json!({ "alg": alg, "typ": "at+jwt", "kid": kid });
        let claims = json!({ "iss": ISS, "aud": AUD, "sub": "client-1", "scope": "orders.read orders.write",
                             "iat": now, "exp": now + 3600, "jti": "bench" });
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig).expect("sign");
                sig
            }
            Key::Ec(kp) => kp.sign(&rng, input.as_bytes()).expect("sign").as_ref().to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn validator(registry: &Registry, keys: &[serde_json::Value], cache_size: usize) -> Validator {
    let yaml = format!(
        "identity_providers:\n  bench: {{ issuer: \"{ISS}\", token_cache_size: {cache_size}, keys: {} }}\n",
        serde_json::Value::Array(keys.to_vec())
    );
    let doc = Document::parse("bench.yaml", &yaml).expect("yaml");
    let spec = compile_one(&doc, "bench").expect("present").expect("valid");
    Validator {
        provider: registry.provider(spec),
        issuers: Vec::new(),
        audiences: vec![AUD.into()],
        clock_skew: 30,
        require_expiration_time: true,
        required_claims: Vec::new(),
    }
}

fn check(v: &Validator, token: &str, now: u64) {
    match v.validate_now(token, now) {
        Quick::Done(Ok(c)) => {
            black_box(c);
        }
        Quick::Done(Err(e)) => panic!("benchmark token rejected: {e:?}"),
        Quick::Wait => panic!("static keys never wait"),
    }
}

fn bench_jwt(c: &mut Criterion) {
    let rsa = Key::Rsa(RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa"));
    let ec = Key::Ec(EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec"));
    let keys = [rsa.jwk("r1"), ec.jwk("e1")];
    let (rs_token, es_token) = (rsa.token("r1"), ec.token("e1"));
    let now = unix_now();

    let cached = Registry::new();
    let warm = validator(&cached, &keys, 10_000);
    check(&warm, &rs_token, now);
    c.bench_function("jwt/cached_rs256", |b| b.iter(|| check(&warm, black_box(&rs_token), now)));

    let uncached = Registry::new();
    let cold = validator(&uncached, &keys, 0);
    c.bench_function("jwt/cold_rs256", |b| b.iter(|| check(&cold, black_box(&rs_token), now)));
    c.bench_function("jwt/cold_es256", |b| b.iter(|| check(&cold, black_box(&es_token), now)));
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_jwt
}
criterion_main!(benches);
