//! The bounded queue between the threads that log and the one writer thread
//! that owns the destination: appending never blocks on the destination, and
//! lines that do not fit are dropped and counted.

use std::io::Write;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Where the writer puts lines: a file, stderr, or (in tests) anything.
pub type Target = Box<dyn Write + Send>;

/// A reopen: run by the writer thread where it was queued, it gives the
/// next target (`None`: keep the current one). Opening a file there keeps
/// a hung mount off the threads that log.
pub type Opener = Box<dyn FnOnce() -> Option<Target> + Send>;

/// Reopens waiting in the queue at most; past it the newest replaces the last.
const MAX_SWITCHES: usize = 8;

#[derive(Default)]
struct State {
    /// Whole lines waiting for the writer.
    buf: Vec<u8>,
    /// (offset in `buf`, target for the bytes from there on): reopens.
    switches: Vec<(usize, Opener)>,
    /// Bytes the writer took and has not finished writing.
    in_flight: usize,
    /// The writer holds a batch (possibly only a switch).
    writing: bool,
    /// The writer is emitting the "lines dropped" warning.
    reporting: bool,
    /// Dropped since the last warning.
    unreported: u64,
    /// The writer sleeps on `wake` and nobody woke it yet.
    writer_waiting: bool,
    /// Threads waiting in [`Queue::drain`].
    drainers: usize,
}

impl State {
    fn busy(&self) -> bool {
        !self.buf.is_empty() || !self.switches.is_empty() || self.writing || self.reporting
    }
}

/// Lines in memory, at most `capacity` bytes of them (queued or being written).
pub struct Queue {
    capacity: usize,
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
    dropped: AtomicU64,
}

impl Queue {
    pub const fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            state: Mutex::new(State {
                buf: Vec::new(),
                switches: Vec::new(),
                in_flight: 0,
                writing: false,
                reporting: false,
                unreported: 0,
                writer_waiting: false,
                drainers: 0,
            }),
            wake: Condvar::new(),
            idle: Condvar::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lines dropped since the start because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// What waits for the writer now.
    #[cfg(test)]
    pub fn queued(&self) -> Vec<u8> {
        self.lock().buf.clone()
    }

    /// Appends whole lines (`lines` ends with a newline) as far as they fit;
    /// the rest is dropped and counted. Wakes the writer if it sleeps.
    pub fn push(&self, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        let mut s = self.lock();
        let room = self.capacity.saturating_sub(s.buf.len() + s.in_flight);
        let fit = if lines.len() <= room {
            lines.len()
        } else {
            lines[..room].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
        };
        s.buf.extend_from_slice(&lines[..fit]);
        let lost = newlines(&lines[fit..]);
        if lost > 0 {
            s.unreported += lost;
            self.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        self.wake_writer(s, fit > 0);
    }

    /// Bytes from here on go to `target` (the writer switches in order).
    pub fn switch(&self, target: Target) {
        self.switch_with(Box::new(move || Some(target)));
    }

    /// Bytes from here on go to what `opener`, run by the writer when it
    /// gets here, gives.
    pub fn switch_with(&self, target: Opener) {
        let mut s = self.lock();
        let at = s.buf.len();
        let full = s.switches.len() >= MAX_SWITCHES;
        match s.switches.last_mut() {
            Some(last) if last.0 == at || full => last.1 = target,
            _ => s.switches.push((at, target)),
        }
        self.wake_writer(s, true);
    }

    fn wake_writer(&self, mut s: MutexGuard<'_, State>, added: bool) {
        let wake = added && s.writer_waiting;
        if wake {
            s.writer_waiting = false;
        }
        drop(s);
        if wake {
            self.wake.notify_one();
        }
    }

    /// Writer side: waits for work, then swaps the queued lines into `batch`
    /// (which must be empty) and returns the reopens among them.
    fn take(&self, batch: &mut Vec<u8>) -> Vec<(usize, Opener)> {
        let mut s = self.lock();
        while s.buf.is_empty() && s.switches.is_empty() {
            s.writer_waiting = true;
            s = self.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.writer_waiting = false;
        mem::swap(&mut s.buf, batch);
        s.in_flight = batch.len();
        s.writing = true;
        mem::take(&mut s.switches)
    }

    /// Writer side: the batch is written. Returns how many lines to report
    /// as dropped when the destination has caught up (the queue is at most
    /// half full again); the writer then calls [`Queue::reported`].
    fn done(&self) -> Option<u64> {
        let mut s = self.lock();
        s.in_flight = 0;
        s.writing = false;
        let caught_up = s.buf.len() <= self.capacity / 2;
        let report = (s.unreported > 0 && caught_up).then(|| {
            s.reporting = true;
            mem::take(&mut s.unreported)
        });
        self.wake_drainers(&s);
        report
    }

    fn reported(&self) {
        let mut s = self.lock();
        s.reporting = false;
        self.wake_drainers(&s);
    }

    fn wake_drainers(&self, s: &State) {
        if s.drainers > 0 && !s.busy() {
            self.idle.notify_all();
        }
    }

    /// Waits until every queued line is written, at most `limit`. False when
    /// the writer did not get there in time (a stalled destination).
    pub fn drain(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut s = self.lock();
        s.drainers += 1;
        while s.busy() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = match self.idle.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        s.drainers -= 1;
        !s.busy()
    }
}

fn newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// The writer thread's body: writes batches to `target` in order, switching
/// targets where a reopen was queued, for ever. `notice(n)` is called when
/// the destination has caught up after `n` lines were dropped.
pub fn run(queue: &Queue, mut target: Target, notice: &dyn Fn(u64)) {
    let mut batch = Vec::new();
    loop {
        let switches = queue.take(&mut batch);
        let mut from = 0;
        for (at, next) in switches {
            write_out(&mut target, &batch[from..at]);
            if let Some(t) = next() {
                target = t;
            }
            from = at;
        }
        write_out(&mut target, &batch[from..]);
        batch.clear();
        if let Some(n) = queue.done() {
            notice(n);
            queue.reported();
        }
    }
}

/// One batch to the destination. Errors (a full disk, a closed pipe) lose
/// the batch; there is nowhere else to say so.
fn write_out(target: &mut Target, bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = target.write_all(bytes);
        let _ = target.flush();
    }
}
