//! Compiling a config into the immutable [`Snapshot`] the gateway serves from.
//!
//! `gatehouse check`, start-up and every reload run this same function: it reads the file,
//! resolves secrets, deserializes each section on its own, validates everything it can (file
//! paths, addresses, references between sections, routes) and returns *all* errors with their
//! locations. A snapshot is never mutated; a reload builds a new one and swaps it in.
//!
//! This module holds the snapshot types, the entry points, per-section deserialization and the
//! `Compiler` core (listeners, admin, edge, access log); `backends` compiles backends and their
//! server URLs, `routes` compiles APIs and operations into the route table.

mod backends;
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::yaml::{format_path, NodeKind};
use crate::config::{self, ApiConfig, BackendConfig, ConfigDoc, ConfigError, Document, PathSeg};
use crate::edge::guard::{GuardLimits, MAX_HEADERS};
use crate::edge::TrustedProxies;
use crate::listener::tls::CertSpec;
use crate::observe::access_log::LogFormat;
use crate::policy::{build_section, PolicyEnv, ScopeCx, Sections, Stage};
use crate::route::RouteTable;
use crate::upstream::BackendSpec;

/// One listener, compiled.
#[derive(Debug, Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub bind: String,
    pub addr: SocketAddr,
    pub tls: Option<Arc<Vec<CertSpec>>>,
}

#[derive(Debug, Clone)]
pub struct AdminSpec {
    pub addr: SocketAddr,
    pub bind: String,
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EdgeSpec {
    pub trusted: TrustedProxies,
    pub limits: GuardLimits,
    pub max_connections: usize,
    pub h2_max_streams: u32,
    pub max_requests_per_connection: u64,
}

/// Where the access log goes (`None` format = off).
#[derive(Debug, Clone)]
pub struct AccessLogSpec {
    pub format: Option<Arc<LogFormat>>,
    pub format_text: String,
    pub path: String,
    /// Query parameters whose values the log must not show beyond the built-in ones: the APIs'
    /// own subscription-key parameter names.
    pub secret_query_params: Vec<Box<str>>,
}

/// Everything the gateway serves from, compiled and validated.
pub struct Snapshot {
    pub workers: Option<usize>,
    pub shutdown_grace: Duration,
    pub watch_config: bool,
    pub listeners: Vec<ListenerSpec>,
    pub admin: Option<AdminSpec>,
    pub edge: EdgeSpec,
    pub access_log: AccessLogSpec,
    pub backends: BTreeMap<String, Arc<BackendSpec>>,
    pub routes: RouteTable,
    /// The long-lived services the policies were built with; reloads compile with the same.
    pub env: Arc<PolicyEnv>,
    /// The store to open at start (subscriptions): `store:`, or the default SQLite file when
    /// products exist without one.
    pub store: Option<config::store::StoreConfig>,
    /// The secret files this config read, for `secrets::Watcher` (rotation without restart).
    pub secrets: crate::secrets::Sources,
    pub telemetry: crate::observe::telemetry::TelemetrySpec,
    /// `edge.compression` and the APIs' own settings.
    pub compression: crate::compress::Table,
}

impl Snapshot {
    /// How many APIs are routed (`routes.len()` counts each method and path variant).
    pub fn api_count(&self) -> usize {
        self.routes.api_count()
    }
}

/// Reads and compiles a config file with fresh policy services (`check`, a first start).
pub fn compile_file(path: &Path) -> Result<Snapshot, Vec<ConfigError>> {
    compile_file_in(path, &Arc::new(PolicyEnv::new()))
}

/// Reads and compiles a config file; policies keep their state in `env` (a reload).
pub fn compile_file_in(path: &Path, env: &Arc<PolicyEnv>) -> Result<Snapshot, Vec<ConfigError>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: name.clone(),
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read the config file: {e}"),
        }]
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    compile_str_in(&name, &text, &base, env)
}

