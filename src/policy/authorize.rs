//! `authorize`: role- and scope-based access per API or operation (RBAC), read from the claims
//! `validate-jwt` established earlier in the chain.
//!
//! `scopes: [orders.read]` needs every listed scope (OAuth: the token must carry what the
//! operation needs); `roles: [admin, support]` needs any one listed role (one role that may call
//! is enough). `{ any_of: … }` / `{ all_of: … }` say it explicitly. No validated token → 401;
//! a missing scope or role → 403 `insufficient_scope` (RFC 6750 §3.1).

use serde::Deserialize;
use serde_json::{Map, Value};

use super::validate_jwt::{insufficient, missing_token, RequiredValues};
use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::identity::jwt::claims::{claim_values, lookup, ClaimRule, Match};

/// `authorize: { scopes: [orders.read] }`, `authorize: { roles: [admin], roles_claim: realm_access.roles }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeConfig {
    pub scopes: Option<RequiredValues>,
    pub roles: Option<RequiredValues>,
    /// Default: `scope` and `scp` (space-separated strings or arrays).
    pub scopes_claim: Option<String>,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_roles_claim() -> String {
    "roles".into()
}

#[derive(Debug)]
pub struct Authorize {
    /// Scopes are read from these claims (their values pooled).
    scope_claims: Vec<Box<str>>,
    scopes: Option<ClaimRule>,
    roles: Option<ClaimRule>,
    /// `scope="…"` for the challenge: the scopes this operation needs.
    scope_hint: Option<String>,
}

impl Authorize {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: AuthorizeConfig = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound) {
            errors.push(cx.error(&[], "authorize runs in the inbound section only"));
        }
        if cfg.scopes.is_none() && cfg.roles.is_none() {
            errors.push(cx.error(&[], "give `scopes`, `roles` or both"));
        }
        let mut rule = |field: &str, v: &Option<RequiredValues>, claim: &str, list_mode: Match| {
            let r = v.as_ref().map(|v| v.rule(claim, list_mode));
            match r {
                Some(Ok(r)) if r.values.is_empty() => {
                    errors.push(cx.error(&[field], "list at least one value"));
                    None
                }
                Some(Ok(r)) => Some(r),
                Some(Err(msg)) => {
                    errors.push(cx.error(&[field], msg));
                    None
                }
                None => None,
            }
        };
        let scope_claim = cfg.scopes_claim.clone().unwrap_or_else(|| "scope".into());
        let scopes = rule("scopes", &cfg.scopes, &scope_claim, Match::All);
        let roles = rule("roles", &cfg.roles, &cfg.roles_claim, Match::Any);
        if !errors.is_empty() {
            return Err(errors);
        }
        let scope_claims = match &cfg.scopes_claim {
            Some(c) => vec![c.as_str().into()],
            None => vec!["scope".into(), "scp".into()],
        };
        let scope_hint = scopes.as_ref().map(|r| r.values.join(" "));
        Ok(Authorize { scope_claims, scopes, roles, scope_hint })
    }

    fn has_scopes(&self, rule: &ClaimRule, claims: &Map<String, Value>) -> bool {
        let has = |want: &str| {
            self.scope_claims.iter().any(|c| {
                // Values are split on spaces for `scope`/`scp` whatever the configured name.
                lookup(claims, c).is_some_and(|v| claim_values("scope", v).any(|s| s == want))
            })
        };
        match rule.mode {
            Match::All => rule.values.iter().all(|w| has(w)),
            Match::Any => rule.values.iter().any(|w| has(w)),
        }
    }
}

impl Policy for Authorize {
    fn kind(&self) -> &'static str {
        "authorize"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let Some(claims) = x.jwt.as_deref().and_then(|v| v.map()) else {
            return Outcome::Reject(Box::new(missing_token())).into();
        };
        if let Some(rule) = &self.scopes {
            if !self.has_scopes(rule, claims) {
                let p = insufficient("the token lacks a required scope", self.scope_hint.as_deref());
                return Outcome::Reject(Box::new(p)).into();
            }
        }
        if let Some(rule) = &self.roles {
            if !rule.check(claims) {
                return Outcome::Reject(Box::new(insufficient("the token lacks a required role", None))).into();
            }
        }
        Outcome::Continue.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn authorize(scopes: Option<(&[&str], Match)>, roles: Option<(&[&str], Match)>) -> Authorize {
        let rule = |name: &str, (values, mode): (&[&str], Match)| ClaimRule {
            name: name.into(),
            values: values.iter().map(|v| (*v).into()).collect(),
            mode,
        };
        Authorize {
            scope_claims: vec!["scope".into(), "scp".into()],
            scopes: scopes.map(|s| rule("scope", s)),
            roles: roles.map(|r| rule("roles", r)),
            scope_hint: None,
        }
    }

    fn allowed(a: &Authorize, claims: Value) -> bool {
        let c = claims.as_object().expect("object");
        a.scopes.as_ref().is_none_or(|r| a.has_scopes(r, c)) && a.roles.as_ref().is_none_or(|r| r.check(c))
    }

    #[test]
    fn scopes_from_scope_or_scp_strings_and_arrays() {
        let a = authorize(Some((&["orders.read", "orders.write"], Match::All)), None);
        assert!(allowed(&a, json!({ "scope": "orders.read orders.write" })));
        assert!(allowed(&a, json!({ "scp": ["orders.write", "orders.read"] })));
        assert!(allowed(&a, json!({ "scope": "orders.read", "scp": "orders.write" })), "pooled from both claims");
        assert!(!allowed(&a, json!({ "scope": "orders.read" })));
        assert!(!allowed(&a, json!({ "roles": ["orders.read", "orders.write"] })), "roles are not scopes");
        let any = authorize(Some((&["a", "b"], Match::Any)), None);
        assert!(allowed(&any, json!({ "scope": "b" })));
    }

    #[test]
    fn roles_any_of_by_default_and_both_requirements_together() {
        let a = authorize(Some((&["orders.read"], Match::All)), Some((&["admin", "support"], Match::Any)));
        assert!(allowed(&a, json!({ "scope": "orders.read", "roles": ["support"] })));
        assert!(!allowed(&a, json!({ "scope": "orders.read", "roles": ["viewer"] })));
        assert!(!allowed(&a, json!({ "roles": ["admin"] })));
    }
}
