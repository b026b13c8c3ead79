//! The policy pipeline (API Management's job): what runs between routing and the backend, and
//! between the backend and the client.
//!
//! A policy is a module under `policy/` with a typed config (deserialized from the YAML through
//! [`BuildCx::config`]), a `build` step that validates it into an immutable compiled form, and one
//! entry point, [`Policy::run`], called with the request's [`Exchange`]. `Exchange::stage` says
//! which section it runs in (inbound, backend, outbound, on-error).
//!
//! Scopes (global → product → API → operation) are flattened into one [`Chain`] per route when
//! the config compiles, with `base` marking where the enclosing scope's policies run; when a
//! scope has no `base`, the enclosing scope's policies run first (as if `base` were the first
//! item). Adding a policy adds a module and one line in `registry.rs`; no other policy changes.

pub mod env;
pub mod exchange;
mod registry;
mod run;

pub mod authentication_basic;
pub mod authentication_certificate;
pub mod authentication_managed_identity;
pub mod authorize;
pub mod forward_identity;
pub mod limit_concurrency;
pub mod quota;
pub mod rate_limit;
pub mod rate_limit_by_key;
pub mod return_response;
pub mod validate_jwt;

pub mod cache_lookup;
pub mod cache_store;
pub mod cache_value;

mod context;
mod util;

pub mod check_header;
pub mod choose;
pub mod cors;
pub mod find_and_replace;
pub mod forward_request;
pub mod ip_filter;
pub mod mock_response;
pub mod retry;
pub mod rewrite_uri;
pub mod set_backend_service;
pub mod set_body;
pub mod set_header;
pub mod set_method;
pub mod set_query_parameter;
pub mod set_status;
pub mod set_variable;
pub mod subscription;

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::Response;
use serde::de::DeserializeOwned;

pub use env::PolicyEnv;
pub use exchange::{BackendPlan, CacheTicket, Caller, ErrorInfo, Exchange, Held, RetryPlan, SentHook};
pub use run::{run_section, Flow};

use crate::body::ResponseBody;
use crate::config::{ConfigError, Document, PathSeg, PolicyConfig};
use crate::respond::Problem;

/// The section a policy runs in (APIM `<inbound>`, `<backend>`, `<outbound>`, `<on-error>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Inbound,
    Backend,
    Outbound,
    OnError,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Inbound => "inbound",
            Stage::Backend => "backend",
            Stage::Outbound => "outbound",
            Stage::OnError => "on-error",
        }
    }

    /// Whether the backend's response exists in this section.
    pub fn has_response(self) -> bool {
        matches!(self, Stage::Outbound | Stage::OnError)
    }
}

/// What a policy decided.
#[must_use]
pub enum Outcome {
    Continue,
    /// Inbound/backend: answer now, skipping the rest and the backend (APIM `return-response`).
    /// Outbound/on-error: replace the response.
    Respond(Box<Response<ResponseBody>>),
    /// Reject with a problem (401, 403, 429 …). The runner names the policy and scope, then
    /// on-error runs.
    Reject(Box<Problem>),
}

/// A policy that must wait (a Redis call, a token fetch, reading a body).
pub type PolicyFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// The result of [`Policy::run`]: most policies decide at once and cost no allocation.
pub enum Step<'a> {
    Ready(Outcome),
    Wait(PolicyFuture<'a>),
}

impl From<Outcome> for Step<'_> {
    fn from(o: Outcome) -> Self {
        Step::Ready(o)
    }
}

/// A compiled policy.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The kebab-case name from the config (`return-response`), used in errors, logs and metrics.
    fn kind(&self) -> &'static str;
    /// The one entry point; `x.stage` says which section is running.
    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a>;
    /// True when this policy always answers by itself (so the route needs no backend).
    fn terminates(&self) -> bool {
        false
    }
    /// True when `run` never returns `Step::Wait`, so `choose` can run it without a future.
    /// The default, `false`, is always safe.
    fn decides_at_once(&self) -> bool {
        false
    }
}

/// One policy in a flattened chain, with the scope it was written in.
#[derive(Debug, Clone)]
pub struct Entry {
    pub policy: Arc<dyn Policy>,
    pub scope: Arc<str>,
}

/// The effective policies of one route, scopes already flattened.
#[derive(Debug, Default)]
pub struct Chain {
    pub inbound: Vec<Entry>,
    pub backend: Vec<Entry>,
    pub outbound: Vec<Entry>,
    pub on_error: Vec<Entry>,
}

impl Chain {
    /// Whether an inbound policy always answers, so the route needs no backend.
    pub fn terminates(&self) -> bool {
        self.inbound.iter().chain(&self.backend).any(|e| e.policy.terminates())
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty() && self.backend.is_empty() && self.outbound.is_empty() && self.on_error.is_empty()
    }

