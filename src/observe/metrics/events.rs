//! Process-wide counters that other rooms increment without holding a registry: JWKS fetches,
//! cache lookups and rate-limit decisions. Each is a short table of (label, [a, b]) searched by
//! name under a read lock; labels are config names or `&'static str` kinds, and a table stops
//! growing at [`MAX_LABELS`] (later names count under `~other`), so cardinality stays bounded.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

const MAX_LABELS: usize = 256;

/// A counter with one config-name label and a two-valued outcome label.
struct Table {
    rows: RwLock<Vec<(Box<str>, [AtomicU64; 2])>>,
}

impl Table {
    const fn new() -> Table {
        Table { rows: RwLock::new(Vec::new()) }
    }

    fn add(&self, name: &str, second: bool) {
        let i = usize::from(second);
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
                let c = [AtomicU64::new(0), AtomicU64::new(0)];
                c[i].fetch_add(1, Ordering::Relaxed);
                rows.push((name.into(), c));
            }
        }
    }

    fn render(&self, out: &mut String, metric: &str, label: &str, outcome: &str, values: [&str; 2]) {
        let mut rows: Vec<(String, [u64; 2])> = self
            .rows
            .read()
            .iter()
            .map(|(n, c)| (n.to_string(), [c[0].load(Ordering::Relaxed), c[1].load(Ordering::Relaxed)]))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_count_by_name_and_outcome_and_stop_growing() {
        let t = Table::new();
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
