//! Route matching: host, then the API's path prefix plus operation templates, then method.
//!
//! Each host (and the "any host" table) is a radix tree (`matchit`), so a lookup costs time
//! proportional to the path, not to the number of routes. The most specific route wins because
//! matchit prefers static segments over `{param}` over `{*catch_all}`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use http::Method;

use crate::policy::Chain;

/// One API, compiled.
#[derive(Debug)]
pub struct Api {
    pub name: String,
    /// The public prefix without a trailing slash ("" for `/`).
    pub prefix: String,
    pub backend: Option<Arc<str>>,
    /// Responses carry a `Server-Timing` header.
    pub server_timing: bool,
}

/// What a request is routed to: an API and maybe one of its operations, with the effective
/// policy chain of that scope.
#[derive(Debug)]
pub struct Route {
    pub api: Arc<Api>,
    pub operation: Option<String>,
    pub chain: Arc<Chain>,
    /// This route's metric series, interned on its first request.
    pub metrics: crate::observe::metrics::RouteCell,
}

#[derive(Debug, Default)]
struct Slot {
    methods: Vec<(Method, Arc<Route>)>,
    any: Option<Arc<Route>>,
    /// The pattern ends in a `{*catch_all}`.
    wide: bool,
}

impl Slot {
    fn find(&self, method: &Method) -> Option<&Arc<Route>> {
        self.methods
            .iter()
            .find(|(m, _)| m == method)
            .or_else(|| {
                // HEAD is served by a GET operation unless one exists for HEAD itself.
                if method == Method::HEAD {
                    self.methods.iter().find(|(m, _)| m == Method::GET)
                } else {
                    None
                }
            })
            .map(|(_, r)| r)
            .or(self.any.as_ref())
            .or_else(|| {
                // A CORS preflight for a path whose operations do not declare OPTIONS goes to an
                // operation with a `cors` policy, which answers it (otherwise: 405 as before).
                if method == Method::OPTIONS {
                    self.methods
                        .iter()
                        .find(|(_, r)| r.chain.inbound.iter().any(|e| e.policy.kind() == "cors"))
                        .map(|(_, r)| r)
                } else {
                    None
                }
            })
    }

    fn allow(&self) -> String {
        let mut names: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if names.contains(&"GET") && !names.contains(&"HEAD") {
            names.push("HEAD");
        }
        names.join(", ")
    }
}

/// Route template parameters by name.
pub type Params = Vec<(Arc<str>, String)>;

/// The parameter behind an API without operations (everything below its prefix).
pub const CATCH_ALL: &str = "gatehouse_rest";

/// The outcome of a lookup.
pub enum Lookup<'a> {
    /// The route, and its template parameters when the route has policies that may read them.
    Found(&'a Arc<Route>, Params),
    /// The path exists with other methods; the value is an `Allow` header.
    MethodNotAllowed(String),
    NotFound,
}

/// Routes of one snapshot.
#[derive(Default)]
pub struct RouteTable {
    exact_hosts: HashMap<String, matchit::Router<Slot>>,
    /// `*.example.com` entries as (".example.com", router), longest suffix first.
    wildcard_hosts: Vec<(String, matchit::Router<Slot>)>,
    any_host: matchit::Router<Slot>,
    len: usize,
    apis: usize,
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteTable({} APIs, {} routes)", self.apis, self.len)
    }
}

/// A method and pattern that a route was added with.
#[derive(Debug, Clone)]
pub struct Claim {
    /// `None`: any method.
    pub method: Option<Method>,
    /// The pattern as given to [`RouteTableBuilder::add`].
    pub pattern: String,
    pub route: Arc<Route>,
}

/// Why a route could not be added.
#[derive(Debug, Clone)]
pub enum ConflictKind {
    /// The same method and pattern were added before, by this claim.
    Duplicate(Claim),
    /// The pattern overlaps one added before in a way the router cannot tell apart (a
    /// `{param}` and a catch-all at the same position, or the same pattern with other parameter
    /// names); `None` when that route could not be identified.
    Overlap(Option<Claim>),
    /// The pattern itself is not valid (the router's reason).
    Invalid(String),
}

