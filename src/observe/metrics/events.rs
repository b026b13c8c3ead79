//! Process-wide counters that other rooms increment without holding a registry: JWKS fetches,
//! cache lookups and rate-limit decisions. Each is a short table of (label, [a, b]) searched by
//! name under a read lock; labels are config names or `&'static str` kinds, and a table stops
//! growing at [`MAX_LABELS`] (later names count under `~other`), so cardinality stays bounded.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

const MAX_LABELS: usize = 256;

/// A counter with one config-name label and an `N`-valued outcome label.
struct Table<const N: usize = 2> {
    rows: RwLock<Vec<(Box<str>, [AtomicU64; N])>>,
}

impl<const N: usize> Table<N> {
    const fn new() -> Self {
        Table { rows: RwLock::new(Vec::new()) }
    }

    fn add(&self, name: &str, second: bool) {
        self.add_at(name, usize::from(second));
    }

    /// Counts outcome `i` (an index into the rendered values) for `name`.
    fn add_at(&self, name: &str, i: usize) {
        if let Some((_, c)) = self.rows.read().iter().find(|(n, _)| &**n == name) {
            c[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut rows = self.rows.write();
        let name = if rows.len() >= MAX_LABELS { "~other" } else { name };
        match rows.iter().find(|(n, _)| &**n == name) {
            Some((_, c)) => {
                c[i].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let c = std::array::from_fn(|_| AtomicU64::new(0));
                c[i].fetch_add(1, Ordering::Relaxed);
                rows.push((name.into(), c));
            }
        }
    }

    fn render(&self, out: &mut String, metric: &str, label: &str, outcome: &str, values: [&str; N]) {
        let mut rows: Vec<(String, [u64; N])> = self
            .rows
            .read()
            .iter()
            .map(|(n, c)| (n.to_string(), std::array::from_fn(|i| c[i].load(Ordering::Relaxed))))
            .collect();
        rows.sort();
        for (name, counts) in rows {
            for (value, n) in values.iter().zip(counts) {
                out.push_str(metric);
                out.push('{');
                super::label(out, label, &name);
                let _ = writeln!(out, ",{outcome}=\"{value}\"}} {n}");
            }
        }
    }
}

static JWKS: Table = Table::new();
static CACHE: Table = Table::new();
static RATE_LIMIT: Table = Table::new();
static RESPONSE_CACHE: Table<3> = Table::new();

/// What `cache-lookup` did for one request of API `api`: `gatehouse_response_cache_lookups_total
/// {api,result="hit|miss|bypass"}` (bypass: the method or the request's `Cache-Control` ruled
/// the cache out).
pub fn response_cache_lookup(api: &str, result: CacheResult) {
    RESPONSE_CACHE.add_at(api, result as usize);
}

/// The `result` of a response-cache lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit = 0,
    Miss = 1,
    Bypass = 2,
}

/// A JWKS (or OpenID configuration) fetch for identity provider `provider` ended; `ok` false
/// when it failed. Counted in `gatehouse_jwks_fetches_total{provider,result="ok|error"}`.
pub fn jwks_fetch(provider: &str, ok: bool) {
    JWKS.add(provider, !ok);
}

/// A lookup in cache `cache` (`"response"`, `"jwt"`, …) hit or missed:
/// `gatehouse_cache_lookups_total{cache,result="hit|miss"}`.
pub fn cache_lookup(cache: &str, hit: bool) {
    CACHE.add(cache, !hit);
}

/// A rate-limit or quota policy (`policy` = its kind, e.g. `"rate-limit-by-key"`) let a request
/// through or limited it: `gatehouse_rate_limit_decisions_total{policy,decision="allowed|limited"}`.
pub fn rate_limit_decision(policy: &str, allowed: bool) {
    RATE_LIMIT.add(policy, !allowed);
}

pub(super) fn render(out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP gatehouse_jwks_fetches_total JWKS and OpenID configuration fetches by identity provider and result.\n# TYPE gatehouse_jwks_fetches_total counter"
    );
    JWKS.render(out, "gatehouse_jwks_fetches_total", "provider", "result", ["ok", "error"]);
    let _ = writeln!(
        out,
        "# HELP gatehouse_cache_lookups_total Cache lookups by cache and result.\n# TYPE gatehouse_cache_lookups_total counter"
    );
    CACHE.render(out, "gatehouse_cache_lookups_total", "cache", "result", ["hit", "miss"]);
    let _ = writeln!(
        out,
        "# HELP gatehouse_rate_limit_decisions_total Rate-limit and quota decisions by policy kind.\n# TYPE gatehouse_rate_limit_decisions_total counter"
    );
    RATE_LIMIT.render(out, "gatehouse_rate_limit_decisions_total", "policy", "decision", ["allowed", "limited"]);
    let _ = writeln!(
        out,
        "# HELP gatehouse_response_cache_lookups_total Response cache (cache-lookup) results by API.\n# TYPE gatehouse_response_cache_lookups_total counter"
    );
    RESPONSE_CACHE.render(out, "gatehouse_response_cache_lookups_total", "api", "result", ["hit", "miss", "bypass"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_count_by_name_and_outcome_and_stop_growing() {
        let t: Table = Table::new();
        t.add("corp", false);
        t.add("corp", true);
        t.add("corp", false);
        for i in 0..(MAX_LABELS + 5) {
            t.add(&format!("p{i}"), false);
        }
        let mut out = String::new();
        t.render(&mut out, "m", "provider", "result", ["ok", "error"]);
        assert!(out.contains("m{provider=\"corp\",result=\"ok\"} 2\n"), "{out}");
        assert!(out.contains("m{provider=\"corp\",result=\"error\"} 1\n"), "{out}");
        assert_eq!(t.rows.read().len(), MAX_LABELS + 1);
        assert!(out.contains("m{provider=\"~other\",result=\"ok\"} 6\n"), "{out}");
    }
}
