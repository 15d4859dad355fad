//! The queue and the sink without the global logger: a full queue drops and
//! counts, the writer reports once after catching up, reopens keep order.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::queue::{run, Queue};
use super::Sink;

const SOON: Duration = Duration::from_secs(10);

/// A destination that blocks every write until opened, and keeps what it got.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<(Mutex<bool>, Condvar)>,
    out: Arc<Mutex<Vec<u8>>>,
    entered: Arc<AtomicUsize>,
}

impl Gate {
    fn opened() -> Gate {
        let g = Gate::default();
        g.set_open();
        g
    }
    fn set_open(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
    fn text(&self) -> String {
        String::from_utf8(self.out.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.entered.fetch_add(1, Ordering::SeqCst);
        let (lock, cv) = &*self.open;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn leak(capacity: usize) -> &'static Queue {
    Box::leak(Box::new(Queue::new(capacity)))
}

/// Runs the writer on `target`; a notice is recorded and queued as a line,
/// as the real one logs a warning.
fn spawn_writer(q: &'static Queue, target: Gate) -> Arc<Mutex<Vec<u64>>> {
    let notices = Arc::new(Mutex::new(Vec::new()));
    let seen = notices.clone();
    thread::spawn(move || {
        let notice = move |n: u64| {
            seen.lock().unwrap().push(n);
            q.push(format!("dropped {n}\n").as_bytes());
        };
        run(q, Box::new(target), &notice)
    });
    notices
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < SOON, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn full_queue_drops_whole_lines_and_counts_them() {
    let q = leak(100);
    q.push(&[b'a'; 39].iter().chain(b"\n").copied().collect::<Vec<u8>>());
    q.push(&[b'b'; 39].iter().chain(b"\n").copied().collect::<Vec<u8>>());
    // 20 bytes left: two short lines fit, the long one between them too
    // would not, nor anything after it.
    q.push(b"c1\nc2\n0123456789012345678\nc3\n");
    assert_eq!(q.dropped(), 2);
    assert_eq!(q.queued().len(), 86);
    assert!(q.queued().ends_with(b"c1\nc2\n"));
    q.push(b"0123456789abcdef\n");
    assert_eq!(q.dropped(), 3, "a line longer than the room left is dropped whole");
}

#[test]
fn writer_catches_up_and_reports_drops_once() {
    let q = leak(100);
    let gate = Gate::default();
    let notices = spawn_writer(q, gate.clone());
    q.push(b"first line\n");
    wait_until("the writer to block on the destination", || {
        gate.entered.load(Ordering::SeqCst) > 0
    });
    for i in 0..10 {
        q.push(format!("line {i:02} xxxxxxxxx\n").as_bytes());
    }
    // 11 bytes in flight count against the 100: four 18-byte lines fit.
    assert_eq!(q.dropped(), 6);
    assert!(notices.lock().unwrap().is_empty(), "no report while stalled");
    gate.set_open();
    assert!(q.drain(SOON));
    assert_eq!(*notices.lock().unwrap(), vec![6]);
    let want = "first line\nline 00 xxxxxxxxx\nline 01 xxxxxxxxx\nline 02 xxxxxxxxx\nline 03 xxxxxxxxx\ndropped 6\n";
    assert_eq!(gate.text(), want);
    q.push(b"later\n");
    assert!(q.drain(SOON));
    assert_eq!(*notices.lock().unwrap(), vec![6], "reported once");
    assert!(gate.text().ends_with("dropped 6\nlater\n"));
}

#[test]
fn reopen_switches_after_the_lines_before_it() {
    let q = leak(1000);
    let (first, second, third) = (Gate::opened(), Gate::opened(), Gate::opened());
    q.push(b"old 1\nold 2\n");
    q.switch(Box::new(Gate::opened()));
    // A second reopen before any new line replaces the first.
    q.switch(Box::new(second.clone()));
    q.push(b"new 1\n");
    spawn_writer(q, first.clone());
    assert!(q.drain(SOON));
    q.switch(Box::new(third.clone()));
    q.push(b"newer\n");
    assert!(q.drain(SOON));
    assert_eq!(first.text(), "old 1\nold 2\n");
    assert_eq!(second.text(), "new 1\n");
    assert_eq!(third.text(), "newer\n");
}

#[test]
fn drain_gives_up_on_a_stalled_destination() {
    let q = leak(1000);
    let gate = Gate::default();
    spawn_writer(q, gate.clone());
    q.push(b"stuck\n");
    let start = Instant::now();
    assert!(!q.drain(Duration::from_millis(200)));
    assert!(start.elapsed() < SOON);
    gate.set_open();
    assert!(q.drain(SOON));
    assert_eq!(gate.text(), "stuck\n");
}

#[test]
fn sink_batches_its_thread_and_hands_over_others_per_line() {
    let q = leak(1000);
    let mut sink = Sink::on(q);
    sink.write_all(b"2024 [INFO] ").unwrap();
    sink.write_all(b"one\n").unwrap();
    sink.write_all(b"2024 [INFO] tw").unwrap();
    assert!(q.queued().is_empty(), "the batching thread waits for flush");
    sink.flush().unwrap();
    assert_eq!(q.queued(), b"2024 [INFO] one\n");
    sink.write_all(b"o\n").unwrap();
    // A sink whose batching thread is another: every line goes at once.
    let mut other = thread::spawn(move || Sink::on(q)).join().unwrap();
    other.write_all(b"x\n").unwrap();
    assert_eq!(q.queued(), b"2024 [INFO] one\nx\n");
    sink.flush().unwrap();
    assert_eq!(q.queued(), b"2024 [INFO] one\nx\n2024 [INFO] two\n");
}

/// A reopen whose open hangs (a dead network mount) holds only the writer:
/// lines logged meanwhile are queued without waiting and, once the open
/// returns, go to the new file in order; a failed open keeps the old one.
#[test]
fn a_hanging_reopen_holds_only_the_writer() {
    let q = leak(1000);
    let (old, new) = (Gate::opened(), Gate::opened());
    spawn_writer(q, old.clone());
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let opened = new.clone();
    q.push(b"before\n");
    q.switch_with(Box::new(move || {
        let _ = wait.recv();
        Some(Box::new(opened) as super::queue::Target)
    }));
    let start = Instant::now();
    for _ in 0..10 {
        q.push(b"during\n");
    }
    assert!(start.elapsed() < SOON, "pushing never waits for the open");
    assert!(!q.drain(Duration::from_millis(100)), "the writer is in the open");
    release.send(()).unwrap();
    assert!(q.drain(SOON));
    assert_eq!(old.text(), "before\n");
    assert_eq!(new.text(), "during\n".repeat(10));
    // An open that fails: the lines stay with the current target.
    q.switch_with(Box::new(|| None));
    q.push(b"after\n");
    assert!(q.drain(SOON));
    assert!(new.text().ends_with("during\nafter\n"));
}