/// A route that could not be added, and why. `claim` is always the route added later; the
/// route that was there first is the one named in `kind`.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// `None` for routes on any host; otherwise `api.example.com` or `*.example.com`.
    pub host: Option<String>,
    pub claim: Claim,
    pub kind: ConflictKind,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = |m: &Option<Method>| m.as_ref().map_or_else(|| "(any method) ".into(), |m| format!("{m} "));
        let c = &self.claim;
        write!(f, "route {}{}", method(&c.method), display_pattern(&c.pattern))?;
        match &self.kind {
            ConflictKind::Duplicate(prev) => write!(f, " is also defined by {}", describe(&prev.route))?,
            ConflictKind::Overlap(Some(prev)) => write!(
                f,
                " overlaps {}{} of {}",
                method(&prev.method),
                display_pattern(&prev.pattern),
                describe(&prev.route)
            )?,
            ConflictKind::Overlap(None) => f.write_str(" overlaps another route")?,
            ConflictKind::Invalid(why) => write!(f, " is not a valid route: {why}")?,
        }
        match &self.host {
            Some(h) => write!(f, " (host {h})"),
            None => Ok(()),
        }
    }
}

/// A pattern in the user's terms: catch-alls (`{*rest}`) are written `*`.
pub fn display_pattern(pattern: &str) -> String {
    match pattern.rfind("{*") {
        Some(i) if pattern.ends_with('}') => format!("{}*", &pattern[..i]),
        _ => pattern.to_owned(),
    }
}

/// The routes of one host key, in the order their patterns were first added.
#[derive(Default)]
struct PendingHost {
    order: Vec<String>,
    slots: HashMap<String, (Claim, Slot)>,
}

/// Collects routes, then builds the trees. Every conflict is kept with the route that was there
/// first; patterns go into the trees in the order they were added, so that is also the route an
/// overlap is reported against.
#[derive(Default)]
pub struct RouteTableBuilder {
    // host key ("" = any, ".x" = wildcard, "x" = exact) -> pattern -> slot
    pending: HashMap<String, PendingHost>,
    conflicts: Vec<Conflict>,
    /// Names of the APIs that have routes.
    apis: HashSet<String>,
}

/// The pattern matchit sees for a public path template.
pub fn join_template(prefix: &str, template: &str) -> Vec<String> {
    if template == "/" || template.is_empty() {
        if prefix.is_empty() {
            vec!["/".to_owned()]
        } else {
            vec![prefix.to_owned(), format!("{prefix}/")]
        }
    } else {
        vec![format!("{prefix}{template}")]
    }
}

