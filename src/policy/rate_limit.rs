//! `rate-limit`: calls per sliding `renewal_period` per subscription (APIM `<rate-limit>`), with
//! optional tighter limits per API and per operation; every level that applies must have room.
//! A request without a subscription is counted per client IP.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::rate_limit_by_key::{check_limit, inbound_only};
use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::{units, ConfigError};
use crate::ratelimit::policy_support::{OutputNames, Outputs};
use crate::ratelimit::{answer, Check, Decision, Limits, RateSpec};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub calls: u64,
    pub renewal_period: units::Duration,
    #[serde(default)]
    pub apis: BTreeMap<String, ApiLimitConfig>,
    #[serde(default)]
    pub retry_after_header_name: Option<String>,
    #[serde(default)]
    pub retry_after_variable_name: Option<String>,
    #[serde(default)]
    pub remaining_calls_header_name: Option<String>,
    #[serde(default)]
    pub remaining_calls_variable_name: Option<String>,
    #[serde(default)]
    pub total_calls_header_name: Option<String>,
    #[serde(default)]
    pub ratelimit_headers: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiLimitConfig {
    pub calls: u64,
    pub renewal_period: units::Duration,
    #[serde(default)]
    pub operations: BTreeMap<String, OperationLimitConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationLimitConfig {
    pub calls: u64,
    pub renewal_period: units::Duration,
}

#[derive(Debug)]
struct ApiLimit {
    spec: RateSpec,
    operations: HashMap<String, RateSpec>,
}

#[derive(Debug)]
pub struct RateLimit {
    spec: RateSpec,
    apis: HashMap<String, ApiLimit>,
    /// `rl|SCOPE|`
    prefix: String,
    outputs: Outputs,
    limits: Limits,
}

fn spec(calls: u64, period: units::Duration) -> RateSpec {
    RateSpec { limit: calls, period_ms: u64::try_from(period.0.as_millis()).unwrap_or(u64::MAX) }
}

impl RateLimit {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: RateLimitConfig = cx.config()?;
        let mut errors = Vec::new();
        inbound_only(cx, &mut errors);
        check_limit(cx, c.calls, c.renewal_period, &mut errors);
        let mut apis = HashMap::new();
        for (name, a) in &c.apis {
            if a.calls == 0 {
                errors.push(cx.error(&["apis", name.as_str(), "calls"], "calls must be at least 1"));
            }
            if a.renewal_period.0.is_zero() {
                errors
                    .push(cx.error(&["apis", name.as_str(), "renewal_period"], "renewal_period must be at least 1ms"));
            }
            let mut operations = HashMap::new();
            for (op, o) in &a.operations {
                if o.calls == 0 {
                    errors.push(cx.error(
                        &["apis", name.as_str(), "operations", op.as_str(), "calls"],
                        "calls must be at least 1",
                    ));
                }
                if o.renewal_period.0.is_zero() {
                    errors.push(cx.error(
                        &["apis", name.as_str(), "operations", op.as_str(), "renewal_period"],
                        "renewal_period must be at least 1ms",
                    ));
                }
                operations.insert(op.clone(), spec(o.calls, o.renewal_period));
            }
            apis.insert(name.clone(), ApiLimit { spec: spec(a.calls, a.renewal_period), operations });
        }
        let outputs = Outputs::new(&OutputNames {
            retry_after_header_name: c.retry_after_header_name,
            retry_after_variable_name: c.retry_after_variable_name,
            remaining_calls_header_name: c.remaining_calls_header_name,
            remaining_calls_variable_name: c.remaining_calls_variable_name,
            total_calls_header_name: c.total_calls_header_name,
            ratelimit_headers: c.ratelimit_headers,
        })
        .map_err(|(field, msg)| errors.push(cx.error(&[field], msg)))
        .ok();
        let (Some(outputs), true) = (outputs, errors.is_empty()) else { return Err(errors) };
        Ok(RateLimit {
            spec: spec(c.calls, c.renewal_period),
            apis,
            prefix: format!("rl|{}|", cx.scope),
            outputs,
            limits: cx.env.limits.get().clone(),
        })
    }

    /// The counters that apply to this request: the subscription's, then the API's and the
    /// operation's when configured.
    fn levels(&self, x: &Exchange) -> Vec<(String, RateSpec)> {
        let mut who = String::with_capacity(self.prefix.len() + 48);
        who.push_str(&self.prefix);
        match &x.caller {
            Some(c) => {
                who.push_str("s:");
                who.push_str(&c.subscription_id);
            }
            None => {
                who.push_str("ip:");
                who.push_str(&x.client_ip.to_string());
            }
        }
        let with_period = |k: &str, s: RateSpec| (format!("{k}|{}", s.period_ms), s);
        let mut out = Vec::with_capacity(3);
        out.push(with_period(&who, self.spec));
        let api = &x.route.api.name;
        if let Some(a) = self.apis.get(api) {
            out.push(with_period(&format!("{who}|a:{api}"), a.spec));
            if let Some((op, s)) = x.route.operation.as_deref().and_then(|op| a.operations.get_key_value(op)) {
                out.push(with_period(&format!("{who}|o:{api}/{op}"), *s));
            }
        }
        out
    }

    fn refuse(&self, x: &mut Exchange, levels: &[(String, RateSpec)], taken: &[Decision], d: Decision) -> Outcome {
        for ((key, spec), t) in levels.iter().zip(taken) {
            self.limits.refund_rate(key, *spec, 1, t.ticket);
        }
        for (name, value) in self.outputs.vars(&d) {
            x.set_var(&name, value);
        }
        Outcome::Reject(Box::new(answer::refusal(&d, false, &self.outputs.headers)))
    }

    fn pass(&self, x: &mut Exchange, taken: &[Decision]) -> Outcome {
        for d in taken {
            self.outputs.headers.write(d, &mut x.extra_response_headers);
        }
        if let Some(tightest) = taken.iter().min_by_key(|d| d.remaining) {
            for (name, value) in self.outputs.vars(tightest) {
                x.set_var(&name, value);
            }
        }
        Outcome::Continue
    }
}

