//! How many requests of one connection are being answered, and when the last one finished:
//! what the guard's idle timeout, parking and refusal ordering look at.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Waker;

use tokio::time::Instant;

/// The requests of one connection: how many are being answered, how many have finished.
///
/// `fetch_add`, `finish_at` and `load` behave as `fetch_add`, `fetch_sub` and `load` on an
/// `AtomicUsize` (a request's tail adds one when the request starts and subtracts one when its
/// response is done). A finished request
/// also wakes the guard if it is waiting for earlier responses to be complete, and restarts the
/// idle period.
#[derive(Default)]
pub struct InFlight {
    now: AtomicUsize,
    finished: AtomicUsize,
    last: parking_lot::Mutex<LastFinish>,
}

#[derive(Default)]
struct LastFinish {
    waker: Option<Waker>,
    at: Option<Instant>,
}

impl InFlight {
    pub fn fetch_add(&self, n: usize, order: Ordering) -> usize {
        self.now.fetch_add(n, order)
    }

    /// `fetch_sub`, with the caller's clock reading of when the requests finished (the idle
    /// period starts there).
    pub fn finish_at(&self, n: usize, order: Ordering, at: std::time::Instant) -> usize {
        let before = self.now.fetch_sub(n, order);
        self.finished.fetch_add(n, Ordering::AcqRel);
        let waker = {
            let mut last = self.last.lock();
            last.at = Some(Instant::from_std(at));
            last.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        before
    }

    pub fn load(&self, order: Ordering) -> usize {
        self.now.load(order)
    }

    /// Requests whose response is complete, since the connection opened.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Acquire)
    }

    pub(super) fn wake_on_finish(&self, waker: &Waker) {
        let mut last = self.last.lock();
        if !last.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            last.waker = Some(waker.clone());
        }
    }

    pub(super) fn last_finish(&self) -> Option<Instant> {
        self.last.lock().at
    }
}
