//! `forward-request`: settings of the backend call (APIM `<forward-request timeout=…>`). The call
//! itself always happens after the backend section; this policy only sets its deadline, so it
//! belongs in `backend`.

use std::time::Duration;

use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;

/// `forward-request: { timeout: 20 }` (seconds, as APIM) or `{ timeout_ms: 1500 }`.
#[derive(Debug, Deserialize)]
pub struct ForwardRequestConfig {
    #[serde(default)]
    pub timeout: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// The longest deadline accepted (APIM's maximum is 240 s for most tiers; a day is plenty).
const MAX: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
pub struct ForwardRequest {
    timeout: Option<Duration>,
}

impl ForwardRequest {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: ForwardRequestConfig = cx.config()?;
        util::only_in(cx, "forward-request", &[Stage::Backend]).map_err(|e| vec![e])?;
        let (timeout, key) = match (cfg.timeout, cfg.timeout_ms) {
            (Some(_), Some(_)) => {
                return Err(vec![cx.error(&["timeout_ms"], "give `timeout` or `timeout_ms`, not both")])
            }
            (Some(s), None) => (Some(Duration::from_secs(s)), "timeout"),
            (None, Some(ms)) => (Some(Duration::from_millis(ms)), "timeout_ms"),
            (None, None) => (None, "timeout"),
        };
        if let Some(t) = timeout {
            if t.is_zero() || t > MAX {
                return Err(vec![cx.error(&[key], "the timeout must be above zero and at most a day")]);
            }
        }
        Ok(ForwardRequest { timeout })
    }
}

impl Policy for ForwardRequest {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "forward-request"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if self.timeout.is_some() {
            x.backend.timeout = self.timeout;
        }
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    #[test]
    fn sets_the_deadline_in_backend_only() {
        let mut x = exchange("/orders/1");
        let p = build_with("{ timeout_ms: 1500 }", Stage::Backend, ForwardRequest::build).expect("ok");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.backend.timeout, Some(Duration::from_millis(1500)));
        let e = build_with("{ timeout: 5 }", Stage::Inbound, ForwardRequest::build).expect_err("e").join("\n");
        assert!(e.contains("belongs in backend"), "{e}");
        let e = build_with("{ timeout: 0 }", Stage::Backend, ForwardRequest::build).expect_err("e").join("\n");
        assert!(e.contains("p.timeout: the timeout must be above zero"), "{e}");
    }
}
