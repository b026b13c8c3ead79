//! The policy pipeline (API Management's job): what runs between routing and the backend.
//!
//! A policy is a module under `policy/` with a typed config (deserialized from the YAML), a
//! `build` step that validates it into an immutable compiled form, and one entry point per stage.
//! Scopes (global → product → API → operation) are flattened into one [`Chain`] per route when
//! the config compiles, with `base` marking where the enclosing scope's policies run; when a
//! scope has no `base`, the enclosing scope's policies run first (as if `base` were written at
//! the top). Adding a policy adds a module and one line in [`build`]; no other policy changes.

pub mod return_response;

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Response};

use crate::body::ResponseBody;
use crate::config::{ConfigError, Document, PathSeg, PolicyConfig};

/// What a policy decided.
#[must_use]
pub enum Outcome {
    Continue,
    /// Answer the client now; later policies and the backend are skipped.
    Respond(Box<Response<ResponseBody>>),
}

/// What a policy may read of the request.
pub struct PolicyCx<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub request_id: &'a str,
}

/// A compiled policy.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The kebab-case name from the config (`return-response`), used in errors, logs and metrics.
    fn kind(&self) -> &'static str;
    /// Inbound stage.
    fn on_request(&self, cx: &PolicyCx<'_>) -> Outcome;
    /// True when this policy always answers by itself (so the route needs no backend).
    fn terminates(&self) -> bool {
        false
    }
}

/// The effective policies of one route, scopes already flattened.
#[derive(Debug, Default)]
pub struct Chain {
    pub inbound: Vec<Arc<dyn Policy>>,
}

impl Chain {
    pub fn terminates(&self) -> bool {
        self.inbound.iter().any(|p| p.terminates())
    }
}

/// One scope's compiled section: its own policies and where `base` sits.
#[derive(Debug, Default, Clone)]
pub struct Section {
    pub before_base: Vec<Arc<dyn Policy>>,
    pub after_base: Vec<Arc<dyn Policy>>,
}

impl Section {
    /// `outer` flattened around this section's `base`.
    pub fn flatten(&self, outer: &[Arc<dyn Policy>]) -> Vec<Arc<dyn Policy>> {
        let mut v = Vec::with_capacity(self.before_base.len() + outer.len() + self.after_base.len());
        v.extend(self.before_base.iter().cloned());
        v.extend(outer.iter().cloned());
        v.extend(self.after_base.iter().cloned());
        v
    }
}

/// Compiles one section list (`inbound: [...]`) found at `path`.
pub fn build_section(
    items: &[PolicyConfig],
    doc: &Document,
    path: &[PathSeg],
    errors: &mut Vec<ConfigError>,
) -> Section {
    let mut section = Section::default();
    let mut seen_base = false;
    for (i, item) in items.iter().enumerate() {
        let mut p = path.to_vec();
        p.push(PathSeg::Index(i));
        match item {
            PolicyConfig::Base => {
                if seen_base {
                    errors.push(doc.error(&p, "`base` appears more than once in this section"));
                }
                seen_base = true;
            }
            other => match build(other, doc, &p) {
                Ok(policy) => {
                    if seen_base {
                        section.after_base.push(policy);
                    } else {
                        section.before_base.push(policy);
                    }
                }
                Err(e) => errors.extend(e),
            },
        }
    }
    if !seen_base {
        // No `base`: the enclosing scope runs first.
        section.after_base = std::mem::take(&mut section.before_base);
    }
    section
}

/// The registry: one line per policy kind.
fn build(cfg: &PolicyConfig, doc: &Document, path: &[PathSeg]) -> Result<Arc<dyn Policy>, Vec<ConfigError>> {
    match cfg {
        PolicyConfig::Base => Err(vec![doc.error(path, "`base` is not a policy here")]),
        PolicyConfig::ReturnResponse(c) => {
            let mut p = path.to_vec();
            p.push(PathSeg::Key("return-response".into()));
            return_response::ReturnResponse::build(c, doc, &p).map(|p| Arc::new(p) as Arc<dyn Policy>)
        }
    }
}
