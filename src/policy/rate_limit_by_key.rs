//! `rate-limit-by-key`: calls per sliding `renewal_period` per value of `counter_key` (APIM
//! `<rate-limit-by-key>`); 429 with `Retry-After` when exceeded. The counting is
//! `crate::ratelimit`'s; this module builds the key and answers.

use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::{units, ConfigError};
use crate::expr::Template;
use crate::ratelimit::policy_support::{self as support, Increment, OutputNames, Outputs};
use crate::ratelimit::{answer, Check, Decision, Limits, RateSpec};

/// `rate-limit-by-key: { calls: 100, renewal_period: 60s, counter_key: "{request.ip}" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitByKeyConfig {
    pub calls: u64,
    pub renewal_period: units::Duration,
    pub counter_key: String,
    #[serde(default)]
    pub increment_condition: Option<String>,
    #[serde(default = "one")]
    pub increment_count: u64,
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

fn one() -> u64 {
    1
}

#[derive(Debug)]
pub struct RateLimitByKey {
    spec: RateSpec,
    n: u64,
    key: Template,
    /// `rlk|SCOPE|PERIOD_MS|`: the counter's identity before the key's value.
    prefix: String,
    increment: Increment,
    outputs: Outputs,
    limits: Limits,
}

/// Checks shared with `rate-limit`: limits, period and stage.
pub(crate) fn check_limit(cx: &BuildCx<'_>, calls: u64, period: units::Duration, errors: &mut Vec<ConfigError>) {
    if calls == 0 {
        errors.push(cx.error(&["calls"], "calls must be at least 1"));
    }
    if period.0.as_millis() == 0 {
        errors.push(cx.error(&["renewal_period"], "renewal_period must be at least 1ms"));
    }
}

pub(crate) fn inbound_only(cx: &BuildCx<'_>, errors: &mut Vec<ConfigError>) {
    if cx.stage != Stage::Inbound {
        errors.push(cx.doc.error(&cx.path, format!("runs in inbound only, not in {}", cx.stage.as_str())));
    }
}

impl RateLimitByKey {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: RateLimitByKeyConfig = cx.config()?;
        let mut errors = Vec::new();
        inbound_only(cx, &mut errors);
        check_limit(cx, c.calls, c.renewal_period, &mut errors);
        if c.increment_count == 0 || c.increment_count > c.calls {
            errors.push(cx.error(&["increment_count"], "increment_count must be between 1 and calls"));
        }
        let key = cx.template(&c.counter_key, &["counter_key"]).map_err(|e| errors.push(e)).ok();
        let increment = Increment::build(cx, c.increment_condition.as_deref(), "increment_condition")
            .map_err(|e| errors.push(e))
            .ok();
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
        let (Some(key), Some(increment), Some(outputs), true) = (key, increment, outputs, errors.is_empty()) else {
            return Err(errors);
        };
        let period_ms = u64::try_from(c.renewal_period.0.as_millis()).unwrap_or(u64::MAX);
        Ok(RateLimitByKey {
            spec: RateSpec { limit: c.calls, period_ms },
            n: c.increment_count,
            key,
            prefix: format!("rlk|{}|{period_ms}|", cx.scope),
            increment,
            outputs,
            limits: cx.env.limits.get().clone(),
        })
    }

    fn decided(&self, x: &mut Exchange, key: String, n: u64, counts: bool, d: Decision) -> Outcome {
        for (name, value) in self.outputs.vars(&d) {
            x.set_var(&name, value);
        }
        if !d.allowed() {
            return Outcome::Reject(Box::new(answer::refusal(&d, false, &self.outputs.headers)));
        }
        self.outputs.headers.write(&d, &mut x.extra_response_headers);
        if !counts {
            self.limits.refund_rate(&key, self.spec, n, d.ticket);
        } else if self.increment.is_later() {
            // The refund's captures are made only when it may run.
            let (limits, spec, ticket) = (self.limits.clone(), self.spec, d.ticket);
            self.increment.defer(x, move || limits.refund_rate(&key, spec, n, ticket));
        }
        Outcome::Continue
    }
}

impl Policy for RateLimitByKey {
    fn kind(&self) -> &'static str {
        "rate-limit-by-key"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let counts = self.increment.counts_now(x);
        // A request that does not count is still refused at the limit: take one, give it back.
        let n = if counts { self.n } else { 1 };
        // The key is built in a buffer of the thread and copied out only when it is needed after
        // this lookup: to wait for Redis, or to give the calls back (now, or at the end).
        let later = !counts || self.increment.is_later();
        let (check, key) = support::with_counter_key(&self.prefix, &self.key, x, |key| {
            let check = self.limits.try_rate(key, self.spec, n);
            let keep = later || !matches!(check, Check::Done(_));
            (check, if keep { key.to_owned() } else { String::new() })
        });
        match check {
            Check::Done(d) => Step::Ready(self.decided(x, key, n, counts, d)),
            Check::Pending => Step::Wait(Box::pin(async move {
                let d = self.limits.rate(&key, self.spec, n).await;
                self.decided(x, key, n, counts, d)
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::ratelimit::policy_support::compile_inbound;

    fn errors(policy: &str) -> Vec<String> {
        compile_inbound(&format!("[ {{ rate-limit-by-key: {policy} }} ]")).err().unwrap_or_default()
    }

    #[test]
    fn valid_configs_compile() {
        let ok = [
            r#"{ calls: 10, renewal_period: 1s, counter_key: "{request.ip}" }"#,
            r#"{ calls: 10, renewal_period: 60s, counter_key: "{id}-{jwt.sub ?? 'anon'}", increment_count: 2 }"#,
            r#"{ calls: 10, renewal_period: 60s, counter_key: "k", increment_condition: "response.status < 300" }"#,
            r#"{ calls: 10, renewal_period: 60s, counter_key: "k", increment_condition: "request.method == 'POST'" }"#,
        ];
        for p in ok {
            assert_eq!(errors(p), Vec::<String>::new(), "{p}");
        }
    }

    #[test]
    fn bad_values_are_errors_at_their_keys() {
        let cases = [
            (r#"{ calls: 0, renewal_period: 60s, counter_key: "k" }"#, ".calls: calls must be at least 1"),
            (r#"{ calls: 5, renewal_period: 0s, counter_key: "k" }"#, ".renewal_period: renewal_period must be"),
            (r#"{ calls: 5, renewal_period: 60s, counter_key: "{nope}" }"#, ".counter_key: "),
            (r#"{ calls: 5, renewal_period: 60s, counter_key: "k", increment_count: 6 }"#, ".increment_count: "),
            (
                r#"{ calls: 5, renewal_period: 60s, counter_key: "k", increment_condition: "exists(response.header.X)" }"#,
                ".increment_condition: an increment condition can read response.status but not",
            ),
            (
                r#"{ calls: 5, renewal_period: 60s, counter_key: "k", remaining_calls_header_name: "a b" }"#,
                ".remaining_calls_header_name: not a valid header name",
            ),
        ];
        for (p, want) in cases {
            let e = errors(p);
            assert!(e.iter().any(|e| e.contains(want)), "{p}: {e:#?}");
        }
    }

    #[test]
    fn outside_inbound_is_an_error() {
        let yaml = "[ { rate-limit-by-key: { calls: 1, renewal_period: 1s, counter_key: k } } ]";
        let e = compile_inbound("[]").err().unwrap_or_default();
        assert!(e.is_empty());
        let e = crate::ratelimit::policy_support::compile_section("outbound", yaml).err().unwrap_or_default();
        assert!(e.iter().any(|e| e.contains("runs in inbound only")), "{e:#?}");
    }
}