    /// Only inbound policies: nothing runs after the backend call but the response's own fields.
    pub fn is_inbound_only(&self) -> bool {
        self.backend.is_empty() && self.outbound.is_empty() && self.on_error.is_empty()
    }

    pub fn section(&self, stage: Stage) -> &[Entry] {
        match stage {
            Stage::Inbound => &self.inbound,
            Stage::Backend => &self.backend,
            Stage::Outbound => &self.outbound,
            Stage::OnError => &self.on_error,
        }
    }
}

/// One scope's compiled section: its own policies and where `base` sits.
#[derive(Debug, Default, Clone)]
pub struct Section {
    pub before_base: Vec<Entry>,
    pub after_base: Vec<Entry>,
}

impl Section {
    /// `outer` flattened around this section's `base`.
    pub fn flatten(&self, outer: &[Entry]) -> Vec<Entry> {
        let mut v = Vec::with_capacity(self.before_base.len() + outer.len() + self.after_base.len());
        v.extend(self.before_base.iter().cloned());
        v.extend(outer.iter().cloned());
        v.extend(self.after_base.iter().cloned());
        v
    }
}

/// The four sections of one scope.
#[derive(Debug, Default, Clone)]
pub struct Sections {
    pub inbound: Section,
    pub backend: Section,
    pub outbound: Section,
    pub on_error: Section,
}

impl Sections {
    /// This scope's chain around the enclosing scope's already-flattened chain.
    pub fn flatten(&self, outer: &Chain) -> Chain {
        Chain {
            inbound: self.inbound.flatten(&outer.inbound),
            backend: self.backend.flatten(&outer.backend),
            outbound: self.outbound.flatten(&outer.outbound),
            on_error: self.on_error.flatten(&outer.on_error),
        }
    }
}

/// What a policy's `build` step sees: where it is in the document, which section and scope it
/// belongs to, and the long-lived services it may hold on to.
pub struct BuildCx<'a> {
    pub doc: &'a Document,
    /// The policy's value: `apis.orders.policies.inbound[2].rate-limit`.
    pub path: Vec<PathSeg>,
    pub stage: Stage,
    /// `global`, `product:NAME`, `api:NAME` or `operation:API/ID`.
    pub scope: Arc<str>,
    /// Route template parameters known at this scope (`{id}`).
    pub params: &'a [String],
    /// Variable names set by some `set-variable` in the config.
    pub vars: &'a [String],
    pub env: &'a PolicyEnv,
    /// Errors found while reading the config that did not stop the policy's own checks
    /// (unknown keys); reported with whatever `build` finds.
    pub pending: RefCell<Vec<ConfigError>>,
}

