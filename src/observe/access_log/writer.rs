//! The hand-off from the request threads to the writer thread, and the writer.
//!
//! Every thread that logs formats its lines straight into a buffer of its own (a [`Slot`],
//! registered with the log), under the slot's lock, which only the writer ever takes besides,
//! and only to swap the buffer out. So a line costs no message, no allocation and no copy: the
//! writer takes whole buffers. A thread wakes the writer only when its slot goes from empty to
//! non-empty, and the writer lets lines gather for [`BATCH_WINDOW`] after each round, so the
//! request path makes about one channel send per thread and window, and a line reaches the
//! file within about that window.
//!
//! Reopening (logrotate) is ordered by an epoch: `reopen` bumps it, each line is tagged with the
//! epoch it was logged in (a cut in its slot's buffer where the epoch changes), and the writer
//! writes the lines of an epoch before it reopens for the next. A round takes only the lines of
//! the epochs up to the one it read as it began, so a line logged before a reopen never lands
//! after it, whichever thread logged it.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::LogTarget;

/// How long the writer lets lines gather after a round: bounds how late a line is written
/// (nginx's buffered log waits seconds; 10 ms keeps a tail -f live), saves the request path a
/// wake-up per line, and makes a round's fixed cost (wake, take, write and flush syscalls)
/// small per line even under light load.
const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Size of the writer's `BufWriter`.
const WRITE_BUFFER: usize = 64 * 1024;
/// A buffer that a burst grew beyond this is given back rather than kept for reuse.
const BUFFER_KEEP: usize = 256 * 1024;
/// Logs a thread keeps its slots of (more only when access logs are replaced faster than
/// threads log; an evicted slot stays registered, so nothing is lost).
const THREAD_SLOTS: usize = 8;

/// What wakes the writer.
pub(super) enum Msg {
    /// Lines are waiting (a slot became non-empty), or a reopen was asked for.
    Wake,
    Flush(oneshot::Sender<()>),
}

/// State shared by the handles and the writer thread.
#[derive(Debug)]
pub(super) struct Shared {
    /// Tells this log's slots apart in a thread's list (an address could be reused).
    id: u64,
    /// Lines a slot holds before further lines are dropped.
    capacity: usize,
    /// Reopens asked for so far.
    epoch: AtomicU64,
    slots: Mutex<Vec<Arc<Slot>>>,
    pub(super) dropped: AtomicU64,
    pub(super) write_errors: AtomicU64,
    /// Tests hold this to stall the writer.
    #[cfg(test)]
    pub(super) gate: std::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn new(capacity: usize) -> Shared {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            capacity: capacity.max(1),
            epoch: AtomicU64::new(0),
            slots: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            #[cfg(test)]
            gate: std::sync::Mutex::new(()),
        }
    }

    /// A new slot, registered so the writer takes its lines.
    fn register(&self) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        self.slots.lock().push(slot.clone());
        slot
    }

    /// The next lines go to a freshly opened file.
    pub(super) fn reopen(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Appends one line (`write` must end it with `'\n'`) to this thread's slot. Returns whether
    /// the writer must be woken (the slot was empty); a full slot drops the line and counts it.
    pub(super) fn append(&self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        with_slot(self, |slot| {
            let mut lines = slot.lines.lock();
            if lines.count >= self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            lines.begin(self.epoch.load(Ordering::Acquire));
            write(&mut lines.bytes);
            lines.count += 1;
            lines.count == 1
        })
    }
}

