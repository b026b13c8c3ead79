//! The external configuration: the YAML document a user writes (product.md §2).
//!
//! These types mirror the file one to one and are only ever read by [`crate::snapshot::compile`],
//! which validates them and builds the immutable runtime form. Nothing on the request path
//! touches a `config` type. Fields carry their defaults here so the documentation of a key and
//! its default live side by side.

pub mod identity;
pub mod store;
pub mod units;
pub mod yaml;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use units::{ByteSize, Duration};
pub use yaml::{ConfigError, Document, PathSeg};

/// `runtime:` process-level settings.
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Worker threads; default one per core.
    pub workers: Option<usize>,
    /// How long SIGTERM waits for in-flight requests before exiting.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Duration,
    /// Re-read the config file when it changes (in addition to SIGHUP and `POST /reload`).
    #[serde(default)]
    pub watch_config: bool,
}

fn default_grace() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: String,
    pub tls: Option<ListenerTlsConfig>,
}

#[derive(Debug, Deserialize)]
pub struct ListenerTlsConfig {
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Deserialize)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SNI names this certificate answers for; when empty, the names in the certificate itself.
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// `admin:` the embedded admin listener.
#[derive(Debug, Deserialize)]
pub struct AdminConfig {
    pub bind: String,
    /// Bearer token for mutating admin calls; `{{secret:NAME}}` keeps it out of the file.
    pub token: Option<String>,
}

/// `edge:` everything Apache httpd would do before a request reaches an API.
#[derive(Debug, Default, Deserialize)]
pub struct EdgeConfig {
    /// Peers whose X-Forwarded-For / Forwarded / X-Request-Id are believed (CIDRs or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// `true`, `false` or a block; read from the document by `compress::config::compile`.
    pub compression: Option<serde::de::IgnoredAny>,
}

/// `edge.limits:` defaults follow reliability.md §4 (safe for an edge, like Envoy's edge profile).
#[derive(Debug, Deserialize)]
pub struct LimitsConfig {
    #[serde(default = "LimitsConfig::default_header_bytes")]
    pub header_bytes: ByteSize,
    #[serde(default = "LimitsConfig::default_headers")]
    pub headers: usize,
    #[serde(default = "LimitsConfig::default_uri_bytes")]
    pub uri_bytes: ByteSize,
    #[serde(default = "LimitsConfig::default_body_bytes")]
    pub body_bytes: ByteSize,
    #[serde(default = "LimitsConfig::default_header_timeout")]
    pub header_timeout: Duration,
    #[serde(default = "LimitsConfig::default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Slow-body deadline and the rate that extends it (Apache `RequestReadTimeout body=…,MinRate=…`).
    #[serde(default = "LimitsConfig::default_body_timeout")]
    pub body_timeout: Duration,
    #[serde(default = "LimitsConfig::default_body_min_rate")]
    pub body_min_rate: ByteSize,
    #[serde(default = "LimitsConfig::default_max_connections")]
    pub max_connections: usize,
    #[serde(default = "LimitsConfig::default_h2_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Requests (HTTP/1.1) or streams (HTTP/2) one connection may carry before it is closed
    /// gracefully; bounds paced HTTP/2 Rapid Reset. nginx `keepalive_requests`.
    #[serde(default = "LimitsConfig::default_max_requests")]
    pub max_requests_per_connection: u64,
}

impl LimitsConfig {
    fn default_header_bytes() -> ByteSize {
        ByteSize(16 * 1024)
    }
    fn default_headers() -> usize {
        100
    }
    fn default_uri_bytes() -> ByteSize {
        ByteSize(8 * 1024)
    }
    fn default_body_bytes() -> ByteSize {
        ByteSize(10 * 1024 * 1024)
    }
    fn default_header_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(10))
    }
    fn default_idle_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(60))
    }
    fn default_body_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(20))
    }
    fn default_body_min_rate() -> ByteSize {
        ByteSize(500)
    }
    fn default_max_connections() -> usize {
        10_000
    }
    fn default_h2_streams() -> u32 {
        100
    }
    fn default_max_requests() -> u64 {
        1000
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            header_bytes: Self::default_header_bytes(),
            headers: Self::default_headers(),
            uri_bytes: Self::default_uri_bytes(),
            body_bytes: Self::default_body_bytes(),
            header_timeout: Self::default_header_timeout(),
            idle_timeout: Self::default_idle_timeout(),
            body_timeout: Self::default_body_timeout(),
            body_min_rate: Self::default_body_min_rate(),
            max_connections: Self::default_max_connections(),
            h2_max_concurrent_streams: Self::default_h2_streams(),
            max_requests_per_connection: Self::default_max_requests(),
        }
    }
}

/// `edge.access_log:`.
#[derive(Debug, Deserialize)]
pub struct AccessLogConfig {
    /// `common`, `combined`, `json`, `off`, or an Apache LogFormat string.
    #[serde(default = "AccessLogConfig::default_format")]
    pub format: String,
    /// `stdout` or a file path (reopened on SIGUSR1).
    #[serde(default = "AccessLogConfig::default_path")]
    pub path: String,
}