/// Compiles config text; relative paths in it are resolved against `base_dir`.
pub fn compile_str(file: &str, text: &str, base_dir: &Path) -> Result<Snapshot, Vec<ConfigError>> {
    compile_str_in(file, text, base_dir, &Arc::new(PolicyEnv::new()))
}

/// [`compile_str`] with the policy services of a running gateway.
pub fn compile_str_in(
    file: &str,
    text: &str,
    base_dir: &Path,
    env: &Arc<PolicyEnv>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut doc = Document::parse(file, text)?;
    let mut errors = Vec::new();
    let secrets = crate::secrets::resolve_in(&mut doc, base_dir, &mut errors);
    let cfg = deserialize_sections(&doc, &mut errors);
    // The values at these paths are stand-ins (see `Document::deserialize_at_lenient`); an
    // unknown key leaves nothing in its place.
    let broken = errors.iter().filter(|e| !e.is_unknown_key()).map(|e| e.path.clone()).collect();
    let vars = crate::policy::declared_variables(&doc);
    let mut snapshot =
        Compiler { doc: &doc, base: base_dir, errors: &mut errors, broken, env: env.clone(), vars }.compile(&cfg);
    if errors.is_empty() {
        snapshot.secrets = secrets.sources;
        Ok(snapshot)
    } else {
        // An error about a value (a bad URL, a wrong type) would echo a resolved secret.
        secrets.redact(&mut errors);
        config::yaml::sort_errors(&mut errors);
        Err(errors)
    }
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

fn at(base: &[PathSeg], more: &[PathSeg]) -> Vec<PathSeg> {
    let mut v = base.to_vec();
    v.extend_from_slice(more);
    v
}

/// Deserializes each section (and each backend and API) on its own so one missing key does not
/// hide the errors of its neighbours. A section with errors is still returned when its other
/// values could be read, so their checks run too; the compiler skips the paths with errors.
fn deserialize_sections(doc: &Document, errors: &mut Vec<ConfigError>) -> ConfigDoc {
    let mut cfg = ConfigDoc::default();
    for (name, path) in doc.map_entries(&[]) {
        if !config::TOP_LEVEL_KEYS.contains(&name.as_str()) {
            errors.push(doc.error_at_key(
                &path,
                format!("unknown key `{name}` (expected one of: {})", config::TOP_LEVEL_KEYS.join(", ")),
            ));
        }
    }
    if let Some(root) = doc.get(&[]) {
        if !matches!(root.kind, NodeKind::Map(_)) {
            errors.push(doc.error(&[], "the config must be a map of sections (listeners, backends, apis, …)"));
            return cfg;
        }
    }
    fn take<T: serde::de::DeserializeOwned>(
        doc: &Document,
        path: &[PathSeg],
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        let (value, e) = doc.deserialize_at_lenient::<T>(path)?;
        errors.extend(e);
        value
    }
    // `backends` and `apis` are read entry by entry; a section that is not a map is one error.
    for section in ["backends", "apis"] {
        if doc.get(&[key(section)]).is_some_and(|n| !matches!(n.kind, NodeKind::Map(_)) && !n.is_null()) {
            take::<BTreeMap<String, serde::de::IgnoredAny>>(doc, &[key(section)], errors);
        }
    }
    if let Some(v) = take(doc, &[key("runtime")], errors) {
        cfg.runtime = v;
    }
    if let Some(v) = take(doc, &[key("listeners")], errors) {
        cfg.listeners = v;
    }
    cfg.admin = take(doc, &[key("admin")], errors);
    cfg.cluster = take(doc, &[key("cluster")], errors);
    cfg.store = take(doc, &[key("store")], errors);
    cfg.cache = take(doc, &[key("cache")], errors);
    for (name, path) in doc.map_entries(&[key("products")]) {
        if let Some(v) = take::<config::store::ProductConfig>(doc, &path, errors) {
            cfg.products.insert(name, v);
        }
    }
    if let Some(v) = take(doc, &[key("telemetry")], errors) {
        cfg.telemetry = v;
    }
    if let Some(v) = take(doc, &[key("policies")], errors) {
        cfg.policies = v;
    }
    if let Some(v) = take(doc, &[key("edge")], errors) {
        cfg.edge = v;
    }
    crate::identity::providers::compile(doc, errors);
    for (name, path) in doc.map_entries(&[key("backends")]) {
        if let Some(v) = take::<BackendConfig>(doc, &path, errors) {
            cfg.backends.insert(name, v);
        }
    }
    for (name, path) in doc.map_entries(&[key("apis")]) {
        if let Some(v) = take::<ApiConfig>(doc, &path, errors) {
            cfg.apis.insert(name, v);
        }
    }
    cfg
}

struct Compiler<'a> {
    doc: &'a Document,
    base: &'a Path,
    errors: &'a mut Vec<ConfigError>,
    /// Paths (as `format_path` writes them) that already have an error from reading the file;
    /// the values there are stand-ins, so checks on them would only repeat that error.
    broken: Vec<String>,
    env: Arc<PolicyEnv>,
    /// Variable names some `set-variable` sets.
    vars: Vec<String>,
}

