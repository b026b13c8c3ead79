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

/// The end of one request: releases the connection's in-flight count, writes the log line and
/// records metrics and analytics.
pub struct RequestTail {
    shared: Arc<ConnShared>,
    /// Everything recorded when the body ends, in one allocation for all of them.
    done: Option<Box<Done>>,
    pub bytes_sent: u64,
}

/// What a request leaves to do when its body ends.
struct Done {
    log: Option<PendingLog>,
    observed: Option<telemetry::Pending>,
    /// Policies waiting for the response size, with the final status.
    sent_hooks: Option<(u16, Vec<crate::policy::SentHook>)>,
}

struct PendingLog {
    log: AccessLog,
    record: LogRecord,
    /// When the request arrived: the line's duration counts from it.
    started: Instant,
    /// The response was made; a request dropped before that (the client gone early) writes
    /// no line.
    made: bool,
}

impl RequestTail {
    pub fn new(shared: Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestTail { shared, done: None, bytes_sent: 0 }
    }

    fn done(&mut self) -> &mut Done {
        self.done.get_or_insert_with(|| Box::new(Done { log: None, observed: None, sent_hooks: None }))
    }

    /// Begins the access-log record: returns it (empty) to fill with what is known before the
    /// request is consumed; the proxy completes it through [`RequestTail::finish_log`] once the
    /// response is made. `started` is when the request arrived (the duration counts from it).
    /// The record is filled where it will stay, in the tail's one allocation: it is large.
    pub fn begin_log(&mut self, log: AccessLog, started: Instant) -> &mut LogRecord {
        let done = self.done();
        &mut done.log.insert(PendingLog { log, record: LogRecord::default(), started, made: false }).record
    }

    /// The response is made: returns the record begun by [`RequestTail::begin_log`] to
    /// complete. Its line is written when the body ends (then with the bytes sent and the
    /// duration).
    pub fn finish_log(&mut self) -> Option<&mut LogRecord> {
        let pending = self.done.as_mut()?.log.as_mut()?;
        pending.made = true;
        Some(&mut pending.record)
    }

    /// Callbacks that need the bytes actually sent (bandwidth quotas), run when the body ends.
    pub fn on_sent(&mut self, status: u16, hooks: Vec<crate::policy::SentHook>) {
        self.done().sent_hooks = Some((status, hooks));
    }

    /// Metrics, traces and analytics of this request, recorded when the body ends.
    pub(crate) fn observe_with(&mut self, pending: telemetry::Pending) {
        self.done().observed = Some(pending);
    }
}

impl Drop for RequestTail {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        // Worked on in place: the record is large, and moving it out of the box costs a copy.
        let Some(mut done) = self.done.take() else { return };
        let log = done.log.as_mut().filter(|l| l.made);
        // One clock read for the log and the metrics.
        let now = (log.is_some() || done.observed.is_some()).then(Instant::now);
        if let (Some(l), Some(now)) = (log, now) {
            l.record.bytes_sent = self.bytes_sent;
            l.record.duration = now.saturating_duration_since(l.started);
            l.log.log(&l.record);
        }
        if let (Some(p), Some(now)) = (done.observed.as_mut(), now) {
            p.done(self.bytes_sent, now);
        }
        if let Some((status, hooks)) = done.sent_hooks.take() {
            for hook in hooks {
                hook(status, self.bytes_sent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::access_log::{AccessLog, LogFormat, LogTarget};
    use super::*;

    #[tokio::test]
    async fn a_record_is_written_only_once_its_response_was_made() {
        let path = std::env::temp_dir().join(format!("tail-{}-{:?}.log", std::process::id(), Instant::now()));
        let log = AccessLog::start(LogFormat::parse("%U %>s %B").expect("format"), LogTarget::File(path.clone()))
            .expect("start");
        let shared = Arc::new(ConnShared::default());

        // Dropped before its response was made (the client went away): no line.
        let mut tail = RequestTail::new(shared.clone());
        tail.begin_log(log.clone(), Instant::now()).head.set_path("/gone");
        drop(tail);

        let mut tail = RequestTail::new(shared.clone());
        tail.begin_log(log.clone(), Instant::now()).head.set_path("/made");
        tail.finish_log().expect("begun").status = 200;
        tail.bytes_sent = 42;
        drop(tail);
        // Without a begun record there is nothing to finish.
        assert!(RequestTail::new(shared.clone()).finish_log().is_none());

        log.flush().await;
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(text, "/made 200 42\n");
        assert_eq!(shared.in_flight.load(Ordering::Acquire), 0);
    }
}
