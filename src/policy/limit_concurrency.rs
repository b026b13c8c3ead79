//! `limit-concurrency`: at most `max_count` requests at once per `key` on this node (APIM
//! `<limit-concurrency>`); the next is refused at once with 429. With `policies:` the permit
//! covers those nested policies only; without, it is held until the response is ready (so it
//! covers the backend call), and released if the client goes away.

use http::StatusCode;
use serde::Deserialize;

use super::{run_section, BuildCx, Entry, Exchange, Flow, Outcome, Policy, Step};
use crate::config::{ConfigError, PathSeg};
use crate::expr::Template;
use crate::ratelimit::policy_support as support;
use crate::ratelimit::{Limits, Permit};
use crate::respond::{Layer, Problem};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConcurrencyConfig {
    pub key: String,
    pub max_count: u32,
    /// Nested policies run while the permit is held (checked by `BuildCx::nested`).
    #[serde(default)]
    pub policies: Option<serde::de::IgnoredAny>,
}

#[derive(Debug)]
pub struct LimitConcurrency {
    key: Template,
    max: u32,
    prefix: String,
    nested: Option<Vec<Entry>>,
    limits: Limits,
}

impl LimitConcurrency {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: LimitConcurrencyConfig = cx.config()?;
        let mut errors = Vec::new();
        if c.max_count == 0 {
            errors.push(cx.error(&["max_count"], "max_count must be at least 1"));
        }
        let key = cx.template(&c.key, &["key"]).map_err(|e| errors.push(e)).ok();
        let nested = match c.policies {
            None => None,
            Some(_) => match cx.nested(&[PathSeg::Key("policies".into())]) {
                Ok(list) => Some(list.into_iter().map(|policy| Entry { policy, scope: cx.scope.clone() }).collect()),
                Err(e) => {
                    errors.extend(e);
                    None
                }
            },
        };
        let (Some(key), true) = (key, errors.is_empty()) else { return Err(errors) };
        Ok(LimitConcurrency {
            key,
            max: c.max_count,
            prefix: format!("lc|{}|", cx.scope),
            nested,
            limits: cx.env.limits.get().clone(),
        })
    }
}

fn refused(max: u32) -> Outcome {
    Outcome::Reject(Box::new(Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-concurrent",
        Layer::Policy,
        format!("more than {max} concurrent requests; retry shortly"),
    )))
}

impl Policy for LimitConcurrency {
    fn kind(&self) -> &'static str {
        "limit-concurrency"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let key = support::counter_key(&self.prefix, &self.key, x);
        let Some(permit) = self.limits.acquire(&key, self.max) else {
            return Step::Ready(refused(self.max));
        };
        match &self.nested {
            None => {
                x.deferred.push(Box::new(move |_| drop::<Permit>(permit)));
                Step::Ready(Outcome::Continue)
            }
            Some(entries) => Step::Wait(Box::pin(async move {
                let stage = x.stage;
                let flow = run_section(x, stage, entries).await;
                drop(permit);
                match flow {
                    Flow::Continue => Outcome::Continue,
                    Flow::Respond(r, _) => Outcome::Respond(r),
                    Flow::Reject(p) => Outcome::Reject(p),
                }
            })),
        }
    }

    fn terminates(&self) -> bool {
        self.nested.as_ref().is_some_and(|n| n.iter().any(|e| e.policy.terminates()))
    }
}

#[cfg(test)]
mod tests {
    use crate::ratelimit::policy_support::{compile_inbound, compile_section};

    #[test]
    fn configs() {
        assert_eq!(compile_inbound("[ { limit-concurrency: { key: \"{api.name}\", max_count: 3 } } ]"), Ok(()));
        assert_eq!(compile_section("backend", "[ { limit-concurrency: { key: b, max_count: 1 } } ]"), Ok(()));
        let nested =
            "[ { limit-concurrency: { key: k, max_count: 1, policies: [ { return-response: { status: 204 } } ] } } ]";
        assert_eq!(compile_inbound(nested), Ok(()));
        let e = compile_inbound("[ { limit-concurrency: { key: k, max_count: 0 } } ]").err().unwrap_or_default();
        assert!(e.iter().any(|e| e.contains("limit-concurrency.max_count: max_count must be at least 1")), "{e:#?}");
        let e = compile_inbound("[ { limit-concurrency: { key: k, max_count: 1, policies: [ base ] } } ]")
            .err()
            .unwrap_or_default();
        assert!(e.iter().any(|e| e.contains("`base` is only allowed directly in a section")), "{e:#?}");
    }
}
