//! Logs, metrics, traces and analytics of finished requests.
//!
//! The request path fills a [`RequestTail`] and hangs it on the response body; when the body is
//! dropped — the last byte sent or the client gone — the tail writes the access log line. So a
//! streamed response is logged with its real size and duration, off the request's critical path.

pub mod access_log;
pub mod admin;
pub mod analytics;
pub mod clock;
pub mod dashboard;
pub mod metrics;
pub mod recent;
pub mod telemetry;
pub mod timing;
pub mod trace;

use std::cell::RefCell;
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

/// What a request leaves to do when its body ends. Reused: a finished one is emptied and kept
/// in its thread's [`SPARE`] list for a later request, so a request usually neither allocates
/// it nor builds its (large) log record and moves it in, and the record's head text keeps its
/// buffer.
struct Done {
    /// The access log, once [`RequestTail::begin_log`] began `record`.
    log: Option<AccessLog>,
    /// Empty (the default) unless begun.
    record: LogRecord,
    /// When the request arrived: the line's duration counts from it. Set with `log`.
    started: Option<Instant>,
    /// The response was made; a request dropped before that (the client gone early) writes
    /// no line.
    made: bool,
    observed: Option<telemetry::Pending>,
    /// What `observed` records; emptied (the default) unless `observed` is set.
    facts: metrics::RequestFacts,
    /// Policies waiting for the response size, with the final status.
    sent_hooks: Option<(u16, Vec<crate::policy::SentHook>)>,
}

/// Emptied [`Done`]s a thread keeps for reuse; beyond this many they are freed.
const SPARE_MAX: usize = 256;

thread_local! {
    // Boxes, not the values: a request takes one over as it is, without moving the record.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Done>>> = const { RefCell::new(Vec::new()) };
}

impl Done {
    /// A spare one of this thread, else a new one.
    fn take() -> Box<Done> {
        let spare = SPARE.try_with(|s| s.try_borrow_mut().ok()?.pop()).ok().flatten();
        spare.unwrap_or_else(|| {
            Box::new(Done {
                log: None,
                record: LogRecord::default(),
                started: None,
                made: false,
                observed: None,
                facts: metrics::RequestFacts::default(),
                sent_hooks: None,
            })
        })
    }

    /// Empties `done` (dropping what it shares now, not when reused: a pooled record must not
    /// keep a reloaded-away route alive) and keeps it for reuse.
    fn give_back(mut done: Box<Done>) {
        if done.log.take().is_some() {
            done.record.reset();
        }
        done.started = None;
        done.made = false;
        if done.observed.take().is_some() {
            done.facts.reset();
        }
        done.sent_hooks = None;
        let _ = SPARE.try_with(|s| {
            if let Ok(mut spare) = s.try_borrow_mut() {
                if spare.len() < SPARE_MAX {
                    spare.push(done);
                }
            }
        });
    }
}

impl RequestTail {
    pub fn new(shared: Arc<ConnShared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestTail { shared, done: None, bytes_sent: 0 }
    }

    fn done(&mut self) -> &mut Done {
        self.done.get_or_insert_with(Done::take)
    }

    /// Begins the access-log record: returns it (empty) to fill with what is known before the
    /// request is consumed; the proxy completes it through [`RequestTail::finish_log`] once the
    /// response is made. `started` is when the request arrived (the duration counts from it).
    /// The record is filled where it will stay, in the tail's one allocation: it is large.
    pub fn begin_log(&mut self, log: AccessLog, started: Instant) -> &mut LogRecord {
        let done = self.done();
        if done.log.replace(log).is_some() {
            done.record.reset();
        }
        done.started = Some(started);
        done.made = false;
        &mut done.record
    }

    /// The response is made: returns the record begun by [`RequestTail::begin_log`] to
    /// complete. Its line is written when the body ends (then with the bytes sent and the
    /// duration).
    pub fn finish_log(&mut self) -> Option<&mut LogRecord> {
        let done = self.done.as_mut().filter(|d| d.log.is_some())?;
        done.made = true;
        Some(&mut done.record)
    }

    /// Callbacks that need the bytes actually sent (bandwidth quotas), run when the body ends.
    pub fn on_sent(&mut self, status: u16, hooks: Vec<crate::policy::SentHook>) {
        self.done().sent_hooks = Some((status, hooks));
    }

    /// Metrics, traces and analytics of this request, recorded when the body ends: returns
    /// the (empty) facts to fill in place.
    pub(crate) fn observe_with(&mut self, pending: telemetry::Pending) -> &mut metrics::RequestFacts {
        let done = self.done();
        if done.observed.replace(pending).is_some() {
            done.facts.reset();
        }
        &mut done.facts
    }
}

impl Drop for RequestTail {
    fn drop(&mut self) {
        // One clock read for the connection's idle period, the log and the metrics, and one
        // duration when the last two count from the same instant (they do: the proxy passes
        // its `started` to both).
        let at = Instant::now();
        self.shared.in_flight.finish_at(1, Ordering::AcqRel, at);
        // Worked on in place: the record is large, and moving it out of the box costs a copy.
        let Some(mut done) = self.done.take() else { return };
        let d = &mut *done;
        let log = d.log.as_ref().filter(|_| d.made);
        let now = (log.is_some() || d.observed.is_some()).then_some(at);
        let mut since = None;
        if let (Some(log), Some(now)) = (log, now) {
            let started = d.started.unwrap_or(now);
            let duration = now.saturating_duration_since(started);
            since = Some((started, duration));
            d.record.bytes_sent = self.bytes_sent;
            d.record.duration = duration;
            log.log(&d.record);
        }
        if let (Some(p), Some(now)) = (d.observed.as_ref(), now) {
            let duration = match since {
                Some((started, duration)) if started == p.started() => duration,
                _ => now.saturating_duration_since(p.started()),
            };
            p.done(&mut d.facts, self.bytes_sent, duration, now);
        }
        if let Some((status, hooks)) = d.sent_hooks.take() {
            for hook in hooks {
                hook(status, self.bytes_sent);
            }
        }
        Done::give_back(done);
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

    #[tokio::test]
    async fn a_reused_record_carries_nothing_of_the_last_request() {
        let path = std::env::temp_dir().join(format!("tail-reuse-{}-{:?}.log", std::process::id(), Instant::now()));
        let log =
            AccessLog::start(LogFormat::parse("%U %q %u %>s %{X-A}i").expect("format"), LogTarget::File(path.clone()))
                .expect("start");
        let shared = Arc::new(ConnShared::default());
        let name = http::HeaderName::from_static("x-a");

        let mut tail = RequestTail::new(shared.clone());
        let record = tail.begin_log(log.clone(), Instant::now());
        record.head.set_path("/first");
        record.head.set_query(Some("a=1"));
        record.head.add_header(false, &name, b"one");
        record.user = Some("alice".into());
        tail.finish_log().expect("begun").status = 200;
        drop(tail);

        // On the same thread, so it gets the first request's emptied record.
        let mut tail = RequestTail::new(shared.clone());
        tail.begin_log(log.clone(), Instant::now());
        tail.finish_log().expect("begun").status = 404;
        drop(tail);

        log.flush().await;
        let text = std::fs::read_to_string(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(text, "/first ?a=1 alice 200 one\n/  - 404 -\n");
    }
}
