//! Compiling a config into the immutable [`Snapshot`] the gateway serves from.
//!
//! `gatehouse check`, start-up and every reload run this same function: it reads the file,
//! resolves secrets, deserializes each section on its own, validates everything it can (file
//! paths, addresses, references between sections, routes) and returns *all* errors with their
//! locations. A snapshot is never mutated; a reload builds a new one and swaps it in.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Method, Uri};
use ipnet::IpNet;

use crate::config::yaml::{format_path, NodeKind};
use crate::config::{
    self, ApiConfig, BackendConfig, ConfigDoc, ConfigError, Document, PathSeg, RetryCondition, RetryOn,
};
use crate::edge::guard::{GuardLimits, MAX_HEADERS};
use crate::edge::TrustedProxies;
use crate::listener::tls::CertSpec;
use crate::observe::access_log::LogFormat;
use crate::policy::{build_section, Chain};
use crate::route::{display_pattern, join_template, Api, Claim, ConflictKind, Route, RouteTable, RouteTableBuilder};
use crate::upstream::balance::Balance;
use crate::upstream::{tls, BackendSpec, HealthSpec, Protocol, RetrySpec, ServerSpec};

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
}

impl Snapshot {
    /// How many APIs are routed (`routes.len()` counts each method and path variant).
    pub fn api_count(&self) -> usize {
        self.routes.api_count()
    }
}

/// Reads and compiles a config file.
pub fn compile_file(path: &Path) -> Result<Snapshot, Vec<ConfigError>> {
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
    compile_str(&name, &text, &base)
}

