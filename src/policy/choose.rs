//! `choose`: run the policies of the first `when` whose condition holds, else `otherwise`
//! (APIM `<choose>/<when condition>/<otherwise>`).
//!
//! Conditions are [`crate::expr::Condition`]s, checked when the config compiles. The chosen
//! policies run in order with the section's rules: the first that answers or rejects ends the
//! section. A branch whose policies all decide at once runs without allocating; a branch with a
//! policy that may wait (reading a body, a Redis call) runs as one boxed future.

use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::config::{ConfigError, PathSeg, PolicyConfig};
use crate::expr::Condition;
use crate::respond::{Layer, Problem};

/// ```yaml
/// choose:
///   when:
///     - condition: "request.header.X-Tier == 'gold'"
///       policies: [ { set-backend-service: { backend_id: fast } } ]
///   otherwise: [ { set-header: { name: X-Tier, value: standard } } ]
/// ```
#[derive(Debug, Deserialize)]
pub struct ChooseConfig {
    pub when: Vec<WhenConfig>,
    #[serde(default)]
    pub otherwise: Option<Vec<PolicyConfig>>,
}

#[derive(Debug, Deserialize)]
pub struct WhenConfig {
    pub condition: String,
    #[serde(default)]
    pub policies: Vec<PolicyConfig>,
}

#[derive(Debug, Default)]
struct Branch {
    policies: Vec<Arc<dyn Policy>>,
    may_wait: bool,
}

impl Branch {
    fn new(policies: Vec<Arc<dyn Policy>>) -> Branch {
        let may_wait = policies.iter().any(|p| !p.decides_at_once());
        Branch { policies, may_wait }
    }

    fn terminates(&self) -> bool {
        self.policies.iter().any(|p| p.terminates())
    }
}

#[derive(Debug)]
pub struct Choose {
    when: Vec<(Condition, Branch)>,
    otherwise: Option<Branch>,
}

impl Choose {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: ChooseConfig = cx.config()?;
        let mut errors = Vec::new();
        if cfg.when.is_empty() {
            errors.push(cx.error(&["when"], "give at least one `when` branch"));
        }
        let mut when = Vec::new();
        for (i, w) in cfg.when.iter().enumerate() {
            let at = |k: &str| [PathSeg::Key("when".into()), PathSeg::Index(i), PathSeg::Key(k.into())];
            let condition = match Condition::parse(&w.condition, &cx.names()) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(cx.doc.error(&[cx.path.as_slice(), &at("condition")].concat(), e));
                    None
                }
            };
            let policies = cx.nested(&at("policies")).map_err(|e| errors.extend(e)).ok();
            if let (Some(c), Some(p)) = (condition, policies) {
                when.push((c, Branch::new(p)));
            }
        }
        let otherwise = match cfg.otherwise {
            None => None,
            Some(_) => {
                cx.nested(&[PathSeg::Key("otherwise".into())]).map_err(|e| errors.extend(e)).ok().map(Branch::new)
            }
        };
        super::util::done(errors)?;
        Ok(Choose { when, otherwise })
    }
}