thread_local! {
    /// This thread's slot in each log it wrote to lately, by log id.
    static SLOTS: RefCell<Vec<(u64, Arc<Slot>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's slot of `shared`, registering one on first use.
fn with_slot(shared: &Shared, f: impl FnOnce(&Slot) -> bool) -> bool {
    let mut f = Some(f);
    let mut done = None;
    let _ = SLOTS.try_with(|cell| {
        let Ok(mut slots) = cell.try_borrow_mut() else { return };
        let i = match slots.iter().position(|(id, _)| *id == shared.id) {
            Some(i) => i,
            None => {
                // Slots of logs that are gone: only this list still holds them.
                slots.retain(|(_, s)| Arc::strong_count(s) > 1);
                if slots.len() >= THREAD_SLOTS {
                    slots.remove(0);
                }
                slots.push((shared.id, shared.register()));
                slots.len() - 1
            }
        };
        if let (Some((_, slot)), Some(f)) = (slots.get(i), f.take()) {
            done = Some(f(slot));
        }
    });
    match (done, f) {
        (Some(wake), _) => wake,
        // The thread is exiting (its list is gone): a slot of its own, which the writer drops
        // once it has taken the line.
        (None, Some(f)) => f(&shared.register()),
        (None, None) => false,
    }
}

/// One thread's lines waiting for the writer.
#[derive(Debug, Default)]
pub(super) struct Slot {
    lines: Mutex<Lines>,
}

/// Whole lines, each ending in `'\n'`, tagged with the epochs they were logged in.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    count: usize,
    /// The epoch of the lines before the first cut.
    first: u64,
    /// The epoch of the last line.
    last: u64,
    /// Where the lines of a later epoch begin: (offset, epoch), in order. Usually empty.
    cuts: Vec<(usize, u64)>,
}

impl Lines {
    /// Before a line of `epoch` is added.
    fn begin(&mut self, epoch: u64) {
        if self.count == 0 {
            self.first = epoch;
        } else if epoch != self.last {
            self.cuts.push((self.bytes.len(), epoch));
        }
        self.last = epoch;
    }

    /// Moves the lines of the epochs up to `upto` into `out` (which must be empty), keeping
    /// the later ones.
    fn take(&mut self, upto: u64, out: &mut Batch) {
        out.first = self.first;
        match self.cuts.iter().position(|&(_, e)| e > upto) {
            None => {
                std::mem::swap(&mut self.bytes, &mut out.bytes);
                std::mem::swap(&mut self.cuts, &mut out.cuts);
                self.count = 0;
            }
            // Lines logged after a reopen this round does not cover yet: rare.
            Some(i) => {
                let (at, epoch) = self.cuts[i];
                out.bytes.extend_from_slice(&self.bytes[..at]);
                out.cuts.extend_from_slice(&self.cuts[..i]);
                self.bytes.drain(..at);
                self.cuts.drain(..=i);
                for cut in &mut self.cuts {
                    cut.0 -= at;
                }
                self.first = epoch;
                self.count = self.bytes.iter().filter(|&&b| b == b'\n').count();
            }
        }
    }
}

/// Lines taken from a slot.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    first: u64,
    cuts: Vec<(usize, u64)>,
}

impl Batch {
    /// (epoch, byte range) of each run of lines of one epoch, in order.
    fn segments(&self) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + '_ {
        let starts = std::iter::once((0, self.first)).chain(self.cuts.iter().copied());
        let ends = self.cuts.iter().map(|&(at, _)| at).chain(std::iter::once(self.bytes.len()));
        starts.zip(ends).map(|((start, epoch), end)| (epoch, start..end))
    }

    fn clear(&mut self) {
        if self.bytes.capacity() > BUFFER_KEEP {
            self.bytes = Vec::new();
        }
        self.bytes.clear();
        self.cuts.clear();
    }
}

/// The writer's state between rounds.
struct Writer {
    sink: Sink,
    /// The epoch the open file belongs to.
    epoch: u64,
    batches: Vec<Batch>,
    /// (epoch, batch, range) of a round, kept for its allocation.
    segments: Vec<(u64, usize, std::ops::Range<usize>)>,
}

impl Writer {
    /// Takes every slot's lines (up to the current epoch) and writes them, reopening the file
    /// between epochs; again while a slot kept lines of a later epoch.
    fn round(&mut self, shared: &Shared) {
        loop {
            let upto = shared.epoch.load(Ordering::Acquire);
            let mut taken = 0;
            let mut more = false;
            {
                let mut slots = shared.slots.lock();
                for slot in slots.iter() {
                    let mut lines = slot.lines.lock();
                    if lines.count == 0 {
                        continue;
                    }
                    if self.batches.len() == taken {
                        self.batches.push(Batch::default());
                    }
                    lines.take(upto, &mut self.batches[taken]);
                    more |= lines.count > 0;
                    taken += 1;
                }
                // Slots of threads that are gone, once empty.
                slots.retain(|s| Arc::strong_count(s) > 1 || s.lines.lock().count > 0);
            }
            let mut segments = std::mem::take(&mut self.segments);
            for (i, b) in self.batches[..taken].iter().enumerate() {
                segments.extend(b.segments().map(|(epoch, range)| (epoch, i, range)));
            }
            // Stable: lines of one epoch keep their order within each thread.
            segments.sort_by_key(|s| s.0);
            for (epoch, i, range) in segments.drain(..) {
                if epoch > self.epoch {
                    self.sink.reopen(shared);
                    self.epoch = epoch;
                }
                self.sink.write(&self.batches[i].bytes[range], shared);
            }
            self.segments = segments;
            if upto > self.epoch {
                self.sink.reopen(shared);
                self.epoch = upto;
            }
            for b in &mut self.batches[..taken] {
                b.clear();
            }
            if !more {
                return;
            }
        }
    }
}

