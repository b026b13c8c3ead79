//! The value cache (APIM `<cache-lookup-value>`, `<cache-store-value>`, `<cache-remove-value>`):
//! policies keep values by a key they render (a token fetched once, a lookup's result) in the
//! same storage as the response cache. Three policies in one module: they share the key, the
//! storage and their config checks, and each is a few lines.
//!
//! `cache-lookup-value` sets a variable (declared like `set-variable`'s, so later templates may
//! read `{var.NAME}`); on a miss it sets `default_value`, or leaves the variable unset.

use std::sync::Arc;

use serde::Deserialize;

use super::cache_lookup::store_for;
use super::{util, BuildCx, Exchange, Outcome, Policy, Step};
use crate::cache::{CachingType, Store};
use crate::config::units::Duration;
use crate::config::ConfigError;
use crate::expr::Template;

/// `cache-lookup-value: { key: "token-{subscription.id}", variable_name: token, default_value: "" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupValueConfig {
    pub key: String,
    pub variable_name: String,
    #[serde(default)]
    pub default_value: Option<String>,
    #[serde(default)]
    pub caching_type: CachingType,
}

/// `cache-store-value: { key: "token-{subscription.id}", value: "{var.token}", duration: 300s }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreValueConfig {
    pub key: String,
    pub value: String,
    pub duration: Duration,
    #[serde(default)]
    pub caching_type: CachingType,
}

/// `cache-remove-value: { key: "token-{subscription.id}" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveValueConfig {
    pub key: String,
    #[serde(default)]
    pub caching_type: CachingType,
}

/// The key in the store: `v:` + the rendered template (apart from response entries' `r:`).
fn key(t: &Template, x: &Exchange) -> String {
    let v = t.render(x);
    let mut k = String::with_capacity(2 + v.len());
    k.push_str("v:");
    k.push_str(&v);
    k
}

#[derive(Debug)]
pub struct LookupValue {
    key: Template,
    var: Arc<str>,
    default: Option<String>,
    store: Store,
}

impl LookupValue {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: LookupValueConfig = cx.config()?;
        let mut errors = Vec::new();
        let ok_name = !c.variable_name.is_empty()
            && c.variable_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok_name {
            errors.push(cx.error(&["variable_name"], "a variable name is letters, digits, `_` and `-`"));
        }
        let key = cx.template(&c.key, &["key"]).map_err(|e| errors.push(e)).ok();
        let store = store_for(cx, c.caching_type, &mut errors);
        util::done(errors)?;
        Ok(LookupValue {
            key: key.ok_or_else(Vec::new)?,
            var: Arc::from(c.variable_name),
            default: c.default_value,
            store: store.ok_or_else(Vec::new)?,
        })
    }

    fn found(&self, x: &mut Exchange, v: Option<bytes::Bytes>) -> Outcome {
        crate::observe::metrics::cache_lookup("value", v.is_some());
        let value = match v {
            Some(b) => Some(String::from_utf8_lossy(&b).into_owned()),
            None => self.default.clone(),
        };
        if let Some(value) = value {
            x.set_var(&self.var, value);
        }
        Outcome::Continue
    }
}

impl Policy for LookupValue {
    fn kind(&self) -> &'static str {
        "cache-lookup-value"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let k = key(&self.key, x);
        if !self.store.is_external() {
            let v = self.store.get_now(&k);
            return Step::Ready(self.found(x, v));
        }
        Step::Wait(Box::pin(async move {
            let v = self.store.get(&k).await;
            self.found(x, v)
        }))
    }
}

#[derive(Debug)]
pub struct StoreValue {
    key: Template,
    value: Template,
    ttl: std::time::Duration,
    store: Store,
}

impl StoreValue {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: StoreValueConfig = cx.config()?;
        let mut errors = Vec::new();
        if c.duration.0.as_millis() == 0 {
            errors.push(cx.error(&["duration"], "duration must be at least 1ms"));
        }
        let key = cx.template(&c.key, &["key"]).map_err(|e| errors.push(e)).ok();
        let value = cx.template(&c.value, &["value"]).map_err(|e| errors.push(e)).ok();
        let store = store_for(cx, c.caching_type, &mut errors);
        util::done(errors)?;
        Ok(StoreValue {
            key: key.ok_or_else(Vec::new)?,
            value: value.ok_or_else(Vec::new)?,
            ttl: c.duration.0,
            store: store.ok_or_else(Vec::new)?,
        })
    }
}

