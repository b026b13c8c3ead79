//! `quota` (per subscription, with optional per-API and per-operation limits) and
//! `quota-by-key` (per value of `counter_key`): calls and/or bandwidth per fixed, long
//! `renewal_period` (APIM `<quota>`, `<quota-by-key>`); 403 with `Retry-After` when used up.
//! Counters are persisted through the store (or live in Redis); see `docs/rate-limits.md`.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::rate_limit_by_key::inbound_only;
use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::{units, ConfigError};
use crate::expr::Template;
use crate::ratelimit::answer::{self, Headers};
use crate::ratelimit::policy_support::{self as support, Increment};
use crate::ratelimit::{Check, Decision, Limits, Period, QuotaSpec};

/// `bandwidth`: a bare number is kilobytes (as in APIM), a string is a size (`"40MB"`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum Bandwidth {
    Kilobytes(u64),
    Size(units::ByteSize),
}

impl Bandwidth {
    fn bytes(self) -> u64 {
        match self {
            Bandwidth::Kilobytes(kb) => kb.saturating_mul(1024),
            Bandwidth::Size(s) => s.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    #[serde(default)]
    pub calls: Option<u64>,
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    pub renewal_period: units::Duration,
    /// RFC 3339 (`2026-01-01T00:00:00Z`); periods count from here.
    #[serde(default)]
    pub first_period_start: Option<String>,
    /// `quota-by-key` only.
    #[serde(default)]
    pub counter_key: Option<String>,
    /// `quota-by-key` only.
    #[serde(default)]
    pub increment_condition: Option<String>,
    /// `quota` only.
    #[serde(default)]
    pub apis: BTreeMap<String, LevelConfig>,
}

/// An API's (or operation's) own quota inside `quota`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    #[serde(default)]
    pub calls: Option<u64>,
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
    #[serde(default)]
    pub renewal_period: Option<units::Duration>,
    #[serde(default)]
    pub operations: BTreeMap<String, LevelConfig>,
}

#[derive(Debug)]
struct Level {
    spec: QuotaSpec,
    operations: HashMap<String, QuotaSpec>,
}

#[derive(Debug)]
pub struct Quota {
    kind: &'static str,
    spec: QuotaSpec,
    /// `quota-by-key`: the counter key.
    key: Option<Template>,
    apis: HashMap<String, Level>,
    /// `q|SCOPE|` or `qk|SCOPE|`
    prefix: String,
    increment: Increment,
    headers: Headers,
    limits: Limits,
}

fn period_ms(d: units::Duration) -> u64 {
    u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
}

/// Checks one level's limits; `at` is the path below the policy.
fn level_spec(
    cx: &BuildCx<'_>,
    at: &[&str],
    calls: Option<u64>,
    bandwidth: Option<Bandwidth>,
    period: Period,
    errors: &mut Vec<ConfigError>,
) -> QuotaSpec {
    let sub = |k: &'static str| {
        let mut v = at.to_vec();
        v.push(k);
        v
    };
    if calls.is_none() && bandwidth.is_none() {
        errors.push(cx.error(at, "set calls, bandwidth or both"));
    }
    if calls == Some(0) {
        errors.push(cx.error(&sub("calls"), "calls must be at least 1"));
    }
    let bytes = bandwidth.map(Bandwidth::bytes);
    if bytes == Some(0) {
        errors.push(cx.error(&sub("bandwidth"), "bandwidth must be more than 0"));
    }
    QuotaSpec { calls, bytes, period }
}

impl Quota {
    pub fn build_quota(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        Self::build(cx, false)
    }

    pub fn build_by_key(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        Self::build(cx, true)
    }

