//! Logs, metrics, traces and analytics of finished requests.
//!
//! The request path fills a [`RequestTail`] and hangs it on the response body; when the body is
//! dropped — the last byte sent or the client gone — the tail writes the access log line. So a
//! streamed response is logged with its real size and duration, off the request's critical path.

pub mod access_log;
pub mod admin;
pub mod analytics;
pub mod dashboard;
pub mod metrics;
pub mod recent;
pub mod telemetry;
pub mod timing;
pub mod trace;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::edge::guard::ConnShared;
use access_log::{AccessLog, LogRecord};

/// The end of one request: releases the connection's in-flight count and writes the log line.
pub struct RequestTail {
    shared: Arc<ConnShared>,
    pending: Option<Box<(AccessLog, LogRecord, Instant)>>,
    observed: Option<Box<telemetry::Pending>>,
    /// Policies waiting for the response size, with the final status.
    sent_hooks: Option<Box<(u16, Vec<crate::policy::SentHook>)>>,
    pub bytes_sent: u64,
}

impl RequestTail {
    pub fn new(shared: Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestTail { shared, pending: None, observed: None, sent_hooks: None, bytes_sent: 0 }
    }

    pub fn log_with(&mut self, log: AccessLog, record: LogRecord, started: Instant) {
        self.pending = Some(Box::new((log, record, started)));
    }

    /// Callbacks that need the bytes actually sent (bandwidth quotas), run when the body ends.
    pub fn on_sent(&mut self, status: u16, hooks: Vec<crate::policy::SentHook>) {
        self.sent_hooks = Some(Box::new((status, hooks)));
    }

    /// Metrics, traces and analytics of this request, recorded when the body ends.
    pub fn observe_with(&mut self, pending: Box<telemetry::Pending>) {
        self.observed = Some(pending);
    }
}

impl Drop for RequestTail {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(p) = self.pending.take() {
            let (log, mut record, started) = *p;
            record.bytes_sent = self.bytes_sent;
            record.duration = started.elapsed();
            log.log(&record);
        }
        if let Some(p) = self.observed.take() {
            p.done(self.bytes_sent);
        }
        if let Some(hooks) = self.sent_hooks.take() {
            let (status, hooks) = *hooks;
            for hook in hooks {
                hook(status, self.bytes_sent);
            }
        }
    }
}
