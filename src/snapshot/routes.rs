//! Compiling the `apis` section into the route table: API prefixes and hosts, operations and
//! their policy chains, and conflict messages that point at the key each route came from.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::Method;

use super::{at, key, Compiler};
use crate::config::yaml::{format_path, NodeKind};
use crate::config::{ApiConfig, ConfigDoc, PathSeg};
use crate::identity::subscription::{KeyNames, ProductTable};
use crate::policy::{Chain, Entry};
use crate::route::{display_pattern, join_template, Api, Claim, ConflictKind, Route, RouteTable, RouteTableBuilder};

impl Compiler<'_> {
    pub(super) fn routes(&mut self, cfg: &ConfigDoc) -> RouteTable {
        // Backends are looked up by the names in the file, so a backend with an error is not
        // also "unknown" to every API that uses it. When `backends` is not a map at all, that
        // is the error; references are not checked against it.
        let backends_node = self.doc.get(&[key("backends")]);
        let backend_names: Option<Vec<String>> =
            match backends_node.is_none_or(|n| n.is_null() || matches!(n.kind, NodeKind::Map(_))) {
                true => Some(self.doc.map_entries(&[key("backends")]).into_iter().map(|(k, _)| k).collect()),
                false => None,
            };
        let mut builder = RouteTableBuilder::default();
        let mut origins = RouteOrigins::default();
        let global = self.sections(&cfg.policies, &[key("policies")], "global", &[]).flatten(&Chain::default());
        // Products: which APIs they bundle, and their policies around the global scope.
        let api_names: std::collections::BTreeSet<String> = cfg.apis.keys().cloned().collect();
        let mut product_errors = Vec::new();
        let products =
            ProductTable::compile(self.doc, &[key("products")], &cfg.products, &api_names, &mut product_errors);
        for e in product_errors {
            self.push(e);
        }
        let mut product_chains: HashMap<String, Chain> = HashMap::new();
        for (pname, product) in &cfg.products {
            let pp = [key("products"), key(pname), key("policies")];
            let chain = self.sections(&product.policies, &pp, &format!("product:{pname}"), &[]).flatten(&global);
            if !chain.is_empty() {
                product_chains.insert(pname.clone(), chain);
            }
        }
        // In file order, so a conflict is reported on the API or operation written later.
        for (name, _) in self.doc.map_entries(&[key("apis")]) {
            let Some(a) = cfg.apis.get(&name) else { continue };
            let p = [key("apis"), key(&name)];
            let prefix = match api_prefix(&a.path) {
                Ok(prefix) => Some(prefix),
                Err(msg) => {
                    self.err(&at(&p, &[key("path")]), msg);
                    None
                }
            };
            if let (Some(b), Some(known)) = (&a.backend, &backend_names) {
                if !known.contains(b) {
                    self.err(
                        &at(&p, &[key("backend")]),
                        format!(
                            "unknown backend `{b}` (defined: {})",
                            if known.is_empty() { "none".into() } else { known.join(", ") }
                        ),
                    );
                }
            }
            let mut hosts = Vec::new();
            for (i, h) in a.hosts.iter().enumerate() {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                if bare.is_empty() || !bare.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.') {
                    self.err(
                        &at(&p, &[key("hosts"), PathSeg::Index(i)]),
                        format!("`{h}` is not a host name (or *.domain)"),
                    );
                } else {
                    hosts.push(h.strip_prefix('*').map_or_else(|| h.clone(), |rest| format!("*{rest}")));
                }
            }
            // Routes are only added for a valid path, for the valid hosts (an API whose hosts are
            // all invalid must not become one for any host), and not when `operations` itself
            // is a stand-in: an empty list would turn the API into a catch-all. The reasons are
            // reported already.
            let operations = format_path(&at(&p, &[key("operations")]));
            let routable =
                prefix.is_some() && (a.hosts.is_empty() || !hosts.is_empty()) && !self.broken.contains(&operations);
            let prefix = prefix.unwrap_or_default();
            let api = Arc::new(Api {
                name: name.clone(),
                prefix: prefix.clone(),
                backend: a.backend.as_deref().map(Arc::from),
                server_timing: a.server_timing,
            });
            let mut api_params: Vec<String> = a.operations.iter().flat_map(|o| template_params(&o.template)).collect();
            api_params.sort();
            api_params.dedup();
            // The subscription check, when the API is in a product, runs before every policy (as
            // APIM checks the key first); product policies sit between global and API.
            let access = products.access(&name);
            let with_policies: Vec<&str> =
                access.products.iter().map(|p| &**p).filter(|p| product_chains.contains_key(*p)).collect();
            let outer = match with_policies.as_slice() {
                [] => &global,
                [one] => &product_chains[*one],
                several => {
                    self.err(
                        &at(&p, &[key("path")]),
                        format!(
                            "this API is in several products with policies ({}); product policies need the API \
                             in one product",
                            several.join(", ")
                        ),
                    );
                    &global
                }
            };
            let subscription = if access.products.is_empty() {
                None
            } else {
                match KeyNames::new(&a.subscription_key) {
                    Ok(names) => Some(Entry {
                        policy: Arc::new(crate::policy::subscription::Subscription::for_env(
                            &self.env,
                            names,
                            access.clone(),
                        )),
                        scope: format!("api:{name}").into(),
                    }),
                    Err(msg) => {
                        self.err(&at(&p, &[key("subscription_key")]), msg);
                        None
                    }
                }
            };
            let with_subscription = |mut chain: Chain| {
                if let Some(e) = &subscription {
                    chain.inbound.insert(0, e.clone());
                }
                chain
            };
            let api_chain = self
                .sections(&a.policies, &at(&p, &[key("policies")]), &format!("api:{name}"), &api_params)
                .flatten(outer);
            if a.operations.is_empty() {
                let chain = Arc::new(with_subscription(api_chain));
                self.check_terminal(&p, a, &chain);
                if !routable {
                    continue;
                }
                let route = Arc::new(Route { api: api.clone(), operation: None, chain, metrics: Default::default() });
                let shown = if prefix.is_empty() { "/" } else { &prefix };
                origins.add(
                    &route,
                    Origin {
                        path: at(&p, &[key("path")]),
                        value: a.path.clone(),
                        what: format!("{shown} (and every path below it)"),
                        of: format!("{prefix}/* of api `{name}`"),
                    },
                );
                let mut patterns = join_template(&prefix, "/");
                patterns.push(format!("{prefix}/{{*{}}}", crate::route::CATCH_ALL));
                for pattern in patterns {
                    // Conflicts are collected by the builder and reported from `build()`.
                    let _ = builder.add(&hosts, &pattern, None, route.clone());
                }
                continue;
            }
            let mut ids = HashMap::new();
            for (i, op) in a.operations.iter().enumerate() {
                let op_p = at(&p, &[key("operations"), PathSeg::Index(i)]);
                if let Some(first) = ids.insert(op.id.as_str(), i) {
                    ids.insert(op.id.as_str(), first);
                    self.err(
                        &at(&op_p, &[key("id")]),
                        format!("operation id `{}` is already used by operations[{first}] of this API", op.id),
                    );
                }
                let method = if op.method == "*" {
                    Some(None)
                } else {
                    match Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()) {
                        Ok(m) => Some(Some(m)),
                        Err(_) => {
                            self.err(&at(&op_p, &[key("method")]), format!("`{}` is not an HTTP method", op.method));
                            None
                        }
                    }
                };
                let template_ok = op.template.starts_with('/');
                if !template_ok {
                    self.err(&at(&op_p, &[key("template")]), "a template starts with / (e.g. \"/{id}\")");
                }
                let op_chain = self
                    .sections(
                        &op.policies,
                        &at(&op_p, &[key("policies")]),
                        &format!("operation:{name}/{}", op.id),
                        &template_params(&op.template),
                    )
                    .flatten(&api_chain);
                let chain = Arc::new(with_subscription(op_chain));
                if a.backend.is_none() && !chain.terminates() {
                    self.err(
                        &op_p,
                        "this operation has no backend: set the API's `backend` or answer it with `return-response`",
                    );
                }
                let Some(method) = method.filter(|_| routable && template_ok) else { continue };
                let route = Arc::new(Route {
                    api: api.clone(),
                    operation: Some(op.id.clone()),
                    chain,
                    metrics: Default::default(),
                });
                let path = match op.template.as_str() {
                    "/" if !prefix.is_empty() => prefix.clone(),
                    t => display_pattern(&format!("{prefix}{t}")),
                };
                let what = match &method {
                    Some(m) => format!("{m} {path}"),
                    None => format!("{path} (any method)"),
                };
                let of = format!("{what} of api `{name}` operation `{}`", op.id);
                let path = at(&op_p, &[key("template")]);
                origins.add(&route, Origin { path, value: op.template.clone(), what, of });
                for pattern in join_template(&prefix, &op.template) {
                    let _ = builder.add(&hosts, &pattern, method.clone(), route.clone());
                }
            }
        }
        match builder.build() {
            Ok(t) => t,
            Err(conflicts) => {
                let mut seen = HashSet::new();
                for c in conflicts {
                    let Some(Origin { path, value, what, .. }) = origins.get(&c.claim.route) else { continue };
                    let other = match &c.kind {
                        ConflictKind::Duplicate(prev) | ConflictKind::Overlap(Some(prev)) => {
                            Arc::as_ptr(&prev.route) as usize
                        }
                        ConflictKind::Overlap(None) => 1,
                        ConflictKind::Invalid(_) => 0,
                    };
                    if !seen.insert((Arc::as_ptr(&c.claim.route) as usize, other)) {
                        continue; // the same pair again: another pattern or host of the same routes
                    }
                    let mut msg = match &c.kind {
                        ConflictKind::Duplicate(prev) => {
                            format!("{what} is also defined by {}", describe_route(&prev.route))
                        }
                        ConflictKind::Overlap(Some(prev)) => {
                            let of =
                                origins.get(&prev.route).map_or_else(|| describe_route(&prev.route), |o| o.of.clone());
                            match same_but_parameter_names(&c.claim, prev) {
                                true => format!(
                                    "{what} and {of} are the same path with different parameter names: \
                                     name them the same"
                                ),
                                false => format!("{what} overlaps {of}"),
                            }
                        }
                        ConflictKind::Overlap(None) => format!("{what} overlaps another route"),
                        ConflictKind::Invalid(why) => format!("`{value}` is not a valid template: {why}"),
                    };
                    if let Some(host) = &c.host {
                        msg.push_str(&format!(" (on host `{host}`)"));
                    }
                    self.err(path, msg);
                }
                RouteTable::default()
            }
        }
    }

    fn check_terminal(&mut self, p: &[PathSeg], a: &ApiConfig, chain: &Chain) {
        if a.backend.is_none() && !chain.terminates() {
            self.err(p, "this API has no backend: set `backend` or answer it with `return-response`");
        }
    }
}