/// Whether `path` is `at` or below it (both as `format_path` writes them).
fn is_within(path: &str, at: &str) -> bool {
    match path.strip_prefix(at) {
        Some("") => true,
        Some(rest) => !at.is_empty() && (rest.starts_with('.') || rest.starts_with('[')),
        None => false,
    }
}

impl Compiler<'_> {
    /// Records an error, unless its path is at or below one that already has an error.
    fn err(&mut self, path: &[PathSeg], msg: impl Into<String>) {
        let e = self.doc.error(path, msg);
        self.push(e);
    }

    fn push(&mut self, e: ConfigError) {
        if !self.broken.iter().any(|b| is_within(&e.path, b)) {
            self.errors.push(e);
        }
    }

    /// Whether reading the file already found an error at `path` or below it.
    fn broken(&self, path: &[PathSeg]) -> bool {
        let path = format_path(path);
        self.broken.iter().any(|b| is_within(b, &path))
    }

    /// The four policy sections of one scope (`policies:` at `path`), with their errors.
    fn sections(&mut self, cfg: &config::PoliciesConfig, path: &[PathSeg], scope: &str, params: &[String]) -> Sections {
        let mut errors = Vec::new();
        let vars = std::mem::take(&mut self.vars);
        let env = self.env.clone();
        let cx = ScopeCx { doc: self.doc, scope: scope.into(), params, vars: &vars, env: &env };
        let mut one = |items: &[config::PolicyConfig], stage: Stage, name: &str| {
            let p = at(path, &[key(name)]);
            build_section(items, stage, &p, &cx, &mut errors)
        };
        let sections = Sections {
            inbound: one(&cfg.inbound, Stage::Inbound, "inbound"),
            backend: one(&cfg.backend, Stage::Backend, "backend"),
            outbound: one(&cfg.outbound, Stage::Outbound, "outbound"),
            on_error: one(&cfg.on_error, Stage::OnError, "on-error"),
        };
        self.vars = vars;
        for e in errors {
            self.push(e);
        }
        sections
    }

    fn file(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn compile(&mut self, cfg: &ConfigDoc) -> Snapshot {
        let listeners = self.listeners(cfg);
        let admin = self.admin(cfg);
        let edge = self.edge(cfg);
        let access_log = self.access_log(cfg);
        let backends = self.backends(cfg);
        // Before the routes: their limit policies take the engine this configures.
        for (k, msg) in self.env.limits.configure(cfg.cluster.as_ref()) {
            self.err(&[key("cluster"), key(k)], msg);
        }
        self.env.cache.configure(cfg.cache.as_ref());
        if let Some(store) = &cfg.store {
            for (k, msg) in crate::store::Store::check_config(store) {
                self.err(&[key("store"), key(k)], msg);
            }
        }
        let routes = self.routes(cfg);
        let telemetry = crate::observe::telemetry::compile(&cfg.telemetry, self.doc, self.errors);
        let mut compression_errors = Vec::new();
        let compression = crate::compress::config::compile(self.doc, &mut compression_errors);
        for e in compression_errors {
            self.push(e);
        }
        if let Some(w) = cfg.runtime.workers {
            if w == 0 || w > 1024 {
                self.err(&[key("runtime"), key("workers")], "workers must be between 1 and 1024");
            }
        }
        Snapshot {
            workers: cfg.runtime.workers,
            shutdown_grace: cfg.runtime.shutdown_grace.0,
            watch_config: cfg.runtime.watch_config,
            listeners,
            admin,
            edge,
            access_log,
            backends,
            routes,
            env: self.env.clone(),
            secrets: Default::default(),
            store: cfg.store.clone().or_else(|| (!cfg.products.is_empty()).then(Default::default)),
            telemetry,
            compression,
        }
    }

    fn listeners(&mut self, cfg: &ConfigDoc) -> Vec<ListenerSpec> {
        let mut out = Vec::new();
        let mut names = HashMap::new();
        let mut binds: HashMap<SocketAddr, (&str, usize)> = HashMap::new();
        if cfg.listeners.is_empty() && self.doc.get(&[key("listeners")]).is_none() {
            self.err(&[], "no listeners: add `listeners: [ { name: plain, bind: \"127.0.0.1:8080\" } ]`");
        }
        for (i, l) in cfg.listeners.iter().enumerate() {
            let p = [key("listeners"), PathSeg::Index(i)];
            if let Some(first) = names.insert(l.name.as_str(), i) {
                names.insert(l.name.as_str(), first);
                self.err(
                    &at(&p, &[key("name")]),
                    format!("listener name `{}` is already used by listeners[{first}]", l.name),
                );
            }
            let addr = match l.bind.parse::<SocketAddr>() {
                Ok(a) => a,
                Err(_) => {
                    self.err(
                        &at(&p, &[key("bind")]),
                        format!("`{}` is not an address such as 127.0.0.1:8080 or [::]:443", l.bind),
                    );
                    continue;
                }
            };
            if addr.port() != 0 {
                if let Some(&(name, first)) = binds.get(&addr) {
                    self.err(
                        &at(&p, &[key("bind")]),
                        format!("{addr} is already bound by listener `{name}` (listeners[{first}])"),
                    );
                } else {
                    binds.insert(addr, (&l.name, i));
                }
            }
            let tls = l.tls.as_ref().map(|t| {
                let mut certs = Vec::new();
                if t.certificates.is_empty() {
                    self.err(
                        &at(&p, &[key("tls"), key("certificates")]),
                        "a TLS listener needs at least one certificate",
                    );
                }
                for (j, c) in t.certificates.iter().enumerate() {
                    let cp = at(&p, &[key("tls"), key("certificates"), PathSeg::Index(j)]);
                    if self.broken(&cp) {
                        continue;
                    }
                    match CertSpec::load(&self.file(&c.cert), &self.file(&c.key), &c.hosts) {
                        Ok(spec) => certs.push(spec),
                        Err((field, msg)) => self.err(&at(&cp, &[key(field)]), msg),
                    }
                }
                Arc::new(certs)
            });
            out.push(ListenerSpec { name: l.name.clone(), bind: l.bind.clone(), addr, tls });
        }
        out
    }

    fn admin(&mut self, cfg: &ConfigDoc) -> Option<AdminSpec> {
        let a = cfg.admin.as_ref()?;
        match a.bind.parse::<SocketAddr>() {
            Ok(addr) => {
                if let Some(t) = &a.token {
                    if t.len() < 16 {
                        self.err(&[key("admin"), key("token")], "the admin token must be at least 16 characters");
                    }
                }
                Some(AdminSpec { addr, bind: a.bind.clone(), token: a.token.clone() })
            }
            Err(_) => {
                self.err(
                    &[key("admin"), key("bind")],
                    format!("`{}` is not an address such as 127.0.0.1:9901", a.bind),
                );
                None
            }
        }
    }

    fn edge(&mut self, cfg: &ConfigDoc) -> EdgeSpec {
        let e = &cfg.edge;
        let mut nets = Vec::new();
        for (i, t) in e.trusted_proxies.iter().enumerate() {
            let parsed = t.parse::<IpNet>().or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => nets.push(n.trunc()),
                Err(_) => self.err(
                    &[key("edge"), key("trusted_proxies"), PathSeg::Index(i)],
                    format!("`{t}` is not an IP address or CIDR such as 10.0.0.0/8"),
                ),
            }
        }
        let l = &e.limits;
        let lp = [key("edge"), key("limits")];
        if l.headers == 0 || l.headers > MAX_HEADERS {
            self.err(&at(&lp, &[key("headers")]), format!("headers must be between 1 and {MAX_HEADERS}"));
        }
        if l.header_bytes.0 < 1024 || l.header_bytes.0 > 1024 * 1024 {
            self.err(&at(&lp, &[key("header_bytes")]), "header_bytes must be between 1KiB and 1MiB");
        }
        if l.uri_bytes.0 < 256 || l.uri_bytes.0 > 1024 * 1024 {
            self.err(&at(&lp, &[key("uri_bytes")]), "uri_bytes must be between 256B and 1MiB");
        }
        if l.header_timeout.0.is_zero() {
            self.err(&at(&lp, &[key("header_timeout")]), "header_timeout must be more than 0");
        }
        if l.idle_timeout.0.is_zero() {
            self.err(&at(&lp, &[key("idle_timeout")]), "idle_timeout must be more than 0");
        }
        if l.body_timeout.0.is_zero() {
            self.err(&at(&lp, &[key("body_timeout")]), "body_timeout must be more than 0");
        }
        if l.max_connections == 0 {
            self.err(&at(&lp, &[key("max_connections")]), "max_connections must be at least 1");
        }
        if l.max_requests_per_connection == 0 {
            self.err(&at(&lp, &[key("max_requests_per_connection")]), "max_requests_per_connection must be at least 1");
        }
        EdgeSpec {
            trusted: TrustedProxies::new(nets),
            limits: GuardLimits {
                header_bytes: l.header_bytes.0 as usize,
                headers: l.headers,
                uri_bytes: l.uri_bytes.0 as usize,
                body_bytes: l.body_bytes.0,
                header_timeout: l.header_timeout.0,
                idle_timeout: l.idle_timeout.0,
                body_timeout: l.body_timeout.0,
                body_min_rate: l.body_min_rate.0,
            },
            max_connections: l.max_connections,
            h2_max_streams: l.h2_max_concurrent_streams,
            max_requests_per_connection: l.max_requests_per_connection,
        }
    }

    fn access_log(&mut self, cfg: &ConfigDoc) -> AccessLogSpec {
        let a = &cfg.edge.access_log;
        let format = if a.format == "off" {
            None
        } else {
            match LogFormat::parse(&a.format) {
                Ok(f) => Some(Arc::new(f)),
                Err(msg) => {
                    self.err(&[key("edge"), key("access_log"), key("format")], msg);
                    None
                }
            }
        };
        let path =
            if a.path == "stdout" { a.path.clone() } else { self.file(Path::new(&a.path)).display().to_string() };
        let mut secret_query_params: Vec<Box<str>> = Vec::new();
        for api in cfg.apis.values() {
            let q = api.subscription_key.query.as_str();
            let builtin = crate::observe::access_log::REDACTED_QUERY_PARAMS.iter().any(|b| b.eq_ignore_ascii_case(q));
            if !builtin && !secret_query_params.iter().any(|n| n.eq_ignore_ascii_case(q)) {
                secret_query_params.push(q.into());
            }
        }
        AccessLogSpec { format, format_text: a.format.clone(), path, secret_query_params }
    }
}