impl RouteTableBuilder {
    /// Adds a route for every host in `hosts` (any host when empty). `method` None = any method.
    ///
    /// A pattern already added with the same method (or both any), or one the router cannot
    /// take at all, is a conflict: it is kept for [`RouteTableBuilder::build`] to return, and
    /// the first one is also returned here.
    pub fn add(
        &mut self,
        hosts: &[String],
        pattern: &str,
        method: Option<Method>,
        route: Arc<Route>,
    ) -> Result<(), Box<Conflict>> {
        if !self.apis.contains(&route.api.name) {
            self.apis.insert(route.api.name.clone());
        }
        let keys: Vec<String> = if hosts.is_empty() {
            vec![String::new()]
        } else {
            hosts
                .iter()
                .map(|h| {
                    let h = h.to_ascii_lowercase();
                    h.strip_prefix('*').map_or(h.clone(), str::to_owned)
                })
                .collect()
        };
        let claim = Claim { method: method.clone(), pattern: pattern.to_owned(), route: route.clone() };
        // A pattern the router refuses on its own is reported as such, not as a clash with
        // whatever it would have met first in the tree.
        if let Err(e) = matchit::Router::new().insert(pattern, ()) {
            let conflict = Conflict { host: None, claim, kind: ConflictKind::Invalid(invalid_reason(&e)) };
            self.conflicts.push(conflict.clone());
            return Err(Box::new(conflict));
        }
        let mut first = None;
        for key in keys {
            let host = self.pending.entry(key.clone()).or_default();
            let (_, slot) = host.slots.entry(pattern.to_owned()).or_insert_with(|| {
                host.order.push(pattern.to_owned());
                (claim.clone(), Slot::default())
            });
            let prev = match &method {
                None => slot.any.as_ref(),
                Some(m) => slot.methods.iter().find(|(pm, _)| pm == m).map(|(_, r)| r),
            };
            if let Some(prev) = prev {
                let prev = Claim { method: method.clone(), pattern: pattern.to_owned(), route: prev.clone() };
                let conflict =
                    Conflict { host: host_name(&key), claim: claim.clone(), kind: ConflictKind::Duplicate(prev) };
                first.get_or_insert_with(|| Box::new(conflict.clone()));
                self.conflicts.push(conflict);
                continue;
            }
            match &method {
                None => slot.any = Some(route.clone()),
                Some(m) => slot.methods.push((m.clone(), route.clone())),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Builds the table, or returns every conflict (those [`RouteTableBuilder::add`] found, then
    /// those the trees found), each against the route that was there first.
    pub fn build(self) -> Result<RouteTable, Vec<Conflict>> {
        let mut table = RouteTable { apis: self.apis.len(), ..RouteTable::default() };
        let mut conflicts = self.conflicts;
        // Hosts in a fixed order, so the same config always reports the same conflicts.
        let mut hosts: Vec<_> = self.pending.into_iter().collect();
        hosts.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, mut pending) in hosts {
            let mut router = matchit::Router::new();
            // Pattern -> the claim that created it, for the patterns already in `router`.
            let mut inserted: Vec<(String, Claim)> = Vec::with_capacity(pending.order.len());
            let mut index: HashMap<String, usize> = HashMap::with_capacity(pending.order.len());
            for pattern in pending.order {
                let Some((claim, slot)) = pending.slots.remove(&pattern) else { continue };
                table.len += slot.methods.len() + usize::from(slot.any.is_some());
                let mut slot = slot;
                slot.wide = pattern.rsplit('/').next().is_some_and(|last| last.starts_with("{*"));
                match router.insert(pattern.clone(), slot) {
                    Ok(()) => {
                        index.insert(pattern.clone(), inserted.len());
                        inserted.push((pattern, claim));
                    }
                    Err(e) => {
                        let kind = match e {
                            matchit::InsertError::Conflict { with } => {
                                let prev = index.get(&with).map(|&i| &inserted[i]).or_else(|| {
                                    // The router names a route it rebuilt from its tree; if that
                                    // is not one of ours verbatim, find the first one that clashes.
                                    inserted.iter().find(|(p, _)| {
                                        let mut pair = matchit::Router::new();
                                        pair.insert(p.as_str(), ()).is_ok()
                                            && pair.insert(pattern.as_str(), ()).is_err()
                                    })
                                });
                                ConflictKind::Overlap(prev.map(|(_, c)| c.clone()))
                            }
                            other => ConflictKind::Invalid(invalid_reason(&other)),
                        };
                        conflicts.push(Conflict { host: host_name(&key), claim, kind });
                    }
                }
            }
            if key.is_empty() {
                table.any_host = router;
            } else if key.starts_with('.') {
                table.wildcard_hosts.push((key, router));
            } else {
                table.exact_hosts.insert(key, router);
            }
        }
        table.wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        if conflicts.is_empty() {
            Ok(table)
        } else {
            Err(conflicts)
        }
    }
}

/// A host key as the user wrote it: "" → None, ".example.com" → "*.example.com".
fn host_name(key: &str) -> Option<String> {
    match key {
        "" => None,
        k if k.starts_with('.') => Some(format!("*{k}")),
        k => Some(k.to_owned()),
    }
}

/// Why the router refuses a pattern on its own, in template terms.
fn invalid_reason(e: &matchit::InsertError) -> String {
    match e {
        matchit::InsertError::InvalidParamSegment => "only one `{parameter}` is allowed per path segment".into(),
        matchit::InsertError::InvalidParam => {
            "a parameter needs a name, as in `{id}` (write `{{` or `}}` for a literal brace)".into()
        }
        matchit::InsertError::InvalidCatchAll => "a catch-all (`{*name}`) must be the last segment".into(),
        other => {
            let s = other.to_string();
            let mut chars = s.chars();
            chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
        }
    }
}

fn describe(r: &Route) -> String {
    match &r.operation {
        Some(op) => format!("api `{}` operation `{op}`", r.api.name),
        None => format!("api `{}`", r.api.name),
    }
}

impl RouteTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many APIs have routes in this table (`len` counts the method/path variants).
    pub fn api_count(&self) -> usize {
        self.apis
    }

    /// `host` is the request's host without port, any case (a trailing dot is ignored).
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Lookup<'_> {
        let host = host.map(|h| h.strip_suffix('.').unwrap_or(h));
        let (found, wide) = self.find(host, path, method);
        // Most backends read `/admin/` as `/admin`: a route written for the path without its
        // trailing slash wins over a catch-all that would otherwise take it past that route's
        // policies.
        if wide && path.len() > 1 && path.ends_with('/') {
            let (trimmed, trimmed_wide) = self.find(host, &path[..path.len() - 1], method);
            if !trimmed_wide && !matches!(trimmed, Lookup::NotFound) {
                return trimmed;
            }
        }
        found
    }

    /// The lookup, and whether the route that matched is a catch-all.
    fn find(&self, host: Option<&str>, path: &str, method: &Method) -> (Lookup<'_>, bool) {
        if let Some(host) = host {
            if !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty() {
                let lower;
                let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                    lower = host.to_ascii_lowercase();
                    lower.as_str()
                } else {
                    host
                };
                let router = self.exact_hosts.get(host).or_else(|| {
                    self.wildcard_hosts.iter().find(|(suffix, _)| host.ends_with(suffix.as_str())).map(|(_, r)| r)
                });
                if let Some(router) = router {
                    match Self::in_router(router, path, method) {
                        (Lookup::NotFound, _) => {}
                        found => return found,
                    }
                }
            }
        }
        Self::in_router(&self.any_host, path, method)
    }