/// Where a route came from, for conflict messages.
struct Origin {
    /// The key to report at: `apis.X.path` or `apis.X.operations[i].template`.
    path: Vec<PathSeg>,
    /// As written there.
    value: String,
    /// The route as the subject of a sentence: "GET /orders/{id}".
    what: String,
    /// And as its object: "GET /orders/{id} of api `orders` operation `get-order`".
    of: String,
}

/// Origins by route (`Arc` address).
#[derive(Default)]
struct RouteOrigins(HashMap<usize, Origin>);

impl RouteOrigins {
    fn add(&mut self, route: &Arc<Route>, origin: Origin) {
        self.0.insert(Arc::as_ptr(route) as usize, origin);
    }

    fn get(&self, route: &Arc<Route>) -> Option<&Origin> {
        self.0.get(&(Arc::as_ptr(route) as usize))
    }
}

fn describe_route(r: &Route) -> String {
    match &r.operation {
        Some(op) => format!("api `{}` operation `{op}`", r.api.name),
        None => format!("api `{}`", r.api.name),
    }
}

/// Two operation patterns that differ only in their parameter names (`/{id}` and `/{order_id}`).
fn same_but_parameter_names(a: &Claim, b: &Claim) -> bool {
    fn shape(p: &str) -> String {
        let mut out = String::with_capacity(p.len());
        let mut in_param = false;
        for c in p.chars() {
            match c {
                '{' => in_param = true,
                '}' if in_param => {
                    in_param = false;
                    out.push_str("{}");
                }
                '*' if in_param => out.push('*'),
                _ if in_param => {}
                c => out.push(c),
            }
        }
        out
    }
    let ops = a.route.operation.is_some() && b.route.operation.is_some();
    ops && a.pattern != b.pattern && shape(&a.pattern) == shape(&b.pattern)
}

/// `/orders` → "/orders", `/` → "", `/v1/orders/` → "/v1/orders".
pub(super) fn api_prefix(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("`{path}` must start with /"));
    }
    if path.contains(['{', '}', '?', '#', '%', '\\', ' ']) {
        return Err(format!("`{path}` is a plain path prefix: no templates, query, escapes or spaces"));
    }
    match crate::edge::normalize::normalize_path(path) {
        Ok(n) if n == path => {}
        _ => return Err(format!("`{path}` is not normalised (no //, /./ or /../)")),
    }
    Ok(path.trim_end_matches('/').to_owned())
}

/// The parameter names of an operation template (`/{id}/items/{*rest}` → id, rest).
fn template_params(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else { break };
        let name = rest[open + 1..open + close].trim_start_matches('*');
        if !name.is_empty() {
            out.push(name.to_owned());
        }
        rest = &rest[open + close + 1..];
    }
    out
}
