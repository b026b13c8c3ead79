//! Verification keys and the algorithms each one may verify.
//!
//! The algorithm a token names is only ever a question asked of a key that was chosen from the
//! configured or fetched key set, never an instruction: an RSA key answers RS*/PS*, a P-256 key
//! ES256, a P-384 key ES384, an Ed25519 key EdDSA, and only the configured shared secret answers
//! HS*. So an HMAC can never be keyed with public-key material, and `none` is not an algorithm.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::identity::JwkConfig;

/// The signature algorithms Gatehouse verifies (RFC 7518 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn parse(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }

    pub fn to_jwt(self) -> Algorithm {
        match self {
            Alg::HS256 => Algorithm::HS256,
            Alg::HS384 => Algorithm::HS384,
            Alg::HS512 => Algorithm::HS512,
            Alg::RS256 => Algorithm::RS256,
            Alg::RS384 => Algorithm::RS384,
            Alg::RS512 => Algorithm::RS512,
            Alg::PS256 => Algorithm::PS256,
            Alg::PS384 => Algorithm::PS384,
            Alg::PS512 => Algorithm::PS512,
            Alg::ES256 => Algorithm::ES256,
            Alg::ES384 => Algorithm::ES384,
            Alg::EdDSA => Algorithm::EdDSA,
        }
    }
}

/// A small set of algorithms (a bit per [`Alg`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AlgSet(u16);

impl AlgSet {
    pub const ASYMMETRIC: AlgSet = AlgSet::of(&[
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ]);
    pub const RSA: AlgSet = AlgSet::of(&[Alg::RS256, Alg::RS384, Alg::RS512, Alg::PS256, Alg::PS384, Alg::PS512]);
    pub const HMAC: AlgSet = AlgSet::of(&[Alg::HS256, Alg::HS384, Alg::HS512]);

    pub const fn of(algs: &[Alg]) -> AlgSet {
        let mut bits = 0u16;
        let mut i = 0;
        while i < algs.len() {
            bits |= 1 << (algs[i] as u16);
            i += 1;
        }
        AlgSet(bits)
    }

    pub fn contains(self, a: Alg) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn intersect(self, other: AlgSet) -> AlgSet {
        AlgSet(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn names(self) -> Vec<&'static str> {
        Alg::ALL.into_iter().filter(|a| self.contains(*a)).map(Alg::as_str).collect()
    }
}

/// One key, ready to verify, with the algorithms it answers.
pub struct VerifyKey {
    pub kid: Option<Box<str>>,
    pub algs: AlgSet,
    key: DecodingKey,
    /// The public material (or a digest of the secret), to keep the same `Arc` across refreshes
    /// so verified-token cache entries stay valid while the key is still published.
    material: Vec<u8>,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey").field("kid", &self.kid).field("algs", &self.algs.names()).finish()
    }
}