    fn build(cx: &BuildCx<'_>, by_key: bool) -> Result<Self, Vec<ConfigError>> {
        let c: QuotaConfig = cx.config()?;
        let mut errors = Vec::new();
        inbound_only(cx, &mut errors);
        let first_start_ms = match &c.first_period_start {
            None => 0,
            Some(s) => match time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
                Ok(t) => i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
                Err(_) => {
                    errors.push(cx.error(&["first_period_start"], "use an RFC 3339 time, e.g. 2026-01-01T00:00:00Z"));
                    0
                }
            },
        };
        let period = Period { first_start_ms, length_ms: period_ms(c.renewal_period) };
        let spec = level_spec(cx, &[], c.calls, c.bandwidth, period, &mut errors);
        let mut apis = HashMap::new();
        let key = match (by_key, &c.counter_key) {
            (true, Some(src)) => cx.template(src, &["counter_key"]).map_err(|e| errors.push(e)).ok(),
            (true, None) => {
                errors.push(cx.error(&[], "quota-by-key needs counter_key"));
                None
            }
            (false, Some(_)) => {
                errors.push(cx.error(&["counter_key"], "quota counts per subscription; use quota-by-key for a key"));
                None
            }
            (false, None) => None,
        };
        if by_key && !c.apis.is_empty() {
            errors.push(cx.error(&["apis"], "per-API limits belong to quota; quota-by-key has one counter per key"));
        }
        if !by_key && c.increment_condition.is_some() {
            errors.push(cx.error(&["increment_condition"], "increment_condition belongs to quota-by-key"));
        }
        for (name, a) in &c.apis {
            let at = ["apis", name.as_str()];
            let p = a.renewal_period.map_or(period, |d| Period { first_start_ms, length_ms: period_ms(d) });
            let api_spec = level_spec(cx, &at, a.calls, a.bandwidth, p, &mut errors);
            let mut operations = HashMap::new();
            for (op, o) in &a.operations {
                let at = ["apis", name.as_str(), "operations", op.as_str()];
                let p = o.renewal_period.map_or(p, |d| Period { first_start_ms, length_ms: period_ms(d) });
                operations.insert(op.clone(), level_spec(cx, &at, o.calls, o.bandwidth, p, &mut errors));
            }
            apis.insert(name.clone(), Level { spec: api_spec, operations });
        }
        let increment = Increment::build(cx, c.increment_condition.as_deref(), "increment_condition")
            .map_err(|e| errors.push(e))
            .ok();
        let (Some(increment), true) = (increment, errors.is_empty()) else { return Err(errors) };
        Ok(Quota {
            kind: if by_key { "quota-by-key" } else { "quota" },
            spec,
            key,
            apis,
            prefix: format!("{}|{}|{}|", if by_key { "qk" } else { "q" }, cx.scope, period.length_ms),
            increment,
            headers: Headers::default(),
            limits: cx.env.limits.get().clone(),
        })
    }

    fn levels(&self, x: &Exchange) -> Vec<(String, QuotaSpec)> {
        let base = match &self.key {
            Some(t) => support::counter_key(&self.prefix, t, x),
            None => match &x.caller {
                Some(c) => format!("{}s:{}", self.prefix, c.subscription_id),
                None => format!("{}ip:{}", self.prefix, x.client_ip),
            },
        };
        let mut out = Vec::with_capacity(3);
        let api = &x.route.api.name;
        if let Some(a) = self.apis.get(api) {
            out.push((format!("{base}|a:{api}"), a.spec));
            if let Some((op, s)) = x.route.operation.as_deref().and_then(|op| a.operations.get_key_value(op)) {
                out.push((format!("{base}|o:{api}/{op}"), *s));
            }
        }
        out.insert(0, (base, self.spec));
        out
    }

    fn refuse(&self, levels: &[(String, QuotaSpec)], taken: usize, n: u64, d: Decision) -> Outcome {
        for (key, spec) in &levels[..taken] {
            self.limits.refund_quota(key, spec, n);
        }
        Outcome::Reject(Box::new(answer::refusal(&d, true, &self.headers)))
    }

    fn pass(&self, x: &mut Exchange, levels: Vec<(String, QuotaSpec)>, n: u64, counts: bool) -> Outcome {
        if !counts {
            for (key, spec) in &levels {
                self.limits.refund_quota(key, spec, n);
            }
            return Outcome::Continue;
        }
        // Bandwidth: the request body as declared now, the response body when it has been sent.
        let declared = x
            .request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        if declared > 0 && levels.iter().any(|(_, s)| s.bytes.is_some()) {
            for (key, spec) in &levels {
                if spec.bytes.is_some() {
                    self.limits.add_quota_bytes(key, spec, declared);
                }
            }
        }
        if levels.iter().any(|(_, s)| s.bytes.is_some()) {
            // The response body's bytes, once it has gone out (APIM counts both directions).
            let still_counts = self.increment.still_counts(x);
            let limits = self.limits.clone();
            let bandwidth: Vec<(String, QuotaSpec)> =
                levels.iter().filter(|(_, s)| s.bytes.is_some()).map(|(k, s)| (k.clone(), *s)).collect();
            x.on_sent.push(Box::new(move |status, sent| {
                if sent > 0 && still_counts(status) {
                    for (key, spec) in &bandwidth {
                        limits.add_quota_bytes(key, spec, sent);
                    }
                }
            }));
        }
        let limits = self.limits.clone();
        self.increment.defer(x, move || {
            for (key, spec) in &levels {
                limits.refund_quota(key, spec, n);
            }
        });
        Outcome::Continue
    }
}

