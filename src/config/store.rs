//! `store:` (where subscriptions and quota counters live) and `products:` (bundles of APIs that
//! may require a subscription), plus the per-API subscription-key names. Serde types only; the
//! store is opened by `store::Store::open` and products are compiled by
//! `identity::subscription::ProductTable`.
//!
//! Unknown keys are reported by the located deserializer (`config::yaml`), so these types need no
//! `deny_unknown_fields`.

use serde::Deserialize;

use super::{Duration, PoliciesConfig};

/// `store:` the embedded SQLite file (default) or a PostgreSQL database shared by several nodes.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative paths are resolved against the config file's directory; the
    /// file is created with its tables on first use) or `postgres://user@host:port/db`.
    #[serde(default = "StoreConfig::default_url")]
    pub url: String,
    /// PostgreSQL only: the schema holding Gatehouse's tables (created if missing); default:
    /// the connection's `search_path` (normally `public`).
    pub schema: Option<String>,
    /// How often each node looks for subscription changes made elsewhere (another node, the CLI).
    #[serde(default = "StoreConfig::default_poll")]
    pub poll_interval: Duration,
    /// Connections in the pool.
    #[serde(default = "StoreConfig::default_max_connections")]
    pub max_connections: u32,
}

impl StoreConfig {
    fn default_url() -> String {
        "sqlite://gatehouse.db".into()
    }
    fn default_poll() -> Duration {
        Duration(std::time::Duration::from_secs(1))
    }
    fn default_max_connections() -> u32 {
        4
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: Self::default_url(),
            schema: None,
            poll_interval: Self::default_poll(),
            max_connections: Self::default_max_connections(),
        }
    }
}

/// One entry of `products:` (APIM's product): a bundle of APIs, open or protected.
#[derive(Debug, Default, Deserialize)]
pub struct ProductConfig {
    /// Callers of the product's APIs must present a subscription key (APIM "protected" product).
    #[serde(default)]
    pub subscription_required: bool,
    /// Names of entries of `apis:`.
    #[serde(default)]
    pub apis: Vec<String>,
    /// Product-scope policies (between global and API scope), applied to callers whose
    /// subscription is scoped to this product.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Free text for people; not used by the gateway.
    pub description: Option<String>,
}

/// `apis.X.subscription_key:` where callers put their key (APIM's per-API header and query names).
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionKeyConfig {
    #[serde(default = "SubscriptionKeyConfig::default_header")]
    pub header: String,
    #[serde(default = "SubscriptionKeyConfig::default_query")]
    pub query: String,
}

impl SubscriptionKeyConfig {
    pub const DEFAULT_HEADER: &'static str = "Ocp-Apim-Subscription-Key";
    pub const DEFAULT_QUERY: &'static str = "subscription-key";

    fn default_header() -> String {
        Self::DEFAULT_HEADER.into()
    }
    fn default_query() -> String {
        Self::DEFAULT_QUERY.into()
    }
}

impl Default for SubscriptionKeyConfig {
    fn default() -> Self {
        SubscriptionKeyConfig { header: Self::default_header(), query: Self::default_query() }
    }
}