impl VerifyKey {
    /// Checks `signature` (base64url) over `message` with `alg`, which must be one of this key's.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &str) -> bool {
        if !self.algs.contains(alg) {
            return false;
        }
        matches!(jsonwebtoken::crypto::verify(signature, message, &self.key, alg.to_jwt()), Ok(true))
    }

    /// The key for `hmac_secret`: only the HS algorithms, only from configuration.
    pub fn hmac(secret: &[u8], allowed: AlgSet) -> VerifyKey {
        let material = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret).as_ref().to_vec();
        VerifyKey { kid: None, algs: AlgSet::HMAC.intersect(allowed), key: DecodingKey::from_secret(secret), material }
    }

    /// A public key from a JWK; `allowed` narrows the algorithms its type permits.
    pub fn from_jwk(jwk: &JwkConfig, allowed: AlgSet) -> Result<VerifyKey, String> {
        if let Some(u) = &jwk.use_ {
            if u != "sig" {
                return Err(format!("`use` is {u:?}, not \"sig\""));
            }
        }
        if let Some(ops) = &jwk.key_ops {
            if !ops.iter().any(|o| o == "verify") {
                return Err("`key_ops` does not include \"verify\"".into());
            }
        }
        let b64 = |name: &str, v: &Option<String>| -> Result<Vec<u8>, String> {
            let v = v.as_deref().ok_or_else(|| format!("`{name}` is missing"))?;
            URL_SAFE_NO_PAD.decode(v.trim_end_matches('=')).map_err(|_| format!("`{name}` is not base64url"))
        };
        let (family, key, material) = match jwk.kty.as_str() {
            "RSA" => {
                let (n, e) = (b64("n", &jwk.n)?, b64("e", &jwk.e)?);
                let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
                if bits < 2048 {
                    return Err(format!("RSA modulus of about {bits} bits; at least 2048 are required"));
                }
                let key = DecodingKey::from_rsa_raw_components(&n, &e);
                (AlgSet::RSA, key, [n, e].concat())
            }
            "EC" => {
                let (family, len) = match jwk.crv.as_deref() {
                    Some("P-256") => (AlgSet::of(&[Alg::ES256]), 32),
                    Some("P-384") => (AlgSet::of(&[Alg::ES384]), 48),
                    other => return Err(format!("EC curve {other:?} is not supported (P-256, P-384)")),
                };
                let (x, y) = (b64("x", &jwk.x)?, b64("y", &jwk.y)?);
                if x.len() != len || y.len() != len {
                    return Err("EC coordinates have the wrong length for the curve".into());
                }
                let point = [&[0x04u8][..], &x, &y].concat();
                (family, DecodingKey::from_ec_der(&point), point)
            }
            "OKP" => {
                if jwk.crv.as_deref() != Some("Ed25519") {
                    return Err(format!("OKP curve {:?} is not supported (Ed25519)", jwk.crv));
                }
                let x = b64("x", &jwk.x)?;
                if x.len() != 32 {
                    return Err("Ed25519 key must be 32 bytes".into());
                }
                (AlgSet::of(&[Alg::EdDSA]), DecodingKey::from_ed_der(&x), x)
            }
            "oct" => return Err("symmetric keys are taken only from `hmac_secret`".into()),
            other => return Err(format!("key type {other:?} is not supported (RSA, EC, OKP)")),
        };
        let mut algs = family.intersect(allowed);
        if let Some(a) = &jwk.alg {
            match Alg::parse(a) {
                Some(a) if family.contains(a) => algs = algs.intersect(AlgSet::of(&[a])),
                _ => return Err(format!("`alg` {a:?} does not fit a {} key", jwk.kty)),
            }
        }
        if algs.is_empty() {
            return Err("none of the allowed algorithms fits this key".into());
        }
        Ok(VerifyKey { kid: jwk.kid.as_deref().map(Into::into), algs, key, material })
    }

    fn same_as(&self, other: &VerifyKey) -> bool {
        self.kid == other.kid && self.algs == other.algs && self.material == other.material
    }
}

/// The keys of one provider at one moment.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<Box<str>, Arc<VerifyKey>>,
    /// Keys without a `kid` (inline keys, the HMAC secret); tried when no `kid` matches.
    anonymous: Vec<Arc<VerifyKey>>,
}

/// How many keys a token without a usable `kid` may be tried against: bounds the work one
/// request can cause.
const MAX_TRIES: usize = 4;

impl KeySet {
    /// Builds a set from fetched `keys` and the provider's configured `statics`; a fetched key
    /// equal to one in `previous` keeps that `Arc` (see `VerifyKey::material`).
    pub fn new(keys: Vec<VerifyKey>, statics: &[Arc<VerifyKey>], previous: Option<&KeySet>) -> KeySet {
        let mut set = KeySet::default();
        let fetched = keys.into_iter().map(|key| {
            let reuse = previous.and_then(|p| p.iter().find(|k| k.same_as(&key)).cloned());
            reuse.unwrap_or_else(|| Arc::new(key))
        });
        for key in statics.iter().cloned().chain(fetched) {
            match &key.kid {
                Some(kid) => {
                    // The first key under a kid wins; later duplicates are ignored.
                    set.by_kid.entry(kid.clone()).or_insert(key);
                }
                None => set.anonymous.push(key),
            }
        }
        set
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.by_kid.values().chain(self.anonymous.iter())
    }

    /// Keys to try for a token naming `kid` and `alg`: the key with that kid, else (no kid, or
    /// a kid unknown here) the keys without one that answer `alg`.
    pub fn candidates<'a>(&'a self, kid: Option<&str>, alg: Alg) -> impl Iterator<Item = &'a Arc<VerifyKey>> + 'a {
        let named = kid.and_then(|k| self.by_kid.get(k));
        let anonymous = if named.is_some() { &[][..] } else { &self.anonymous[..] };
        let unnamed_token = if kid.is_none() && named.is_none() { Some(self.by_kid.values()) } else { None };
        named
            .into_iter()
            .chain(anonymous.iter())
            .chain(unnamed_token.into_iter().flatten())
            .filter(move |k| k.algs.contains(alg))
            .take(MAX_TRIES)
    }

    /// Whether this exact key is still in the set (a withdrawn key's verified tokens stop working).
    pub fn contains(&self, key: &Arc<VerifyKey>) -> bool {
        match &key.kid {
            Some(kid) => self.by_kid.get(kid).is_some_and(|k| Arc::ptr_eq(k, key)),
            None => self.anonymous.iter().any(|k| Arc::ptr_eq(k, key)),
        }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}