    fn in_router<'a>(router: &'a matchit::Router<Slot>, path: &str, method: &Method) -> (Lookup<'a>, bool) {
        match router.at(path) {
            Ok(m) => match m.value.find(method) {
                Some(r) => {
                    // Only named template parameters are collected (policies read them); the
                    // catch-all that ends a wide pattern is not one.
                    let named = m.params.len() > usize::from(m.value.wide);
                    let params = if r.chain.is_empty() || !named {
                        Vec::new()
                    } else {
                        m.params
                            .iter()
                            .filter(|(k, _)| *k != CATCH_ALL)
                            .map(|(k, v)| (Arc::from(k), v.to_owned()))
                            .collect()
                    };
                    (Lookup::Found(r, params), m.value.wide)
                }
                None => (Lookup::MethodNotAllowed(m.value.allow()), m.value.wide),
            },
            Err(_) => (Lookup::NotFound, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(api: &str, op: Option<&str>) -> Arc<Route> {
        Arc::new(Route {
            api: Arc::new(Api { name: api.into(), prefix: String::new(), backend: None, server_timing: false }),
            operation: op.map(str::to_owned),
            chain: Arc::new(Chain::default()),
            metrics: Default::default(),
        })
    }

    fn name(l: Lookup<'_>) -> String {
        match l {
            Lookup::Found(r, _) => format!("{}:{}", r.api.name, r.operation.clone().unwrap_or_default()),
            Lookup::MethodNotAllowed(a) => format!("405 {a}"),
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn a_trailing_slash_does_not_escape_a_specific_route_into_a_catch_all() {
        let mut b = RouteTableBuilder::default();
        b.add(&[], "/shop/{*rest}", None, route("shop", Some("anything"))).expect("add");
        b.add(&[], "/shop/admin", None, route("shop", Some("admin"))).expect("add");
        b.add(&[], "/shop/orders/{id}", Some(Method::GET), route("shop", Some("order"))).expect("add");
        b.add(&["vip.test".into()], "/v", None, route("vip", None)).expect("add");
        let t = b.build().expect("build");
        assert_eq!(name(t.lookup(None, "/shop/admin/", &Method::GET)), "shop:admin");
        assert_eq!(name(t.lookup(None, "/shop/orders/7/", &Method::GET)), "shop:order");
        assert_eq!(name(t.lookup(None, "/shop/orders/7/", &Method::POST)), "405 GET, HEAD");
        assert_eq!(name(t.lookup(None, "/shop/other/", &Method::GET)), "shop:anything");
        assert_eq!(name(t.lookup(Some("VIP.test."), "/v", &Method::GET)), "vip:");
    }

    #[test]
    fn most_specific_wins_and_methods_matter() {
        let mut b = RouteTableBuilder::default();
        for p in join_template("/orders", "/") {
            b.add(&[], &p, Some(Method::GET), route("orders", Some("list"))).expect("add");
        }
        b.add(&[], "/orders/{id}", Some(Method::GET), route("orders", Some("get"))).expect("add");
        b.add(&[], "/orders/special", Some(Method::GET), route("orders", Some("special"))).expect("add");
        b.add(&[], "/", None, route("root", None)).expect("add");
        b.add(&[], "/{*rest}", None, route("root", None)).expect("add");
        b.add(&["api.test".into()], "/orders/{id}", Some(Method::GET), route("hosted", Some("get"))).expect("add");
        let t = b.build().expect("build");
        assert_eq!(name(t.lookup(None, "/orders/1", &Method::GET)), "orders:get");
        assert_eq!(name(t.lookup(None, "/orders/special", &Method::GET)), "orders:special");
        assert_eq!(name(t.lookup(None, "/orders", &Method::GET)), "orders:list");
        assert_eq!(name(t.lookup(None, "/orders/", &Method::HEAD)), "orders:list");
        assert_eq!(name(t.lookup(None, "/orders/1", &Method::POST)), "405 GET, HEAD");
        assert_eq!(name(t.lookup(None, "/elsewhere/x", &Method::POST)), "root:");
        assert_eq!(name(t.lookup(Some("API.test"), "/orders/1", &Method::GET)), "hosted:get");
        assert_eq!(name(t.lookup(Some("api.test"), "/x", &Method::GET)), "root:");
    }

    #[test]
    fn duplicate_routes_are_refused() {
        let mut b = RouteTableBuilder::default();
        b.add(&[], "/a", Some(Method::GET), route("one", Some("x"))).expect("add");
        let err = b.add(&[], "/a", Some(Method::GET), route("two", Some("y"))).expect_err("dup").to_string();
        assert!(err.contains("api `one` operation `x`"), "{err}");
    }

    #[test]
    fn conflicts_name_the_route_that_was_there_first() {
        let mut b = RouteTableBuilder::default();
        let get = route("orders", Some("get-order"));
        let v2 = route("orders-v2", None);
        b.add(&[], "/orders/{id}", Some(Method::GET), get.clone()).expect("add");
        for p in ["/orders", "/orders/", "/orders/{*gatehouse_rest}"] {
            b.add(&[], p, None, v2.clone()).expect("no duplicate");
        }
        b.add(&["A.test".into(), "*.b.test".into()], "/x", None, route("x", None)).expect("add");
        let dup = route("y", Some("op"));
        let err = b.add(&["a.test".into(), "*.b.test".into()], "/x", None, dup.clone()).expect_err("dup");
        assert_eq!(err.to_string(), "route (any method) /x is also defined by api `x` (host a.test)");
        let bad = b.add(&[], "/f/{*rest}/x", Some(Method::GET), route("f", None)).expect_err("invalid");
        assert!(matches!(bad.kind, ConflictKind::Invalid(ref why) if why.contains("catch-all")), "{bad}");
        let conflicts = b.build().expect_err("conflicts");
        let shown: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "route (any method) /x is also defined by api `x` (host a.test)",
                "route (any method) /x is also defined by api `x` (host *.b.test)",
                "route GET /f/{*rest}/x is not a valid route: a catch-all (`{*name}`) must be the last segment",
                "route (any method) /orders/* overlaps GET /orders/{id} of api `orders` operation `get-order`",
            ]
        );
        let overlap = &conflicts[3];
        assert!(Arc::ptr_eq(&overlap.claim.route, &v2));
        let ConflictKind::Overlap(Some(first)) = &overlap.kind else { panic!("{overlap:?}") };
        assert!(Arc::ptr_eq(&first.route, &get) && first.method == Some(Method::GET));
        assert!(Arc::ptr_eq(&conflicts[0].claim.route, &dup));
    }

    #[test]
    fn counts_apis_and_shows_catch_alls() {
        let mut b = RouteTableBuilder::default();
        b.add(&[], "/a", Some(Method::GET), route("one", Some("x"))).expect("add");
        b.add(&[], "/a", Some(Method::POST), route("one", Some("y"))).expect("add");
        b.add(&[], "/b/{*rest}", None, route("two", None)).expect("add");
        let t = b.build().expect("build");
        assert_eq!((t.api_count(), t.len()), (2, 3));
        assert_eq!(display_pattern("/b/{*rest}"), "/b/*");
        assert_eq!(display_pattern("/b/{id}"), "/b/{id}");
    }

    #[test]
    fn ten_thousand_routes() {
        let mut b = RouteTableBuilder::default();
        for i in 0..10_000 {
            b.add(&[], &format!("/api{i}/items/{{id}}"), Some(Method::GET), route(&format!("a{i}"), None))
                .expect("add");
        }
        let t = b.build().expect("build");
        assert_eq!(t.len(), 10_000);
        assert_eq!(name(t.lookup(None, "/api9999/items/7", &Method::GET)), "a9999:");
    }
}