impl AccessLogConfig {
    fn default_format() -> String {
        "combined".into()
    }
    fn default_path() -> String {
        "stdout".into()
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig { format: Self::default_format(), path: Self::default_path() }
    }
}

/// One entry of `backends:` — a pool of servers behind one name.
#[derive(Debug, Deserialize)]
pub struct BackendConfig {
    pub servers: Vec<ServerConfig>,
    /// `round_robin` (weighted) | `least_request` | `random` | `hash(header:NAME)` | `hash(client_ip)`.
    #[serde(default = "BackendConfig::default_balance")]
    pub balance: String,
    pub health: Option<HealthConfig>,
    #[serde(default)]
    pub passive_health: PassiveHealthConfig,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// `http1` (default) or `http2` (h2c prior knowledge on plain URLs, ALPN h2 on https).
    #[serde(default = "BackendConfig::default_protocol")]
    pub protocol: String,
    pub tls: Option<BackendTlsConfig>,
    /// Send the client's Host (default, like ProxyPreserveHost On) or the server URL's authority.
    #[serde(default = "default_true")]
    pub preserve_host: bool,
}

impl BackendConfig {
    fn default_balance() -> String {
        "round_robin".into()
    }
    fn default_protocol() -> String {
        "http1".into()
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub struct ServerConfig {
    pub url: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// `backends.X.health:` active health checks.
#[derive(Debug, Deserialize)]
pub struct HealthConfig {
    pub path: String,
    #[serde(default = "HealthConfig::default_interval")]
    pub interval: Duration,
    #[serde(default = "HealthConfig::default_timeout")]
    pub timeout: Duration,
    /// Consecutive successes before an unhealthy server is used again.
    #[serde(default = "HealthConfig::default_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures before a server is taken out.
    #[serde(default = "HealthConfig::default_unhealthy")]
    pub unhealthy_threshold: u32,
}

impl HealthConfig {
    fn default_interval() -> Duration {
        Duration(std::time::Duration::from_secs(5))
    }
    fn default_timeout() -> Duration {
        Duration(std::time::Duration::from_secs(2))
    }
    fn default_healthy() -> u32 {
        2
    }
    fn default_unhealthy() -> u32 {
        3
    }
}

/// `backends.X.passive_health:` eject a server after consecutive failed requests.
#[derive(Debug, Deserialize)]
pub struct PassiveHealthConfig {
    #[serde(default = "PassiveHealthConfig::default_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "PassiveHealthConfig::default_ejection")]
    pub ejection_time: Duration,
}

impl PassiveHealthConfig {
    fn default_failures() -> u32 {
        5
    }
    fn default_ejection() -> Duration {
        Duration(std::time::Duration::from_secs(30))
    }
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig { consecutive_failures: Self::default_failures(), ejection_time: Self::default_ejection() }
    }
}

#[derive(Debug, Deserialize)]
pub struct TimeoutsConfig {
    #[serde(default = "TimeoutsConfig::default_connect")]
    pub connect: Duration,
    /// Until the response head arrives.
    #[serde(default = "TimeoutsConfig::default_response")]
    pub response: Duration,
    /// How long an unused pooled connection is kept.
    #[serde(default = "TimeoutsConfig::default_idle")]
    pub idle: Duration,
}

impl TimeoutsConfig {
    fn default_connect() -> Duration {
        Duration(std::time::Duration::from_secs(5))
    }
    fn default_response() -> Duration {
        Duration(std::time::Duration::from_secs(60))
    }
    fn default_idle() -> Duration {
        Duration(std::time::Duration::from_secs(90))
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect: Self::default_connect(),
            response: Self::default_response(),
            idle: Self::default_idle(),
        }
    }
}

/// `backends.X.retry:` idempotent requests without a body are retried on another server.
#[derive(Debug, Deserialize)]
pub struct RetryConfig {
    /// Total tries including the first (nginx `proxy_next_upstream_tries`).
    #[serde(default = "RetryConfig::default_attempts")]
    pub attempts: u32,
    /// What is retried: `connect-failure` and/or HTTP status codes such as 503.
    #[serde(default = "RetryConfig::default_on")]
    pub on: Vec<RetryOn>,
    /// Retries may add at most this share of the backend's request rate (Envoy/linkerd retry budget).
    #[serde(default = "RetryConfig::default_budget")]
    pub budget_percent: u32,
    /// Retries always allowed per second, whatever the traffic.
    #[serde(default = "RetryConfig::default_min")]
    pub min_per_second: u32,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(untagged)]
pub enum RetryOn {
    Status(u16),
    Named(RetryCondition),
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetryCondition {
    ConnectFailure,
}

impl RetryConfig {
    fn default_attempts() -> u32 {
        2
    }
    fn default_on() -> Vec<RetryOn> {
        vec![RetryOn::Named(RetryCondition::ConnectFailure), RetryOn::Status(503)]
    }
    fn default_budget() -> u32 {
        20
    }
    fn default_min() -> u32 {
        10
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: Self::default_attempts(),
            on: Self::default_on(),
            budget_percent: Self::default_budget(),
            min_per_second: Self::default_min(),
        }
    }
}

/// `backends.X.tls:` how the gateway verifies (and identifies itself to) https servers.
#[derive(Debug, Deserialize)]
pub struct BackendTlsConfig {
    /// PEM bundle of trusted CAs; default: the system store.
    pub ca: Option<PathBuf>,
    /// Turning verification off is possible but logged as a warning at every load.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Client certificate and key for mTLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// SNI and verification name when it differs from the URL's host.
    pub server_name: Option<String>,
}

/// One entry of `apis:`.
#[derive(Debug, Deserialize)]
pub struct ApiConfig {
    /// Public path prefix, replaced by the server URL's path when forwarding.
    pub path: String,
    /// Only requests for these hosts match (exact, or `*.example.com`); empty = any host.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub backend: Option<String>,
    /// When empty, every method and path under `path` is routed to the backend.
    #[serde(default)]
    pub operations: Vec<OperationConfig>,
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Where the subscription key is read when the API belongs to a product.
    #[serde(default)]
    pub subscription_key: store::SubscriptionKeyConfig,
    /// Add a `Server-Timing` header (edge, policy, backend durations) to this API's responses.
    #[serde(default)]
    pub server_timing: bool,
    /// `false`, `true` (the edge's settings) or this API's own block; read from the document by
    /// `compress::config::compile`.
    pub compression: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
pub struct OperationConfig {
    pub id: String,
    /// An HTTP method or `*` for any.
    pub method: String,
    /// Path template under the API's path: `/`, `/{id}`, `/{id}/items/{item}`, `/files/{*rest}`.
    pub template: String,
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Example responses by status and content type (`"200": { application/json: {…} }`), for
    /// `mock-response`, which reads them from the document itself.
    #[serde(default)]
    pub examples: Option<serde_json::Value>,
}

/// Policy sections of one scope (APIM `<inbound>`, `<backend>`, `<outbound>`, `<on-error>`).
#[derive(Debug, Default, Deserialize)]
pub struct PoliciesConfig {
    #[serde(default)]
    pub inbound: Vec<PolicyConfig>,
    #[serde(default)]
    pub backend: Vec<PolicyConfig>,
    #[serde(default)]
    pub outbound: Vec<PolicyConfig>,
    #[serde(default, rename = "on-error")]
    pub on_error: Vec<PolicyConfig>,
}

/// One policy in a section: `- base` or `- kind: { … }`. Only the kind is read here; the policy's
/// own module deserializes its value (see `policy::BuildCx::config`), so adding a policy never
/// touches this file.
#[derive(Debug, Clone)]
pub enum PolicyConfig {
    Base,
    Policy(String),
}

impl<'de> Deserialize<'de> for PolicyConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PolicyConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`base` or one policy as `name: { … }`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PolicyConfig, E> {
                if v == "base" {
                    Ok(PolicyConfig::Base)
                } else {
                    Err(E::custom(format_args!(
                        "`{v}` needs its settings: write `{v}: {{ … }}` (only `base` stands alone)"
                    )))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<PolicyConfig, A::Error> {
                let Some(kind) = map.next_key::<String>()? else {
                    return Err(serde::de::Error::custom("an empty map is not a policy: write `name: { … }`"));
                };
                map.next_value::<serde::de::IgnoredAny>()?;
                if let Some(other) = map.next_key::<String>()? {
                    return Err(serde::de::Error::custom(format_args!(
                        "one policy per list item: `{other}` needs its own `- {other}: …` entry"
                    )));
                }
                Ok(PolicyConfig::Policy(kind))
            }
        }
        d.deserialize_any(V)
    }
}

/// Every top-level key, in the order `check` reports them.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "runtime",
    "listeners",
    "admin",
    "edge",
    "backends",
    "apis",
    "policies",
    "secrets",
    "identity_providers",
    "cluster",
    "store",
    "products",
    "telemetry",
    "cache",
];

/// The whole document after deserialization. Sections are deserialized one by one so an error
/// in one API does not hide errors in another.
#[derive(Debug, Default)]
pub struct ConfigDoc {
    pub runtime: RuntimeConfig,
    pub listeners: Vec<ListenerConfig>,
    pub admin: Option<AdminConfig>,
    pub edge: EdgeConfig,
    pub backends: BTreeMap<String, BackendConfig>,
    pub apis: BTreeMap<String, ApiConfig>,
    /// Global scope.
    pub policies: PoliciesConfig,
    /// Shared counters for several nodes (`docs/rate-limits.md`).
    pub cluster: Option<crate::ratelimit::ClusterConfig>,
    /// Subscriptions, quotas (`docs/subscriptions.md`).
    pub store: Option<store::StoreConfig>,
    /// Products: APIs bundled behind subscriptions, with product-scope policies.
    pub products: BTreeMap<String, store::ProductConfig>,
    pub telemetry: crate::observe::telemetry::TelemetryConfig,
    /// The in-memory cache's size (`docs/caching.md`).
    pub cache: Option<crate::cache::CacheConfig>,
}