#[cfg(test)]
mod tests {
    use super::backends::parse_server_url;
    use super::routes::api_prefix;
    use super::*;

    #[test]
    fn prefixes_and_urls() {
        assert_eq!(api_prefix("/orders/").as_deref(), Ok("/orders"));
        assert_eq!(api_prefix("/").as_deref(), Ok(""));
        assert!(api_prefix("orders").is_err());
        assert!(api_prefix("/a//b").is_err());
        let (s, a, b) = parse_server_url("https://h:8443/v1/").expect("url");
        assert_eq!((s.as_str(), a.as_str(), b.as_str()), ("https", "h:8443", "/v1"));
        assert!(parse_server_url("ftp://h").is_err());
    }

    fn errors(yaml: &str) -> Vec<String> {
        let errors = compile_str("gw.yaml", yaml, Path::new(".")).err().expect("errors");
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn stand_in_values_do_not_add_errors() {
        // Every value of the wrong type is reported once; the checks on the stand-in values it
        // leaves (0, "", an empty list) stay quiet, while the checks on the other values run.
        let yaml = "listeners:\n  - { name: [x], bind: [y] }\nruntime: { workers: two }\n\
                    edge: { limits: { headers: abc, header_bytes: 512B } }\n\
                    backends:\n  b:\n    servers: 5\n    health: { path: /h, healthy_threshold: x }\n\
                    apis:\n  a: { path: /a, backend: b, operations: x }\n  c: { path: /a, backend: b }\n";
        assert_eq!(
            errors(yaml),
            [
                "gw.yaml:2:13: listeners[0].name: expected a string, found a list",
                "gw.yaml:2:24: listeners[0].bind: expected a string, found a list",
                "gw.yaml:3:21: runtime.workers: expected an integer, found \"two\"",
                "gw.yaml:4:28: edge.limits.headers: expected an integer, found \"abc\"",
                "gw.yaml:4:47: edge.limits.header_bytes: header_bytes must be between 1KiB and 1MiB",
                "gw.yaml:7:14: backends.b.servers: expected a list, found 5",
                "gw.yaml:8:44: backends.b.health.healthy_threshold: expected an integer, found \"x\"",
                "gw.yaml:10:42: apis.a.operations: expected a list, found \"x\"",
            ]
        );
    }

    #[test]
    fn sections_of_the_wrong_shape_are_one_error() {
        let yaml = "listeners: [ { name: main, bind: \"127.0.0.1:8080\" } ]\nbackends: [ b ]\n\
                    apis:\n  a: { path: /a, backend: b }\n";
        assert_eq!(errors(yaml), ["gw.yaml:2:11: backends: expected a map, found a list"]);
        let yaml = "listeners: [ { name: main, bind: \"127.0.0.1:8080\" } ]\napis: 5\n";
        assert_eq!(errors(yaml), ["gw.yaml:2:7: apis: expected a map, found 5"]);
    }

    #[test]
    fn an_unknown_key_does_not_silence_its_neighbours() {
        let yaml = "listeners: [ { name: main, bind: \"127.0.0.1:8080\" } ]\nbackends:\n  b:\n    \
                    servers: [ { url: \"https://127.0.0.1:9443\" } ]\n    tls: { client_cert: c.pem, verfy: false }\n\
                    apis:\n  a: { path: /a, backend: b, colour: red }\n  c: { path: /a, backend: b }\n";
        let errors = errors(yaml);
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(errors[0].ends_with("backends.b.tls: client_cert and client_key go together"), "{errors:#?}");
        assert!(errors[1].contains("backends.b.tls.verfy: unknown key `verfy`"), "{errors:#?}");
        assert!(errors[2].contains("apis.a.colour: unknown key `colour`"), "{errors:#?}");
        assert_eq!(errors[3], "gw.yaml:8:14: apis.c.path: /a (and every path below it) is also defined by api `a`");
    }
}