impl Policy for RateLimit {
    fn kind(&self) -> &'static str {
        "rate-limit"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let levels = self.levels(x);
        let mut taken = Vec::with_capacity(levels.len());
        for (i, (key, spec)) in levels.iter().enumerate() {
            match self.limits.try_rate(key, *spec, 1) {
                Check::Done(d) if d.allowed() => taken.push(d),
                Check::Done(d) => return Step::Ready(self.refuse(x, &levels, &taken, d)),
                Check::Pending => {
                    return Step::Wait(Box::pin(async move {
                        for (key, spec) in &levels[i..] {
                            let d = self.limits.rate(key, *spec, 1).await;
                            if !d.allowed() {
                                return self.refuse(x, &levels, &taken, d);
                            }
                            taken.push(d);
                        }
                        self.pass(x, &taken)
                    }))
                }
            }
        }
        Step::Ready(self.pass(x, &taken))
    }
}

#[cfg(test)]
mod tests {
    use crate::ratelimit::policy_support::compile_inbound;

    #[test]
    fn levels_compile_and_bad_levels_are_located() {
        let ok = "[ { rate-limit: { calls: 10, renewal_period: 60s, ratelimit_headers: true, \
                  apis: { orders: { calls: 5, renewal_period: 60s, operations: { get: { calls: 2, renewal_period: 10s } } } } } } ]";
        assert_eq!(compile_inbound(ok), Ok(()));
        let bad = "[ { rate-limit: { calls: 10, renewal_period: 60s, \
                   apis: { orders: { calls: 0, renewal_period: 60s, operations: { get: { calls: 2, renewal_period: 0s } } } } } } ]";
        let e = compile_inbound(bad).err().unwrap_or_default();
        let p = "apis.orders.policies.inbound[0].rate-limit.apis.orders";
        assert!(e.iter().any(|e| e.starts_with(&format!("{p}.calls: calls must be at least 1"))), "{e:#?}");
        assert!(
            e.iter().any(|e| e.starts_with(&format!("{p}.operations.get.renewal_period: renewal_period must be"))),
            "{e:#?}"
        );
        let unknown = "[ { rate-limit: { calls: 10, renewal_period: 60s, counter_key: x } } ]";
        assert!(compile_inbound(unknown).is_err(), "rate-limit has no counter_key");
    }
}