impl Policy for Choose {
    fn kind(&self) -> &'static str {
        "choose"
    }

    fn decides_at_once(&self) -> bool {
        self.when.iter().map(|(_, b)| b).chain(&self.otherwise).all(|b| !b.may_wait)
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let chosen = self.when.iter().find(|(c, _)| c.eval(&*x)).map(|(_, b)| b).or(self.otherwise.as_ref());
        let Some(branch) = chosen else { return Step::Ready(Outcome::Continue) };
        if branch.may_wait {
            return Step::Wait(Box::pin(async move {
                for p in &branch.policies {
                    let outcome = match p.run(x) {
                        Step::Ready(o) => o,
                        Step::Wait(f) => f.await,
                    };
                    if !matches!(outcome, Outcome::Continue) {
                        return outcome;
                    }
                }
                Outcome::Continue
            }));
        }
        for p in &branch.policies {
            match p.run(x) {
                Step::Ready(Outcome::Continue) => {}
                Step::Ready(o) => return Step::Ready(o),
                Step::Wait(_) => {
                    // Only policies that say they decide at once get here; one that waits is a bug.
                    let p = Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "gateway-error",
                        Layer::Gateway,
                        "a policy inside choose waited unexpectedly",
                    );
                    return Step::Ready(Outcome::Reject(Box::new(p)));
                }
            }
        }
        Step::Ready(Outcome::Continue)
    }

    fn terminates(&self) -> bool {
        self.otherwise.as_ref().is_some_and(Branch::terminates) && self.when.iter().all(|(_, b)| b.terminates())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Stage;

    const CFG: &str = r#"{ when: [
        { condition: "request.query.tier == 'gold'", policies: [ { set-header: { name: X-Tier, value: gold } } ] },
        { condition: "exists(request.header.X-Stop)", policies: [ { return-response: { status: 418 } }, { set-header: { name: X-Never, value: "1" } } ] },
        { condition: "request.query.tier == 'body'", policies: [ { find-and-replace: { from: a, to: b } }, { set-variable: { name: tier, value: done } } ] }
      ], otherwise: [ { set-header: { name: X-Tier, value: standard } } ] }"#;

    fn run_on(x: &mut Exchange) -> Outcome {
        let p = build_with(CFG, Stage::Inbound, Choose::build).expect("builds");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(run_async(&p, x))
    }

    #[test]
    fn first_true_branch_runs_else_otherwise() {
        let mut x = exchange("/o?tier=gold");
        assert!(matches!(run_on(&mut x), Outcome::Continue));
        assert_eq!(x.request.headers["x-tier"], "gold");
        let mut x = exchange("/o");
        assert!(matches!(run_on(&mut x), Outcome::Continue));
        assert_eq!(x.request.headers["x-tier"], "standard");
    }

    #[test]
    fn an_answer_ends_the_branch() {
        let mut x = exchange("/o");
        x.request.headers.insert("x-stop", "1".parse().expect("hv"));
        assert!(matches!(run_on(&mut x), Outcome::Respond(r) if r.status() == 418));
        assert!(x.request.headers.get("x-never").is_none());
    }

    #[test]
    fn a_branch_that_waits_runs_in_order() {
        let p = build_with(CFG, Stage::Inbound, Choose::build).expect("builds");
        let mut x = exchange("/o?tier=body");
        x.body = crate::body::UpstreamBody::full(bytes::Bytes::from_static(b"aaa"));
        assert!(matches!(p.run(&mut x), Step::Wait(_)), "the body branch waits");
        let mut x = exchange("/o?tier=body");
        x.body = crate::body::UpstreamBody::full(bytes::Bytes::from_static(b"aaa"));
        assert!(matches!(run_on(&mut x), Outcome::Continue));
        assert_eq!(x.var("tier"), Some("done"));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        assert_eq!(&rt.block_on(x.request_bytes()).expect("body")[..], b"bbb");
        let mut x = exchange("/o?tier=gold");
        assert!(matches!(p.run(&mut x), Step::Ready(Outcome::Continue)), "a sync branch does not box");
    }

    #[test]
    fn a_choose_of_immediate_policies_decides_at_once_even_nested() {
        let p = build_with(CFG, Stage::Inbound, Choose::build).expect("builds");
        assert!(!p.decides_at_once(), "find-and-replace reads the body");
        let nested = "{ when: [ { condition: 'true', policies: [ { choose: { when: [ { condition: 'true', \
                      policies: [ { set-header: { name: X-A, value: a } } ] } ] } } ] } ] }";
        let p = build_with(nested, Stage::Inbound, Choose::build).expect("builds");
        assert!(p.decides_at_once());
        let mut x = exchange("/o");
        assert!(matches!(p.run(&mut x), Step::Ready(Outcome::Continue)), "no future for a nested choose");
        assert_eq!(x.request.headers["x-a"], "a");
    }

    #[test]
    fn nested_errors_are_located() {
        let e = build_with(
            "{ when: [ { condition: 'request.nope == 1', policies: [ { set-header: { name: 'a b', value: x } } ] } ], \
             otherwise: [ base ] }",
            Stage::Inbound,
            Choose::build,
        )
        .expect_err("e")
        .join("\n");
        assert!(e.contains("p.when[0].condition: unknown name `request.nope`"), "{e}");
        assert!(e.contains("p.when[0].policies[0].set-header.name:"), "{e}");
        assert!(e.contains("p.otherwise[0]: `base` is only allowed directly in a section"), "{e}");
    }

    #[test]
    fn terminates_only_when_every_branch_answers() {
        let yes = "{ when: [ { condition: 'true', policies: [ { return-response: { status: 200 } } ] } ], \
                   otherwise: [ { mock-response: { status_code: 200 } } ] }";
        assert!(build_with(yes, Stage::Inbound, Choose::build).expect("builds").terminates());
        let no = "{ when: [ { condition: 'true', policies: [ { return-response: { status: 200 } } ] } ] }";
        assert!(!build_with(no, Stage::Inbound, Choose::build).expect("builds").terminates());
    }
}
