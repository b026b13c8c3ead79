//! Wall-clock seconds read from the monotonic clock.
//!
//! What observability keys by second (the dashboard's second, the analytics' minute, the
//! access log's `%t`) needs the wall clock only to the second, while the request path reads the
//! monotonic clock anyway (durations). So each thread keeps the monotonic span of the last
//! wall-clock second it read and names the second of an instant in that span by comparison,
//! reading the wall clock again once an instant falls outside it: at most one wall-clock read
//! per thread and second instead of one or two per request. A step of the wall clock (NTP, an
//! operator) shows within a second, when the span has run out.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One wall-clock second as a span of the monotonic clock.
#[derive(Clone, Copy)]
struct Second {
    from: Instant,
    until: Instant,
    /// Its Unix seconds.
    unix: u64,
}

thread_local! {
    static LAST: Cell<Option<Second>> = const { Cell::new(None) };
}

/// The Unix second (UTC) that `at`, a reading of the monotonic clock no later than now, falls in.
pub fn unix_second(at: Instant) -> u64 {
    if let Ok(Some(s)) = LAST.try_with(Cell::get) {
        if s.from <= at && at < s.until {
            return s.unix;
        }
    }
    read(at)
}

/// The start of [`unix_second`] as a time: what the access log's `%t` prints of `at`.
pub fn second_of(at: Instant) -> SystemTime {
    UNIX_EPOCH.checked_add(Duration::from_secs(unix_second(at))).unwrap_or(UNIX_EPOCH)
}

/// Reads both clocks, keeps the second they are in and names the one of `at`.
#[cold]
fn read(at: Instant) -> u64 {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let second = now
        .checked_sub(Duration::from_nanos(wall.subsec_nanos().into()))
        .and_then(|from| Some(Second { from, until: from.checked_add(Duration::from_secs(1))?, unix: wall.as_secs() }));
    if let Some(second) = second {
        let _ = LAST.try_with(|c| c.set(Some(second)));
    }
    // `at` is usually within the second just read, else just before it.
    wall.saturating_sub(now.saturating_duration_since(at)).as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall_s() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    #[test]
    fn seconds_follow_the_wall_clock() {
        for _ in 0..3 {
            let before = wall_s();
            let s = unix_second(Instant::now());
            let after = wall_s();
            assert!((before..=after).contains(&s), "{before} <= {s} <= {after}");
            // A second time from the thread's span, the same answer.
            let at = Instant::now();
            let (b, s, a) = (wall_s(), unix_second(at), wall_s());
            assert!((b.saturating_sub(1)..=a).contains(&s), "{b} <= {s} <= {a}");
            std::thread::sleep(Duration::from_millis(400));
        }
        let at = Instant::now();
        assert_eq!(second_of(at), UNIX_EPOCH + Duration::from_secs(unix_second(at)));
    }

    #[test]
    fn an_instant_before_the_span_gets_its_own_second() {
        let old = Instant::now();
        std::thread::sleep(Duration::from_millis(1100));
        let now = unix_second(Instant::now());
        // `old` lies before the span just read: it is named by reading the clocks again.
        let then = unix_second(old);
        assert!(now - then >= 1 && now - then <= 2, "{then} {now}");
    }
}
