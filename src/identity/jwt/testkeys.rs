//! Test keys and a token signer for unit tests (aws-lc-rs directly, so the code under test and
//! the signer do not share a JWT library).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::config::identity::JwkConfig;

pub enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    pub jwk: JwkConfig,
    pub signer: Signer,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        let kp = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("rsa keygen");
        let c = RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
        let jwk = JwkConfig {
            kty: "RSA".into(),
            kid: Some(kid.into()),
            n: Some(b64(&c.n)),
            e: Some(b64(&c.e)),
            ..JwkConfig::default()
        };
        TestKey { kid: kid.into(), alg: "RS256", jwk, signer: Signer::Rsa(kp) }
    }

    pub fn ec(kid: &str) -> TestKey {
        let kp = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("ec keygen");
        let point = kp.public_key().as_ref();
        let jwk = JwkConfig {
            kty: "EC".into(),
            kid: Some(kid.into()),
            crv: Some("P-256".into()),
            x: Some(b64(&point[1..33])),
            y: Some(b64(&point[33..65])),
            ..JwkConfig::default()
        };
        TestKey { kid: kid.into(), alg: "ES256", jwk, signer: Signer::Ec(kp) }
    }

    pub fn ed(kid: &str) -> TestKey {
        let kp = Ed25519KeyPair::generate().expect("ed keygen");
        let jwk = JwkConfig {
            kty: "OKP".into(),
            kid: Some(kid.into()),
            crv: Some("Ed25519".into()),
            x: Some(b64(kp.public_key().as_ref())),
            ..JwkConfig::default()
        };
        TestKey { kid: kid.into(), alg: "EdDSA", jwk, signer: Signer::Ed(kp) }
    }

    pub fn hmac(secret: &[u8]) -> TestKey {
        TestKey { kid: String::new(), alg: "HS256", jwk: JwkConfig::default(), signer: Signer::Hmac(secret.to_vec()) }
    }

    /// The JWK as JSON, as a JWKS would serve it.
    pub fn jwk_json(&self) -> Value {
        let j = &self.jwk;
        let mut v = json!({ "kty": j.kty, "kid": j.kid, "use": "sig" });
        for (name, val) in [("n", &j.n), ("e", &j.e), ("crv", &j.crv), ("x", &j.x), ("y", &j.y)] {
            if let Some(val) = val {
                v[name] = json!(val);
            }
        }
        v
    }

    /// A token with this key's alg and kid (overridable through `header`) over `claims`.
    pub fn sign(&self, header: Value, claims: &Value) -> String {
        let mut h = json!({ "alg": self.alg, "typ": "JWT" });
        if !self.kid.is_empty() {
            h["kid"] = json!(self.kid);
        }
        if let (Some(hm), Value::Object(extra)) = (h.as_object_mut(), header) {
            hm.extend(extra);
        }
        let input = format!("{}.{}", b64(h.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        format!("{input}.{}", b64(&self.raw_signature(input.as_bytes())))
    }

    pub fn raw_signature(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).expect("rsa sign");
                sig
            }
            Signer::Ec(kp) => kp.sign(&rng, msg).expect("ec sign").as_ref().to_vec(),
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
            Signer::Hmac(secret) => {
                let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
                aws_lc_rs::hmac::sign(&key, msg).as_ref().to_vec()
            }
        }
    }
}

/// Claims valid for an hour from now.
pub fn claims(iss: &str, aud: &str) -> Value {
    let now = super::unix_now();
    json!({ "iss": iss, "aud": aud, "sub": "user-1", "iat": now, "exp": now + 3600 })
}

/// An HMAC-SHA256 token keyed with arbitrary bytes (the key-confusion attack).
pub fn hs256_with(secret: &[u8], kid: &str, claims: &Value) -> String {
    let h = json!({ "alg": "HS256", "typ": "JWT", "kid": kid });
    let input = format!("{}.{}", b64(h.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    format!("{input}.{}", b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref()))
}
