//! Running one section of a chain over an [`Exchange`].

use http::Response;

use super::{Entry, Exchange, Outcome, Stage, Step};
use crate::body::ResponseBody;
use crate::respond::{Layer, Problem};

/// How a section ended.
pub enum Flow {
    Continue,
    /// A policy answered (or, in outbound/on-error, replaced the response); its kind.
    Respond(Box<Response<ResponseBody>>, &'static str),
    /// A policy rejected the request; the problem names the policy and scope.
    Reject(Box<Problem>),
}

/// Runs `entries` in order until one answers or rejects.
pub async fn run_section(x: &mut Exchange, stage: Stage, entries: &[Entry]) -> Flow {
    x.stage = stage;
    for e in entries {
        let outcome = match e.policy.run(x) {
            Step::Ready(o) => o,
            Step::Wait(f) => f.await,
        };
        match outcome {
            Outcome::Continue => {}
            Outcome::Respond(r) => return Flow::Respond(r, e.policy.kind()),
            Outcome::Reject(mut p) => {
                // A policy may report an edge failure (a body too large while reading it); every
                // other rejection is the policy layer's.
                if p.layer != Layer::Edge && p.layer != Layer::Backend {
                    p.layer = Layer::Policy;
                }
                if p.layer == Layer::Policy {
                    p.policy.get_or_insert(e.policy.kind());
                    p.scope.get_or_insert_with(|| e.scope.to_string());
                }
                return Flow::Reject(p);
            }
        }
    }
    Flow::Continue
}