impl BuildCx<'_> {
    /// The policy's typed config, with every error located in the file. Unknown keys do not
    /// stop the policy's own checks, so `check` reports those too.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Vec<ConfigError>> {
        match self.doc.deserialize_at_lenient(&self.path) {
            Some((Some(v), errors)) if errors.iter().all(ConfigError::is_unknown_key) => {
                self.pending.borrow_mut().extend(errors);
                Ok(v)
            }
            Some((_, errors)) if !errors.is_empty() => Err(errors),
            _ => Err(vec![self.doc.error(&self.path, "missing policy configuration")]),
        }
    }

    /// The path of a key below the policy's value.
    pub fn at(&self, sub: &[&str]) -> Vec<PathSeg> {
        let mut p = self.path.clone();
        p.extend(sub.iter().map(|k| PathSeg::Key((*k).to_owned())));
        p
    }

    /// An error at a key below the policy's value.
    pub fn error(&self, sub: &[&str], msg: impl Into<String>) -> ConfigError {
        self.doc.error(&self.at(sub), msg)
    }

    /// The names an expression may use here: this scope's route parameters, the declared
    /// variables, and `response.*` in outbound and on-error.
    pub fn names(&self) -> crate::expr::Names<'_> {
        crate::expr::Names { params: self.params, vars: self.vars, response: self.stage.has_response() }
    }

    /// A template at `sub` below the policy's value, checked against [`BuildCx::names`].
    /// A secret spliced into the field (`{{secret:NAME}}`) is text, never template syntax.
    pub fn template(&self, src: &str, sub: &[&str]) -> Result<crate::expr::Template, ConfigError> {
        let at: Vec<PathSeg> = sub.iter().map(|k| PathSeg::Key((*k).to_owned())).collect();
        crate::expr::Template::parse(self.template_source(src, &at), &self.names()).map_err(|e| self.error(sub, e))
    }

    /// What to parse as the template written at `sub` below the policy's value: `src`, or, when
    /// secrets were spliced into it, the same text with their values escaped.
    pub fn template_source<'s>(&'s self, src: &'s str, sub: &[PathSeg]) -> &'s str {
        let mut path = self.path.clone();
        path.extend_from_slice(sub);
        self.doc.template_source(&path).unwrap_or(src)
    }

    /// A condition at `sub` below the policy's value, checked against [`BuildCx::names`].
    pub fn condition(&self, src: &str, sub: &[&str]) -> Result<crate::expr::Condition, ConfigError> {
        crate::expr::Condition::parse(src, &self.names()).map_err(|e| self.error(sub, e))
    }

    /// A list of policies below the policy's value (for `choose`), in the same stage and scope.
    /// `base` is not allowed there.
    pub fn nested(&self, sub: &[PathSeg]) -> Result<Vec<Arc<dyn Policy>>, Vec<ConfigError>> {
        let mut path = self.path.clone();
        path.extend_from_slice(sub);
        let items: Vec<PolicyConfig> = match self.doc.deserialize_at(&path) {
            Some(r) => r?,
            None => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let mut p = path.clone();
            p.push(PathSeg::Index(i));
            match item {
                PolicyConfig::Base => errors.push(self.doc.error(&p, "`base` is only allowed directly in a section")),
                PolicyConfig::Policy(kind) => match build_one(kind, &p, self) {
                    Ok(policy) => out.push(policy),
                    Err(e) => errors.extend(e),
                },
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// Everything needed to compile one scope's sections.
pub struct ScopeCx<'a> {
    pub doc: &'a Document,
    pub scope: Arc<str>,
    pub params: &'a [String],
    pub vars: &'a [String],
    pub env: &'a PolicyEnv,
}

/// Compiles one section list (`inbound: [...]`) found at `path`.
pub fn build_section(
    items: &[PolicyConfig],
    stage: Stage,
    path: &[PathSeg],
    scope: &ScopeCx<'_>,
    errors: &mut Vec<ConfigError>,
) -> Section {
    let mut section = Section::default();
    let mut seen_base = false;
    let base_cx = BuildCx {
        doc: scope.doc,
        path: Vec::new(),
        stage,
        scope: scope.scope.clone(),
        params: scope.params,
        vars: scope.vars,
        env: scope.env,
        pending: RefCell::new(Vec::new()),
    };
    for (i, item) in items.iter().enumerate() {
        let mut p = path.to_vec();
        p.push(PathSeg::Index(i));
        match item {
            PolicyConfig::Base => {
                if seen_base {
                    errors.push(scope.doc.error(&p, "`base` appears more than once in this section"));
                }
                seen_base = true;
            }
            PolicyConfig::Policy(kind) => match build_one(kind, &p, &base_cx) {
                Ok(policy) => {
                    let entry = Entry { policy, scope: scope.scope.clone() };
                    if seen_base {
                        section.after_base.push(entry);
                    } else {
                        section.before_base.push(entry);
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

/// Builds the policy `kind` whose list item is at `item`.
fn build_one(kind: &str, item: &[PathSeg], cx: &BuildCx<'_>) -> Result<Arc<dyn Policy>, Vec<ConfigError>> {
    let mut path = item.to_vec();
    path.push(PathSeg::Key(kind.to_owned()));
    let cx = BuildCx {
        doc: cx.doc,
        path,
        stage: cx.stage,
        scope: cx.scope.clone(),
        params: cx.params,
        vars: cx.vars,
        env: cx.env,
        pending: RefCell::new(Vec::new()),
    };
    let built = match registry::build(kind, &cx) {
        Some(r) => r,
        None => Err(vec![cx.doc.error_at_key(
            &cx.path,
            format!("unknown policy `{kind}` (known: {})", registry::kinds().collect::<Vec<_>>().join(", ")),
        )]),
    };
    let mut pending = cx.pending.take();
    match built {
        Ok(p) if pending.is_empty() => Ok(p),
        Ok(_) => Err(pending),
        Err(e) => {
            pending.extend(e);
            Err(pending)
        }
    }
}

/// The names every `set-variable` (and `cache-lookup-value`) in the document sets, so templates
/// can refer to them.
pub fn declared_variables(doc: &Document) -> Vec<String> {
    let mut out = Vec::new();
    collect_variables(doc.root(), &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_variables(node: &crate::config::yaml::Node, out: &mut Vec<String>) {
    use crate::config::yaml::NodeKind;
    match &node.kind {
        NodeKind::Map(entries) => {
            for (k, v) in entries {
                let field = match k.text() {
                    Some("set-variable") => Some("name"),
                    Some("cache-lookup-value") => Some("variable_name"),
                    _ => None,
                };
                if let Some(field) = field {
                    if let NodeKind::Map(fields) = &v.kind {
                        for (fk, fv) in fields {
                            if fk.text() == Some(field) {
                                if let Some(name) = fv.text() {
                                    out.push(name.to_owned());
                                }
                            }
                        }
                    }
                }
                collect_variables(v, out);
            }
        }
        NodeKind::Seq(items) => items.iter().for_each(|i| collect_variables(i, out)),
        _ => {}
    }
}
