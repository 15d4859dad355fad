//! Where log lines go: stderr or `log_file`, written by a thread of its own
//! so that a slow or stalled destination never holds the event loop.
//!
//! The logger formats a line into [`Sink`], which keeps the lines of one
//! loop turn and hands them to a bounded [`queue`] when the loop flushes
//! (`log::logger().flush()`, once per turn); lines from other threads are
//! handed over as each ends. A line that does not fit is dropped and
//! counted ([`lines_dropped`]); once the destination catches up, one `warn`
//! line says how many. The file can be reopened (SIGHUP), so log rotation
//! works by moving the file and sending SIGHUP; the writer thread opens the
//! new file (a hung mount must not hold the loop).

mod queue;

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use queue::{Queue, Target};

/// Bytes of lines held in memory at most, queued or being written: about
/// 1,700 access-log lines.
pub const CAPACITY: usize = 256 * 1024;
/// A turn's lines are handed over early once this many bytes wait.
const HANDOVER: usize = 64 * 1024;
/// How long [`finish`] waits for the writer at exit.
pub const EXIT_WAIT: Duration = Duration::from_secs(2);

static QUEUE: Queue = Queue::new(CAPACITY);
static STARTED: AtomicBool = AtomicBool::new(false);

/// Lines dropped since the start because the destination could not keep up.
pub fn lines_dropped() -> u64 {
    QUEUE.dropped()
}

fn open(path: Option<&Path>) -> io::Result<Target> {
    Ok(match path {
        Some(p) => Box::new(crate::io::file::open_regular(p, crate::io::file::Mode::AppendCreate)?),
        None => Box::new(io::stderr()),
    })
}

/// The writer handed to the logger: collects formatted lines and hands
/// whole ones to the queue.
pub struct Sink {
    queue: &'static Queue,
    pending: Vec<u8>,
    /// The thread whose lines wait for a flush (the event loop's); other
    /// threads hand theirs over at each line end.
    batching: ThreadId,
}

impl Sink {
    /// Opens the first target and starts the writer thread. The calling
    /// thread's lines are handed over at each flush.
    pub fn new(path: Option<&Path>) -> io::Result<Sink> {
        let target = open(path)?;
        if STARTED.swap(true, Ordering::SeqCst) {
            QUEUE.switch(target);
        } else if let Err(e) = start_writer(target) {
            STARTED.store(false, Ordering::SeqCst);
            return Err(io::Error::new(
                e.kind(),
                format!("cannot start the log writer thread: {e}"),
            ));
        }
        Ok(Sink::on(&QUEUE))
    }

    fn on(queue: &'static Queue) -> Sink {
        Sink {
            queue,
            pending: Vec::with_capacity(HANDOVER),
            batching: thread::current().id(),
        }
    }

    /// Whole lines go to the queue; a partial last line stays.
    fn hand_over(&mut self) {
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            self.queue.push(&self.pending[..=end]);
            self.pending.drain(..=end);
            // One huge line (a 1 MiB service name) must not stay allocated.
            if self.pending.capacity() > 4 * HANDOVER {
                self.pending.shrink_to(HANDOVER);
            }
        }
    }
}

/// The writer thread. A panic in it ends the process: logging must not die
/// quietly while the proxy goes on.
fn start_writer(target: Target) -> io::Result<()> {
    thread::Builder::new().name("easyproxy-log".into()).spawn(move || {
        let body = std::panic::AssertUnwindSafe(|| queue::run(&QUEUE, target, &warn_dropped));
        if std::panic::catch_unwind(body).is_err() {
            std::process::abort();
        }
    })?;
    Ok(())
}

fn warn_dropped(n: u64) {
    log::warn!("log: {n} lines dropped: the log destination could not keep up");
    // The writer is not the batching thread: the line is queued already.
}

/// Switches to a freshly opened target (the same path after rotation, or a
/// new `log_file`) after the lines logged so far. The writer thread opens
/// it when it reaches this point of the queue, so a hung mount holds only
/// the writer (lines meanwhile queue up, and are dropped and counted when
/// the queue is full), never the caller (the event loop). An error opening
/// it is logged and the old target stays.
pub fn reopen(path: Option<&Path>) {
    let path = path.map(Path::to_path_buf);
    // This thread's lines so far belong to the old target.
    log::logger().flush();
    QUEUE.switch_with(Box::new(move || open_logged(path.as_deref())));
}

/// An open slower than this is logged.
const OPEN_SLOW: Duration = Duration::from_secs(2);

/// The writer thread's reopen.
fn open_logged(path: Option<&Path>) -> Option<Target> {
    let started = Instant::now();
    let opened = open(path);
    let shown = path.map_or_else(|| "stderr".into(), |p| p.display().to_string());
    let took = started.elapsed();
    if took > OPEN_SLOW {
        log::warn!("log: opening {shown} took {} ms", took.as_millis());
    }
    match opened {
        Ok(target) => Some(target),
        Err(e) => {
            log::error!("cannot reopen the log {shown}: {e}; logging goes on to the old file");
            None
        }
    }
}

/// At exit: hands over the lines of this thread and waits until the writer
/// has written every queued line, at most [`EXIT_WAIT`] (a dead pipe must
/// not hang the exit). False when it gave up.
pub fn finish() -> bool {
    log::logger().flush();
    QUEUE.drain(EXIT_WAIT)
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if buf.ends_with(b"\n") && (self.pending.len() >= HANDOVER || thread::current().id() != self.batching) {
            self.hand_over();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.hand_over();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
