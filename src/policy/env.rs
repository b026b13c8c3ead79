//! Long-lived services that policies hold on to: they outlive a snapshot, so state such as
//! rate-limit counters, token caches and JWKS survives a reload.
//!
//! One `PolicyEnv` belongs to one gateway (the snapshot records which, so reloads compile with
//! the same one). `gatehouse check` compiles with a fresh one and opens no connections.

/// Services shared by every compiled policy of one gateway.
#[derive(Debug, Default)]
pub struct PolicyEnv {
    /// Service-identity tokens (`authentication-managed-identity`), keyed by endpoint + client + scope.
    pub service_tokens: crate::identity::service::Tokens,
    /// Identity providers by name: JWKS, verified-token caches and refresh tasks kept across
    /// reloads while a provider's config is unchanged.
    pub identity: std::sync::Arc<crate::identity::providers::Registry>,
    /// Rate-limit, quota and concurrency counters (in-process, or shared through `cluster.redis`).
    pub limits: crate::ratelimit::LimitsCell,
    /// Every subscription in memory (`policy::subscription`). Empty until the gateway opens the
    /// store and fills it (`SubscriptionIndex::refresh`), so policies can be compiled first;
    /// stays empty for `gatehouse check`.
    pub subscriptions: std::sync::Arc<crate::identity::subscription::SubscriptionIndex>,
    /// The in-memory response and value cache (`cache-lookup`, `cache-store-value`, …); entries
    /// survive reloads. Redis, when configured, is reached through `limits`.
    pub cache: crate::cache::CacheCell,
}

impl PolicyEnv {
    pub fn new() -> Self {
        PolicyEnv::default()
    }
}
