//! `telemetry.analytics:` — typed config and its validation.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Document, PathSeg};

/// `telemetry.analytics:` per-minute aggregates (see the module docs of `observe::analytics`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Default `true`. Without `store:` the aggregates are kept in memory only (the last 24
    /// hours, capped), with a store they are written to it.
    pub enabled: Option<bool>,
    /// How often finished minutes are written to the store. Default `10s`.
    pub flush_interval: Option<crate::config::Duration>,
    /// How long rows stay in the store. Default `30d`.
    pub retention: Option<crate::config::Duration>,
    /// This gateway's name in the rows it writes, so several nodes can share one PostgreSQL.
    /// Default: the host name.
    pub node: Option<String>,
}

/// `telemetry.analytics:` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyticsSpec {
    pub enabled: bool,
    pub flush_interval: Duration,
    pub retention: Duration,
    pub node: String,
}

pub const DEFAULT_FLUSH: Duration = Duration::from_secs(10);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 86_400);

impl Default for AnalyticsSpec {
    fn default() -> Self {
        AnalyticsSpec { enabled: true, flush_interval: DEFAULT_FLUSH, retention: DEFAULT_RETENTION, node: host_name() }
    }
}

/// The machine's host name (Linux), else `gatehouse`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "gatehouse".into())
}

fn at(k: &str) -> Vec<PathSeg> {
    ["telemetry", "analytics", k].iter().map(|k| PathSeg::Key((*k).to_owned())).collect()
}

/// Validates `telemetry.analytics:`; errors carry their YAML location.
pub fn compile(cfg: &AnalyticsConfig, doc: &Document, errors: &mut Vec<ConfigError>) -> AnalyticsSpec {
    let flush_interval = cfg.flush_interval.map_or(DEFAULT_FLUSH, |d| d.0);
    if flush_interval < Duration::from_millis(100) || flush_interval > Duration::from_secs(3600) {
        errors.push(doc.error(&at("flush_interval"), "flush_interval must be between 100ms and 1h"));
    }
    let retention = cfg.retention.map_or(DEFAULT_RETENTION, |d| d.0);
    if retention < Duration::from_secs(60) {
        errors.push(doc.error(&at("retention"), "retention must be at least 1m (the aggregates are per minute)"));
    }
    let node = match &cfg.node {
        Some(n) if n.is_empty() || n.len() > 128 || n.chars().any(char::is_control) => {
            errors.push(doc.error(&at("node"), "node must be 1 to 128 printable characters"));
            String::new()
        }
        Some(n) => n.clone(),
        None => host_name(),
    };
    AnalyticsSpec { enabled: cfg.enabled.unwrap_or(true), flush_interval, retention, node }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    fn compile(analytics: &str) -> Result<super::AnalyticsSpec, Vec<crate::config::ConfigError>> {
        let yaml =
            format!("listeners: [ {{ name: main, bind: \"127.0.0.1:0\" }} ]\ntelemetry:\n  analytics: {analytics}\n");
        crate::snapshot::compile_str("gw.yaml", &yaml, std::path::Path::new(".")).map(|s| s.telemetry.analytics)
    }

    #[test]
    fn defaults_and_values() {
        let a = &compile("{}").expect("valid");
        assert!(a.enabled);
        assert_eq!((a.flush_interval, a.retention), (super::DEFAULT_FLUSH, super::DEFAULT_RETENTION));
        assert!(!a.node.is_empty());
        let a = &compile("{ enabled: false, flush_interval: 250ms, retention: 2h, node: gw-1 }").expect("valid");
        assert!(!a.enabled);
        assert_eq!((a.flush_interval, a.retention), (Duration::from_millis(250), Duration::from_secs(7200)));
        assert_eq!(a.node, "gw-1");
    }

    #[test]
    fn errors_are_located() {
        let errors = compile("{ flush_interval: 10ms, retention: 30s, node: \"\" }").expect_err("invalid");
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 3, "{text:?}");
        assert!(text[0].starts_with("gw.yaml:3:") && text[0].contains("flush_interval"), "{text:?}");
        assert!(text[1].contains("telemetry.analytics.retention") && text[1].contains("at least 1m"), "{text:?}");
        assert!(text[2].contains("node"), "{text:?}");
        let unknown = compile("{ flush: 1s }").expect_err("unknown key");
        assert!(unknown[0].to_string().contains("flush"), "{unknown:?}");
    }
}
