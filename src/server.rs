//! The running gateway: the active snapshot, its listeners and admin API, reload and shutdown.
//!
//! Start-up is a reload from nothing: both compile a snapshot (the same function `check` uses),
//! build its runtime ([`Active`]: backends, access log, connection settings), open any new
//! listeners, swap the snapshot in atomically and close listeners that are gone after draining
//! them. An invalid config changes nothing: the old snapshot keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use http::HeaderName;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::admin::RunningAdmin;
use crate::config::ConfigError;
use crate::edge::guard::RejectHook;
use crate::listener::{self, RunningListener};
use crate::observe::access_log::{AccessLog, LogFormat, LogRecord, LogTarget};
use crate::observe::analytics::writer::AnalyticsTask;
use crate::observe::telemetry::{Observe, Telemetry};
use crate::snapshot::{self, Snapshot};
use crate::upstream::{HealthRegistry, Upstreams};

/// A snapshot with its runtime. Requests hold an `Arc<Active>` for their whole life.
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub generation: u64,
    pub upstreams: Upstreams,
    pub access_log: Option<AccessLog>,
    /// Headers the access-log format prints, copied per request (only these).
    pub log_request_headers: Vec<HeaderName>,
    pub log_response_headers: Vec<HeaderName>,
    pub http: Arc<listener::HttpBuilders>,
    pub observe: Arc<Observe>,
}

impl Active {
    /// Logs and counts rejections made by the framing guard, which happen before any request
    /// exists.
    pub fn reject_hook(&self, peer: SocketAddr, local_port: u16) -> Option<RejectHook> {
        if self.access_log.is_none() && !self.observe.active() {
            return None;
        }
        let log = self.access_log.clone();
        let observe = self.observe.clone();
        let client_ip = crate::edge::canonical(peer.ip());
        Some(Arc::new(move |problem: &crate::respond::Problem, request_id: &str| {
            observe.record_refusal(problem.status.as_u16(), problem.layer, 0);
            let Some(log) = &log else { return };
            let mut record = LogRecord {
                client_ip,
                peer_port: peer.port(),
                local_port,
                time: SystemTime::now(),
                method: http::Method::from_bytes(b"-").unwrap_or(http::Method::GET),
                status: problem.status.as_u16(),
                layer: Some(problem.layer.as_str()),
                ..LogRecord::default()
            };
            record.head.set_path("-");
            record.head.set_request_id(request_id);
            log.log(&record);
        }))
    }
}

/// Why a start or reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config has {} error(s)", .0.len())]
    Invalid(Vec<ConfigError>),
    #[error("cannot listen on {bind} (listener `{name}`): {source}")]
    Bind { name: String, bind: String, source: std::io::Error },
    #[error("cannot open the access log {path}: {source}")]
    AccessLog { path: String, source: std::io::Error },
    #[error("TLS setup failed for listener `{name}`: {message}")]
    Tls { name: String, message: String },
    #[error("cannot open the store: {0}")]
    Store(String),
}

pub struct Gateway {
    config_path: Option<PathBuf>,
    active: ArcSwap<Active>,
    health: Arc<HealthRegistry>,
    telemetry: Arc<Telemetry>,
    listeners: Mutex<Vec<RunningListener>>,
    admin: Mutex<Option<RunningAdmin>>,
    ready: AtomicBool,
    generation: AtomicU64,
    conn_limit: Arc<Semaphore>,
    reload_lock: Mutex<()>,
    pub shutdown: CancellationToken,
    /// The store opened at start (subscriptions); a changed `store:` takes a restart.
    store: std::sync::OnceLock<crate::store::Store>,
    /// Writes analytics to the store (or trims them in memory); stopped last on shutdown.
    analytics: parking_lot::Mutex<Option<AnalyticsTask>>,
}

impl Gateway {
    /// Starts serving `snapshot`. `config_path` is what reloads re-read.
    pub async fn start(snapshot: Snapshot, config_path: Option<PathBuf>) -> Result<Arc<Gateway>, ReloadError> {
        let health = Arc::new(HealthRegistry::default());
        let conn_limit = Arc::new(Semaphore::new(snapshot.edge.max_connections));
        let telemetry = Arc::new(Telemetry::default());
        let active = build_active(Arc::new(snapshot), 1, &health, &telemetry, None)?;
        let gw = Arc::new(Gateway {
            config_path,
            active: ArcSwap::from_pointee(active),
            health,
            telemetry,
            listeners: Mutex::new(Vec::new()),
            admin: Mutex::new(None),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            conn_limit,
            reload_lock: Mutex::new(()),
            shutdown: CancellationToken::new(),
            store: std::sync::OnceLock::new(),
            analytics: parking_lot::Mutex::new(None),
        });
        let snap = gw.active().snapshot.clone();
        // Providers compiled before the runtime existed start fetching their keys now.
        snap.env.identity.start();
        if let Some(cfg) = &snap.store {
            // Subscriptions are loaded before the first request, so no valid key is refused.
            let base = gw.config_path.as_deref().and_then(|p| p.parent()).unwrap_or(std::path::Path::new("."));
            let store = crate::store::Store::open(cfg, base).await.map_err(|e| ReloadError::Store(e.to_string()))?;
            snap.env
                .subscriptions
                .attach(&store, cfg.poll_interval.0, gw.shutdown.child_token())
                .await
                .map_err(|e| ReloadError::Store(e.to_string()))?;
            // In-process quota counters are kept in the store across restarts.
            snap.env.limits.set_persistence(Arc::new(store.clone()));
            let _ = gw.store.set(store);
        }
        *gw.analytics.lock() =
            Some(AnalyticsTask::start(Arc::downgrade(&gw), gw.telemetry.clone(), gw.store().cloned()));
        gw.apply_listeners(&snap).await?;
        gw.ready.store(true, Ordering::Release);
        tracing::info!(generation = 1, routes = snap.routes.len(), "Gatehouse is serving.");
        Ok(gw)
    }

