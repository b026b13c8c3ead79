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
}

impl PolicyEnv {
    pub fn new() -> Self {
        PolicyEnv::default()
    }
}