pub(super) fn run(mut rx: mpsc::Receiver<Msg>, sink: Sink, shared: &Shared) {
    let mut writer = Writer { sink, epoch: 0, batches: Vec::new(), segments: Vec::new() };
    let mut acks = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            if let Msg::Flush(done) = msg {
                acks.push(done);
            }
            next = rx.try_recv().ok();
        }
        {
            #[cfg(test)]
            let _paused = shared.gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            writer.round(shared);
            writer.sink.flush(shared);
        }
        for done in acks.drain(..) {
            let _ = done.send(());
        }
        // Let lines gather. While the writer sleeps, no thread finds it waiting, so a wake-up
        // costs the request path no syscall.
        std::thread::sleep(BATCH_WINDOW);
    }
    // Every handle is gone: the lines they logged are in the slots.
    writer.round(shared);
    writer.sink.flush(shared);
}

/// The writer's end: a buffered stdout or file.
pub(super) struct Sink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    pub(super) fn open(target: LogTarget) -> io::Result<Sink> {
        let (path, out): (_, Box<dyn Write + Send>) = match target {
            LogTarget::Stdout => (None, Box::new(io::stdout())),
            LogTarget::File(path) => {
                let file = open_file(&path)?;
                (Some(path), Box::new(file))
            }
        };
        Ok(Sink { path, out: BufWriter::with_capacity(WRITE_BUFFER, out) })
    }

    fn write(&mut self, lines: &[u8], shared: &Shared) {
        if let Err(e) = self.out.write_all(lines) {
            report(shared, "write", &e);
        }
    }

    fn flush(&mut self, shared: &Shared) {
        if let Err(e) = self.out.flush() {
            report(shared, "flush", &e);
        }
    }

    fn reopen(&mut self, shared: &Shared) {
        let Some(path) = &self.path else { return };
        if let Err(e) = self.out.flush() {
            report(shared, "flush", &e);
        }
        match open_file(path) {
            Ok(file) => self.out = BufWriter::with_capacity(WRITE_BUFFER, Box::new(file)),
            // Keep writing to the old file rather than losing lines.
            Err(e) => report(shared, "reopen", &e),
        }
    }
}

fn open_file(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().append(true).create(true).open(path)
}

/// Counts an I/O error; reports the 1st, 2nd, 4th, 8th... on stderr so a full disk does not
/// flood it.
fn report(shared: &Shared, what: &str, e: &io::Error) {
    let n = shared.write_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        let _ = writeln!(io::stderr(), "access log: {what} failed ({n} errors so far): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(lines: &mut Lines, epoch: u64, text: &str) {
        lines.begin(epoch);
        lines.bytes.extend_from_slice(text.as_bytes());
        lines.bytes.push(b'\n');
        lines.count += 1;
    }

    fn segments(b: &Batch) -> Vec<(u64, String)> {
        b.segments().map(|(e, r)| (e, String::from_utf8_lossy(&b.bytes[r]).into_owned())).collect()
    }

    #[test]
    fn a_take_stops_at_the_first_later_epoch_and_keeps_the_rest_in_order() {
        let mut lines = Lines::default();
        add(&mut lines, 0, "a");
        add(&mut lines, 0, "b");
        add(&mut lines, 1, "c");
        add(&mut lines, 2, "d");
        add(&mut lines, 2, "e");
        add(&mut lines, 3, "f");
        let mut out = Batch::default();
        lines.take(1, &mut out);
        assert_eq!(segments(&out), [(0, "a\nb\n".to_owned()), (1, "c\n".to_owned())]);
        assert_eq!((lines.count, lines.first), (3, 2));
        out.clear();
        lines.take(3, &mut out);
        assert_eq!(segments(&out), [(2, "d\ne\n".to_owned()), (3, "f\n".to_owned())]);
        assert_eq!(lines.count, 0);
        // Empty again: the next line starts a new first epoch, without a cut.
        add(&mut lines, 5, "g");
        assert!(lines.cuts.is_empty());
        out.clear();
        lines.take(5, &mut out);
        assert_eq!(segments(&out), [(5, "g\n".to_owned())]);
    }
}