impl Policy for Quota {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let levels = self.levels(x);
        let counts = self.increment.counts_now(x);
        for (i, (key, spec)) in levels.iter().enumerate() {
            match self.limits.try_quota(key, spec, 1) {
                Check::Done(d) if d.allowed() => {}
                Check::Done(d) => return Step::Ready(self.refuse(&levels, i, 1, d)),
                Check::Pending => {
                    return Step::Wait(Box::pin(async move {
                        for (j, (key, spec)) in levels.iter().enumerate().skip(i) {
                            let d = self.limits.quota(key, spec, 1).await;
                            if !d.allowed() {
                                return self.refuse(&levels, j, 1, d);
                            }
                        }
                        self.pass(x, levels, 1, counts)
                    }))
                }
            }
        }
        Step::Ready(self.pass(x, levels, 1, counts))
    }
}

#[cfg(test)]
mod tests {
    use super::Bandwidth;
    use crate::ratelimit::policy_support::compile_inbound;

    #[test]
    fn bandwidth_is_kilobytes_or_a_size() {
        let kb: Bandwidth = serde_json::from_str("40").expect("number");
        assert_eq!(kb.bytes(), 40 * 1024);
        let size: Bandwidth = serde_json::from_str("\"1MB\"").expect("size");
        assert_eq!(size.bytes(), 1_000_000);
    }

    #[test]
    fn quota_configs() {
        let ok = [
            "[ { quota: { calls: 10000, renewal_period: 30d } } ]",
            "[ { quota: { bandwidth: 40000, renewal_period: 0, first_period_start: \"2026-01-01T00:00:00Z\" } } ]",
            "[ { quota: { calls: 10, renewal_period: 1h, apis: { orders: { calls: 5, operations: { get: { bandwidth: \"1MiB\" } } } } } } ]",
            "[ { quota-by-key: { calls: 10, renewal_period: 1h, counter_key: \"{request.ip}\", increment_condition: \"response.status < 400\" } } ]",
        ];
        for p in ok {
            assert_eq!(compile_inbound(p), Ok(()), "{p}");
        }
        let cases = [
            ("[ { quota: { renewal_period: 1h } } ]", "quota: set calls, bandwidth or both"),
            ("[ { quota: { calls: 0, renewal_period: 1h } } ]", "quota.calls: calls must be at least 1"),
            (
                "[ { quota: { calls: 1, renewal_period: 1h, first_period_start: soon } } ]",
                "quota.first_period_start: use an RFC 3339",
            ),
            (
                "[ { quota: { calls: 1, renewal_period: 1h, counter_key: k } } ]",
                "quota.counter_key: quota counts per subscription",
            ),
            ("[ { quota-by-key: { calls: 1, renewal_period: 1h } } ]", "quota-by-key: quota-by-key needs counter_key"),
        ];
        for (p, want) in cases {
            let e = compile_inbound(p).err().unwrap_or_default();
            assert!(e.iter().any(|e| e.contains(want)), "{p}: {e:#?}");
        }
    }
}
