//! `retry`: call the backend again when it fails or answers with chosen statuses (APIM
//! `<retry count interval>` around `forward-request`). Connection failures and timeouts are
//! always retried; `statuses` names the answers that are. The request body is buffered once so
//! every attempt sends the same bytes.

use std::time::Duration;

use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, RetryPlan, Stage, Step};
use crate::config::ConfigError;

/// `retry: { count: 2, interval: 1, statuses: [502, 503, 504] }` (interval in seconds, may be
/// fractional).
#[derive(Debug, Deserialize)]
pub struct RetryConfig {
    pub count: u32,
    #[serde(default)]
    pub interval: f64,
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
}

fn default_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}

/// APIM allows at most 50 retries; more only multiplies load on a failing backend.
const MAX_COUNT: u32 = 10;

#[derive(Debug)]
pub struct Retry {
    plan: RetryPlan,
}

impl Retry {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: RetryConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "retry", &[Stage::Inbound, Stage::Backend]) {
            errors.push(e);
        }
        if cfg.count == 0 || cfg.count > MAX_COUNT {
            errors.push(cx.error(&["count"], format!("count is the number of retries, 1 to {MAX_COUNT}")));
        }
        if !(0.0..=60.0).contains(&cfg.interval) {
            errors.push(cx.error(&["interval"], "interval is seconds between attempts, 0 to 60"));
        }
        for (i, s) in cfg.statuses.iter().enumerate() {
            if !(200..600).contains(s) {
                errors.push(util::item_error(cx, "statuses", i, format!("{s} is not a final HTTP status")));
            }
        }
        util::done(errors)?;
        Ok(Retry {
            plan: RetryPlan {
                count: cfg.count,
                interval: Duration::from_secs_f64(cfg.interval),
                statuses: cfg.statuses,
            },
        })
    }
}

impl Policy for Retry {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "retry"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        x.backend.retry = Some(self.plan.clone());
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    #[test]
    fn plans_the_retries() {
        let mut x = exchange("/orders/1");
        let p = build_with("{ count: 2, interval: 0.5, statuses: [503] }", Stage::Backend, Retry::build).expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        let plan = x.backend.retry.expect("plan");
        assert_eq!((plan.count, plan.interval, plan.statuses), (2, Duration::from_millis(500), vec![503]));
        let e = build_with("{ count: 0, interval: -1, statuses: [99] }", Stage::Backend, Retry::build).expect_err("e");
        let e = e.join("\n");
        assert!(e.contains("p.count:") && e.contains("p.interval:") && e.contains("p.statuses[0]:"), "{e}");
    }
}