    /// The snapshot in force now.
    pub fn active(&self) -> Arc<Active> {
        self.active.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Where listener `name` is bound (tests bind port 0 and ask).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.lock().await.iter().find(|l| l.name == name).map(|l| l.local_addr)
    }

    /// The store, when the config has one (admin API, subscriptions).
    pub fn store(&self) -> Option<&crate::store::Store> {
        self.store.get()
    }

    pub async fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.lock().await.as_ref().map(|a| a.local_addr)
    }

    /// Re-reads the config file and swaps it in; on error the old config keeps serving.
    pub async fn reload(self: &Arc<Self>) -> Result<u64, ReloadError> {
        let Some(path) = self.config_path.clone() else {
            return Err(ReloadError::Invalid(vec![ConfigError {
                file: "-".into(),
                line: 0,
                col: 0,
                path: String::new(),
                message: "this gateway was started without a config file".into(),
            }]));
        };
        // Same policy services as the running snapshot: counters and caches survive the reload.
        let env = self.active.load().snapshot.env.clone();
        let compiled = tokio::task::spawn_blocking(move || snapshot::compile_file_in(&path, &env)).await;
        let snapshot = match compiled {
            Ok(Ok(s)) => s,
            Ok(Err(errors)) => return Err(ReloadError::Invalid(errors)),
            Err(e) => {
                return Err(ReloadError::Invalid(vec![ConfigError {
                    file: "-".into(),
                    line: 0,
                    col: 0,
                    path: String::new(),
                    message: format!("the config compiler failed: {e}"),
                }]))
            }
        };
        self.swap(snapshot).await
    }

    /// Activates an already compiled snapshot (reload's second half; also used by tests).
    pub async fn swap(self: &Arc<Self>, snapshot: Snapshot) -> Result<u64, ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let generation = self.generation.load(Ordering::Acquire) + 1;
        let previous = self.active();
        let snapshot = Arc::new(snapshot);
        let active = build_active(snapshot.clone(), generation, &self.health, &self.telemetry, Some(&previous))?;
        // Open new listeners before the swap so a bind failure changes nothing.
        let opened = self.open_new_listeners(&snapshot).await?;
        let extra = snapshot.edge.max_connections as i64 - previous.snapshot.edge.max_connections as i64;
        if extra > 0 {
            self.conn_limit.add_permits(extra as usize);
        } else if extra < 0 {
            self.conn_limit.forget_permits((-extra) as usize);
        }
        self.active.store(Arc::new(active));
        self.generation.store(generation, Ordering::Release);
        self.finish_listeners(&snapshot, opened).await;
        self.apply_admin(&snapshot).await.ok();
        tracing::info!(generation, routes = snapshot.routes.len(), "Config reloaded.");
        Ok(generation)
    }

    async fn apply_listeners(self: &Arc<Self>, snap: &Arc<Snapshot>) -> Result<(), ReloadError> {
        let opened = self.open_new_listeners(snap).await?;
        self.finish_listeners(snap, opened).await;
        self.apply_admin(snap).await
    }

    /// Binds the listeners `snap` has and the running set lacks.
    async fn open_new_listeners(self: &Arc<Self>, snap: &Snapshot) -> Result<Vec<RunningListener>, ReloadError> {
        let running = self.listeners.lock().await;
        let mut opened = Vec::new();
        for spec in &snap.listeners {
            if running.iter().any(|l| l.name == spec.name && l.bind == spec.bind) {
                continue;
            }
            let tls = match &spec.tls {
                Some(certs) => Some(
                    listener::tls::server_config(certs.clone())
                        .map_err(|e| ReloadError::Tls { name: spec.name.clone(), message: e.to_string() })?,
                ),
                None => None,
            };
            let bound = match tokio::net::TcpListener::bind(spec.addr).await {
                Ok(l) => l,
                Err(source) => {
                    for l in opened {
                        RunningListener::stop(l).await;
                    }
                    return Err(ReloadError::Bind { name: spec.name.clone(), bind: spec.bind.clone(), source });
                }
            };
            let l = RunningListener::start(
                self.clone(),
                spec.name.clone(),
                spec.bind.clone(),
                bound,
                tls,
                self.conn_limit.clone(),
            )
            .map_err(|source| ReloadError::Bind {
                name: spec.name.clone(),
                bind: spec.bind.clone(),
                source,
            })?;
            tracing::info!(listener = %spec.name, addr = %l.local_addr, tls = spec.tls.is_some(), "Listening.");
            opened.push(l);
        }
        Ok(opened)
    }

    /// Adds the opened listeners, refreshes TLS of kept ones, and drains removed ones.
    async fn finish_listeners(&self, snap: &Snapshot, opened: Vec<RunningListener>) {
        let mut running = self.listeners.lock().await;
        let mut kept = Vec::new();
        let mut removed = Vec::new();
        for l in running.drain(..) {
            match snap.listeners.iter().find(|s| s.name == l.name && s.bind == l.bind) {
                Some(spec) => {
                    let tls = spec.tls.as_ref().and_then(|c| listener::tls::server_config(c.clone()).ok());
                    l.tls.store(tls);
                    kept.push(l);
                }
                None => removed.push(l),
            }
        }
        kept.extend(opened);
        *running = kept;
        drop(running);
        for l in removed {
            tracing::info!(listener = %l.name, "Listener removed; draining its connections.");
            tokio::spawn(l.stop());
        }
    }

    async fn apply_admin(self: &Arc<Self>, snap: &Snapshot) -> Result<(), ReloadError> {
        let mut admin = self.admin.lock().await;
        let wanted = snap.admin.as_ref().map(|a| a.bind.clone());
        let current = admin.as_ref().map(|a| a.bind.clone());
        if wanted == current {
            return Ok(());
        }
        if let Some(old) = admin.take() {
            old.stop().await;
        }
        if let Some(spec) = &snap.admin {
            let l = tokio::net::TcpListener::bind(spec.addr).await.map_err(|source| ReloadError::Bind {
                name: "admin".into(),
                bind: spec.bind.clone(),
                source,
            })?;
            *admin =
                Some(RunningAdmin::start(self.clone(), spec.bind.clone(), l).map_err(|source| ReloadError::Bind {
                    name: "admin".into(),
                    bind: spec.bind.clone(),
                    source,
                })?);
        }
        Ok(())
    }

    /// SIGUSR1: the access log file is reopened (logrotate).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.active().access_log {
            log.reopen();
        }
    }

    /// Stops accepting, drains in-flight requests up to the grace period, flushes the log.
    pub async fn shutdown(&self) {
        self.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
        let listeners: Vec<RunningListener> = self.listeners.lock().await.drain(..).collect();
        futures_util::future::join_all(listeners.into_iter().map(RunningListener::stop)).await;
        if let Some(admin) = self.admin.lock().await.take() {
            admin.stop().await;
        }
        if let Some(log) = &self.active().access_log {
            log.flush().await;
        }
        // Every request has ended: the analytics of all of them, the current minute's too.
        let analytics = self.analytics.lock().take();
        if let Some(task) = analytics {
            task.stop().await;
        }
        // Quota counters not yet saved (they are flushed every few seconds otherwise).
        self.active().snapshot.env.limits.get().flush().await;
    }
}

