//! `identity_providers:` — who issues the tokens `validate-jwt` accepts (product.md §2).
//!
//! A provider is found by OIDC discovery (`openid_configuration`), by a `jwks_uri`, or given as
//! inline keys; a shared secret enables the HMAC algorithms. These types mirror the YAML; the
//! checks (exactly one key source, URLs, key material) live in `identity::providers::compile`.

use serde::Deserialize;

use super::Duration;

/// One entry of `identity_providers:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderConfig {
    /// OIDC discovery document URL (`…/.well-known/openid-configuration`); gives `issuer` and `jwks_uri`.
    pub openid_configuration: Option<String>,
    /// JWKS URL, when there is no discovery document.
    pub jwks_uri: Option<String>,
    /// Expected `iss`; with discovery it defaults to the document's `issuer`.
    pub issuer: Option<String>,
    /// Inline public keys as JWKs (`{ kty: RSA, kid: k1, n: …, e: AQAB }`).
    #[serde(default)]
    pub keys: Vec<JwkConfig>,
    /// Shared secret for HS256/HS384/HS512 (UTF-8 bytes, at least 32). Use `{{secret:NAME}}`.
    pub hmac_secret: Option<String>,
    /// Narrows the accepted algorithms (default: every algorithm a key's type allows, never `none`).
    pub algorithms: Option<Vec<String>>,
    /// How often the keys are fetched again in the background.
    #[serde(default = "IdentityProviderConfig::default_refresh")]
    pub refresh_interval: Duration,
    /// At most one fetch per this interval when a token names an unknown `kid`.
    #[serde(default = "IdentityProviderConfig::default_min_refetch")]
    pub min_refetch_interval: Duration,
    /// How long a `kid` that a fresh fetch did not contain is rejected without asking again.
    #[serde(default = "IdentityProviderConfig::default_negative")]
    pub unknown_kid_ttl: Duration,
    /// PEM CA bundle trusted for https fetches (relative to the config file); default: the
    /// system's roots.
    pub ca: Option<std::path::PathBuf>,
    /// Connect + response + body, per fetch.
    #[serde(default = "IdentityProviderConfig::default_timeout")]
    pub fetch_timeout: Duration,
    /// Verified tokens remembered (per provider) so a repeated token costs no signature check.
    #[serde(default = "IdentityProviderConfig::default_cache")]
    pub token_cache_size: usize,
}

impl IdentityProviderConfig {
    fn default_refresh() -> Duration {
        Duration(std::time::Duration::from_secs(300))
    }
    fn default_min_refetch() -> Duration {
        Duration(std::time::Duration::from_secs(1))
    }
    fn default_negative() -> Duration {
        Duration(std::time::Duration::from_secs(30))
    }
    fn default_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(5))
    }
    fn default_cache() -> usize {
        10_000
    }
}

/// A JSON Web Key (RFC 7517) as written inline or served in a JWKS. Members other than these are
/// ignored in a fetched JWKS (IdPs add their own); in the YAML the loader reports them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct JwkConfig {
    pub kty: String,
    pub kid: Option<String>,
    #[serde(rename = "use")]
    pub use_: Option<String>,
    pub alg: Option<String>,
    pub key_ops: Option<Vec<String>>,
    /// RSA modulus and exponent (base64url).
    pub n: Option<String>,
    pub e: Option<String>,
    /// EC / OKP curve and coordinates (base64url).
    pub crv: Option<String>,
    pub x: Option<String>,
    pub y: Option<String>,
    /// Certificate members are accepted but not used: keys are trusted as configured or fetched.
    pub x5c: Option<Vec<String>>,
    pub x5t: Option<String>,
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
}
