//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9): the client proves itself with a short-lived
//! JWT signed by its own key instead of sending a shared secret.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// How long one assertion is valid; a new one is signed for every token request.
pub const LIFETIME: Duration = Duration::from_secs(60);

/// A signing key and its JWS header.
pub struct Assertion {
    key: EncodingKey,
    header: Header,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion").field("alg", &self.header.alg).field("kid", &self.header.kid).finish()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

/// The asymmetric algorithms a client key may use (`client_secret_jwt`'s HS* is not offered).
pub const ALGORITHMS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

impl Assertion {
    /// Parses the PEM key for `alg` and signs a trial assertion, so a key that does not fit its
    /// algorithm (an EC key for RS256, a P-384 key for ES256) is a config error, not a failed request.
    pub fn new(pem: &[u8], alg: &str, kid: Option<String>) -> Result<Assertion, String> {
        if !ALGORITHMS.contains(&alg) {
            return Err(format!("algorithm `{alg}` is not one of {}", ALGORITHMS.join(", ")));
        }
        let algorithm: Algorithm = alg.parse().map_err(|_| format!("unknown algorithm `{alg}`"))?;
        let key = match alg {
            a if a.starts_with("RS") || a.starts_with("PS") => EncodingKey::from_rsa_pem(pem),
            a if a.starts_with("ES") => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        }
        .map_err(|e| format!("not a PEM private key for {alg}: {e}"))?;
        let mut header = Header::new(algorithm);
        header.kid = kid;
        let a = Assertion { key, header };
        a.sign("check", "check").map_err(|e| format!("the key cannot sign {alg}: {e}"))?;
        Ok(a)
    }

    /// A fresh assertion: `iss` = `sub` = the client id, `aud` = the token endpoint, a random `jti`.
    pub fn sign(&self, client_id: &str, audience: &str) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let jti = format!("{:032x}", rand::random::<u128>());
        let claims =
            Claims { iss: client_id, sub: client_id, aud: audience, jti, iat: now, exp: now + LIFETIME.as_secs() };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| e.to_string())
    }
}