/// Compiles config text; relative paths in it are resolved against `base_dir`.
pub fn compile_str(file: &str, text: &str, base_dir: &Path) -> Result<Snapshot, Vec<ConfigError>> {
    let mut doc = Document::parse(file, text)?;
    let mut errors = Vec::new();
    crate::secrets::resolve(&mut doc, &mut errors);
    let cfg = deserialize_sections(&doc, &mut errors);
    // The values at these paths are stand-ins (see `Document::deserialize_at_lenient`); an
    // unknown key leaves nothing in its place.
    let broken = errors.iter().filter(|e| !e.is_unknown_key()).map(|e| e.path.clone()).collect();
    let snapshot = Compiler { doc: &doc, base: base_dir, errors: &mut errors, broken }.compile(&cfg);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
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
        if config::NOT_YET_SUPPORTED.contains(&name.as_str()) {
            errors.push(doc.error_at_key(&path, format!("`{name}` is not supported by this version of gatehouse yet")));
        } else if !config::TOP_LEVEL_KEYS.contains(&name.as_str()) {
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
    if let Some(v) = take(doc, &[key("edge")], errors) {
        cfg.edge = v;
    }
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

    /// The policy sections of one scope, with their errors.
    fn policies(&mut self, items: &[config::PolicyConfig], path: &[PathSeg]) -> crate::policy::Section {
        let mut errors = Vec::new();
        let section = build_section(items, self.doc, path, &mut errors);
        for e in errors {
            self.push(e);
        }
        section
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
        let routes = self.routes(cfg);
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
        AccessLogSpec { format, format_text: a.format.clone(), path }
    }

    fn backends(&mut self, cfg: &ConfigDoc) -> BTreeMap<String, Arc<BackendSpec>> {
        let mut out = BTreeMap::new();
        for (name, b) in &cfg.backends {
            let p = [key("backends"), key(name)];
            if let Some(spec) = self.backend(name, b, &p) {
                out.insert(name.clone(), Arc::new(spec));
            }
        }
        out
    }

    fn backend(&mut self, name: &str, b: &BackendConfig, p: &[PathSeg]) -> Option<BackendSpec> {
        let before = self.errors.len();
        if b.servers.is_empty() {
            self.err(&at(p, &[key("servers")]), "a backend needs at least one server");
        }
        let mut servers = Vec::new();
        for (i, s) in b.servers.iter().enumerate() {
            let sp = at(p, &[key("servers"), PathSeg::Index(i)]);
            if s.weight == 0 || s.weight > 1000 {
                self.err(&at(&sp, &[key("weight")]), "weight must be between 1 and 1000");
            }
            match parse_server_url(&s.url) {
                Ok((scheme, authority, base_path)) => {
                    servers.push(ServerSpec { url: s.url.clone(), scheme, authority, base_path, weight: s.weight })
                }
                Err(msg) => self.err(&at(&sp, &[key("url")]), msg),
            }
        }
        let balance = match Balance::parse(&b.balance) {
            Ok(b) => b,
            Err(msg) => {
                self.err(&at(p, &[key("balance")]), msg);
                Balance::RoundRobin
            }
        };
        let protocol = match b.protocol.as_str() {
            "http1" => Protocol::Http1,
            "http2" => Protocol::Http2,
            other => {
                self.err(&at(p, &[key("protocol")]), format!("unknown protocol `{other}` (expected http1 or http2)"));
                Protocol::Http1
            }
        };
        let health = b.health.as_ref().map(|h| {
            let hp = at(p, &[key("health")]);
            if !h.path.starts_with('/') {
                self.err(&at(&hp, &[key("path")]), "the health check path must start with /");
            }
            if h.interval.0 < Duration::from_millis(100) {
                self.err(&at(&hp, &[key("interval")]), "interval must be at least 100ms");
            }
            if h.healthy_threshold == 0 {
                self.err(&at(&hp, &[key("healthy_threshold")]), "healthy_threshold must be at least 1");
            }
            if h.unhealthy_threshold == 0 {
                self.err(&at(&hp, &[key("unhealthy_threshold")]), "unhealthy_threshold must be at least 1");
            }
            HealthSpec {
                path: h.path.clone(),
                interval: h.interval.0,
                timeout: h.timeout.0,
                healthy_threshold: h.healthy_threshold.max(1),
                unhealthy_threshold: h.unhealthy_threshold.max(1),
            }
        });
        if b.retry.attempts == 0 || b.retry.attempts > 10 {
            self.err(&at(p, &[key("retry"), key("attempts")]), "attempts must be between 1 (no retry) and 10");
        }
        let mut on_status = Vec::new();
        let mut on_connect_failure = false;
        for (i, on) in b.retry.on.iter().enumerate() {
            match on {
                RetryOn::Named(RetryCondition::ConnectFailure) => on_connect_failure = true,
                RetryOn::Status(s) if (500..600).contains(s) => on_status.push(*s),
                RetryOn::Status(s) => self.err(
                    &at(p, &[key("retry"), key("on"), PathSeg::Index(i)]),
                    format!("only 5xx statuses can be retried, not {s}"),
                ),
            }
        }
        let tls_cfg = b.tls.as_ref();
        // A stand-in value under `tls` (e.g. an empty path) would only fail again here.
        let tls_broken = self.broken(&at(p, &[key("tls")]));
        let ca = tls_cfg.and_then(|t| t.ca.as_ref()).map(|c| self.file(c));
        let client_pair = match tls_cfg.map(|t| (&t.client_cert, &t.client_key)) {
            Some((Some(c), Some(k))) => Some((self.file(c), self.file(k))),
            Some((None, None)) | None => None,
            Some(_) => {
                if !tls_broken {
                    self.err(&at(p, &[key("tls")]), "client_cert and client_key go together");
                }
                None
            }
        };
        let verify = tls_cfg.is_none_or(|t| t.verify);
        if !verify {
            tracing::warn!(
                backend = name,
                "TLS verification towards this backend is off (backends.{name}.tls.verify: false)."
            );
        }
        let uses_https = servers.iter().any(|s| s.scheme == Scheme::HTTPS);
        let options = tls::ClientTlsOptions {
            ca: if uses_https { ca.as_deref() } else { None },
            verify: verify && (uses_https || ca.is_some()),
            client_cert: client_pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            http2: protocol == Protocol::Http2,
        };
        let tls = match tls_broken {
            true => None,
            false => match tls::client_config(&options) {
                Ok(c) => Some(Arc::new(c)),
                Err(msg) => {
                    self.err(&at(p, &[key("tls")]), msg);
                    None
                }
            },
        };
        let tls_server_name = match tls_cfg.and_then(|t| t.server_name.clone()) {
            Some(n) => match rustls::pki_types::ServerName::try_from(n.clone()) {
                Ok(sn) => Some(sn),
                Err(_) => {
                    self.err(&at(p, &[key("tls"), key("server_name")]), format!("`{n}` is not a valid server name"));
                    None
                }
            },
            None => None,
        };
        let tls = tls.filter(|_| self.errors.len() == before)?;
        Some(BackendSpec {
            name: name.to_owned(),
            servers,
            balance,
            health,
            passive_failures: b.passive_health.consecutive_failures,
            ejection_time: b.passive_health.ejection_time.0,
            connect_timeout: b.timeouts.connect.0,
            response_timeout: b.timeouts.response.0,
            idle_timeout: b.timeouts.idle.0,
            retry: RetrySpec {
                attempts: b.retry.attempts.max(1),
                on_connect_failure,
                on_status,
                budget_percent: b.retry.budget_percent,
                min_per_second: b.retry.min_per_second,
            },
            protocol,
            tls,
            tls_server_name,
            preserve_host: b.preserve_host,
        })
    }

    fn routes(&mut self, cfg: &ConfigDoc) -> RouteTable {
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
            let api = Arc::new(Api { name: name.clone(), prefix: prefix.clone(), backend: a.backend.clone() });
            let api_inbound = self.policies(&a.policies.inbound, &at(&p, &[key("policies"), key("inbound")]));
            let api_chain = api_inbound.flatten(&[]);
            if a.operations.is_empty() {
                let chain = Arc::new(Chain { inbound: api_chain.clone() });
                self.check_terminal(&p, a, &chain);
                if !routable {
                    continue;
                }
                let route = Arc::new(Route { api: api.clone(), operation: None, chain });
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
                patterns.push(format!("{prefix}/{{*gatehouse_rest}}"));
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
                let op_inbound = self.policies(&op.policies.inbound, &at(&op_p, &[key("policies"), key("inbound")]));
                let chain = Arc::new(Chain { inbound: op_inbound.flatten(&api_chain) });
                if a.backend.is_none() && !chain.terminates() {
                    self.err(
                        &op_p,
                        "this operation has no backend: set the API's `backend` or answer it with `return-response`",
                    );
                }
                let Some(method) = method.filter(|_| routable && template_ok) else { continue };
                let route = Arc::new(Route { api: api.clone(), operation: Some(op.id.clone()), chain });
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
fn api_prefix(path: &str) -> Result<String, String> {
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

fn parse_server_url(url: &str) -> Result<(Scheme, http::uri::Authority, String), String> {
    let uri: Uri = url.parse().map_err(|_| format!("`{url}` is not a URL such as http://10.0.0.5:8080"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}` must not contain credentials"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query"));
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base))
}

#[cfg(test)]
mod tests {
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