fn build_active(
    snapshot: Arc<Snapshot>,
    generation: u64,
    health: &Arc<HealthRegistry>,
    telemetry: &Arc<Telemetry>,
    previous: Option<&Arc<Active>>,
) -> Result<Active, ReloadError> {
    let spec = &snapshot.access_log;
    let access_log = match &spec.format {
        None => None,
        Some(format) => {
            let reusable = previous.filter(|p| {
                p.snapshot.access_log.format_text == spec.format_text && p.snapshot.access_log.path == spec.path
            });
            match reusable.and_then(|p| p.access_log.clone()) {
                Some(log) => Some(log),
                None => {
                    let target = if spec.path == "stdout" {
                        LogTarget::Stdout
                    } else {
                        LogTarget::File(PathBuf::from(&spec.path))
                    };
                    Some(
                        AccessLog::start((**format).clone(), target)
                            .map_err(|source| ReloadError::AccessLog { path: spec.path.clone(), source })?,
                    )
                }
            }
        }
    };
    let (log_request_headers, log_response_headers) = spec.format.as_ref().map(|f| headers_used(f)).unwrap_or_default();
    let upstreams = Upstreams::start(&snapshot.backends, health, previous.map(|p| &p.upstreams));
    let http = Arc::new(listener::http_builder(&snapshot));
    let observe = Arc::new(Observe::build(&snapshot.telemetry, telemetry, previous.map(|p| &*p.observe)));
    Ok(Active { snapshot, generation, upstreams, access_log, log_request_headers, log_response_headers, http, observe })
}

fn headers_used(f: &LogFormat) -> (Vec<HeaderName>, Vec<HeaderName>) {
    f.headers_used()
}