impl Policy for StoreValue {
    fn kind(&self) -> &'static str {
        "cache-store-value"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let k = key(&self.key, x);
        let v = bytes::Bytes::from(self.value.render(x).into_owned());
        if !self.store.is_external() {
            self.store.set_soon(k, v, self.ttl);
            return Step::Ready(Outcome::Continue);
        }
        // Waited for, so a lookup later in the same request sees the value.
        Step::Wait(Box::pin(async move {
            self.store.set(k, v, self.ttl).await;
            Outcome::Continue
        }))
    }
}

#[derive(Debug)]
pub struct RemoveValue {
    key: Template,
    store: Store,
}

impl RemoveValue {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: RemoveValueConfig = cx.config()?;
        let mut errors = Vec::new();
        let key = cx.template(&c.key, &["key"]).map_err(|e| errors.push(e)).ok();
        let store = store_for(cx, c.caching_type, &mut errors);
        util::done(errors)?;
        Ok(RemoveValue { key: key.ok_or_else(Vec::new)?, store: store.ok_or_else(Vec::new)? })
    }
}

impl Policy for RemoveValue {
    fn kind(&self) -> &'static str {
        "cache-remove-value"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let k = key(&self.key, x);
        if !self.store.is_external() {
            self.store.remove_now(&k);
            return Step::Ready(Outcome::Continue);
        }
        Step::Wait(Box::pin(async move {
            self.store.remove(&k).await;
            Outcome::Continue
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    #[test]
    fn values_round_trip_through_the_store() {
        let store = build_with(
            "{ key: 'k-{request.query.u}', value: 'v-{request.query.u}', duration: 60s, caching_type: internal }",
            Stage::Inbound,
            StoreValue::build,
        )
        .expect("store");
        let lookup = "{ key: 'k-{request.query.u}', variable_name: tier, default_value: none, caching_type: internal }";
        let lookup = build_with(lookup, Stage::Inbound, LookupValue::build).expect("lookup");
        let remove =
            build_with("{ key: 'k-{request.query.u}', caching_type: internal }", Stage::Inbound, RemoveValue::build)
                .expect("remove");
        // Policies built separately share one memory only through one PolicyEnv; use one store.
        let lookup = LookupValue { store: store.store.clone(), ..lookup };
        let remove = RemoveValue { store: store.store.clone(), ..remove };
        let mut x = exchange("/orders/1?u=bob");
        assert!(matches!(run_ready(&lookup, &mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("none"), "a miss sets the default");
        assert!(matches!(run_ready(&store, &mut x), Outcome::Continue));
        assert!(matches!(run_ready(&lookup, &mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("v-bob"));
        let mut other = exchange("/orders/1?u=eve");
        assert!(matches!(run_ready(&lookup, &mut other), Outcome::Continue));
        assert_eq!(other.var("tier"), Some("none"), "another key");
        assert!(matches!(run_ready(&remove, &mut x), Outcome::Continue));
        let mut x = exchange("/orders/1?u=bob");
        assert!(matches!(run_ready(&lookup, &mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("none"), "removed");
    }

    #[test]
    fn config_errors_are_located() {
        let e = build_with("{ key: '{var.nope}', value: x, duration: 0s }", Stage::Inbound, StoreValue::build)
            .expect_err("errors");
        let all = e.join("\n");
        assert!(all.contains("p.duration: duration must be at least 1ms"), "{all}");
        assert!(all.contains("p.key: `var.nope` is not set by any set-variable"), "{all}");
        let e = build_with("{ key: k, variable_name: 'a b' }", Stage::Inbound, LookupValue::build).expect_err("name");
        assert!(e.join("\n").contains("p.variable_name: a variable name"), "{e:?}");
    }
}
