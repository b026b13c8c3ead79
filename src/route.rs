//! Route matching: host, then the API's path prefix plus operation templates, then method.
//!
//! Each host (and the "any host" table) is a radix tree (`matchit`), so a lookup costs time
//! proportional to the path, not to the number of routes. The most specific route wins because
//! matchit prefers static segments over `{param}` over `{*catch_all}`.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;

use crate::policy::Chain;

/// One API, compiled.
#[derive(Debug)]
pub struct Api {
    pub name: String,
    /// The public prefix without a trailing slash ("" for `/`).
    pub prefix: String,
    pub backend: Option<String>,
}

/// What a request is routed to: an API and maybe one of its operations, with the effective
/// policy chain of that scope.
#[derive(Debug)]
pub struct Route {
    pub api: Arc<Api>,
    pub operation: Option<String>,
    pub chain: Arc<Chain>,
}

#[derive(Debug, Default)]
struct Slot {
    methods: Vec<(Method, Arc<Route>)>,
    any: Option<Arc<Route>>,
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
    }

    fn allow(&self) -> String {
        let mut names: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if names.contains(&"GET") && !names.contains(&"HEAD") {
            names.push("HEAD");
        }
        names.join(", ")
    }
}

/// The outcome of a lookup.
pub enum Lookup<'a> {
    Found(&'a Arc<Route>),
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
}

impl std::fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RouteTable({} routes)", self.len)
    }
}

/// Collects routes, then builds the trees; conflicts are reported with the route that clashed.
#[derive(Default)]
pub struct RouteTableBuilder {
    // host key ("" = any, ".x" = wildcard, "x" = exact) -> path -> slot
    pending: HashMap<String, HashMap<String, Slot>>,
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
    pub fn add(
        &mut self,
        hosts: &[String],
        pattern: &str,
        method: Option<Method>,
        route: Arc<Route>,
    ) -> Result<(), String> {
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
        for key in keys {
            let slot = self.pending.entry(key).or_default().entry(pattern.to_owned()).or_default();
            match &method {
                None => {
                    if let Some(prev) = &slot.any {
                        return Err(format!("route {pattern} (any method) is also defined by {}", describe(prev)));
                    }
                    slot.any = Some(route.clone());
                }
                Some(m) => {
                    if let Some((_, prev)) = slot.methods.iter().find(|(pm, _)| pm == m) {
                        return Err(format!("route {m} {pattern} is also defined by {}", describe(prev)));
                    }
                    slot.methods.push((m.clone(), route.clone()));
                }
            }
        }
        Ok(())
    }

    pub fn build(self) -> Result<RouteTable, Vec<String>> {
        let mut table = RouteTable::default();
        let mut errors = Vec::new();
        for (host, paths) in self.pending {
            let mut router = matchit::Router::new();
            let mut keys: Vec<_> = paths.into_iter().collect();
            keys.sort_by(|a, b| a.0.cmp(&b.0));
            for (path, slot) in keys {
                table.len += slot.methods.len() + usize::from(slot.any.is_some());
                if let Err(e) = router.insert(path.clone(), slot) {
                    errors.push(format!("route {path} conflicts with another route: {e}"));
                }
            }
            if host.is_empty() {
                table.any_host = router;
            } else if host.starts_with('.') {
                table.wildcard_hosts.push((host, router));
            } else {
                table.exact_hosts.insert(host, router);
            }
        }
        table.wildcard_hosts.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        if errors.is_empty() {
            Ok(table)
        } else {
            Err(errors)
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

    /// `host` is the request's host without port, any case.
    pub fn lookup(&self, host: Option<&str>, path: &str, method: &Method) -> Lookup<'_> {
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
                        Lookup::NotFound => {}
                        found => return found,
                    }
                }
            }
        }
        Self::in_router(&self.any_host, path, method)
    }

    fn in_router<'a>(router: &'a matchit::Router<Slot>, path: &str, method: &Method) -> Lookup<'a> {
        match router.at(path) {
            Ok(m) => match m.value.find(method) {
                Some(r) => Lookup::Found(r),
                None => Lookup::MethodNotAllowed(m.value.allow()),
            },
            Err(_) => Lookup::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(api: &str, op: Option<&str>) -> Arc<Route> {
        Arc::new(Route {
            api: Arc::new(Api { name: api.into(), prefix: String::new(), backend: None }),
            operation: op.map(str::to_owned),
            chain: Arc::new(Chain::default()),
        })
    }

    fn name(l: Lookup<'_>) -> String {
        match l {
            Lookup::Found(r) => format!("{}:{}", r.api.name, r.operation.clone().unwrap_or_default()),
            Lookup::MethodNotAllowed(a) => format!("405 {a}"),
            Lookup::NotFound => "404".into(),
        }
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
        let err = b.add(&[], "/a", Some(Method::GET), route("two", Some("y"))).expect_err("dup");
        assert!(err.contains("api `one` operation `x`"), "{err}");
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
