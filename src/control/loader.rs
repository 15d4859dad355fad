//! Reload, step 1: reading, validating and resolving the configuration file
//! off the event loop. A slow disk, a FIFO nobody writes or a DNS server that
//! does not answer (hostname backends are resolved at every reload) would
//! otherwise stop all traffic for as long as it takes. A helper thread does
//! the blocking part and owns no socket; the loop applies the result when the
//! waker says it is there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::config::Config;
use crate::control::reload::plan::Plan;

/// A configuration read, validated and compared with the one running when
/// the read started (`base`), all off the loop.
#[derive(Debug)]
pub struct Prepared {
    pub config: Config,
    pub plan: Plan,
    pub base: Arc<Config>,
}

/// What one read of the configuration file produced: the prepared config,
/// or the error text to log.
pub type Loaded = Result<Prepared, String>;

/// How long a read may take before the reload is abandoned (a FIFO nobody
/// writes, a hung network mount).
pub const READ_DEADLINE: Duration = Duration::from_secs(10);
/// Abandoned reads whose threads are still stuck; past this no new read
/// starts (each holds a parked thread).
const MAX_STUCK: usize = 4;

/// The read in progress.
struct Read {
    path: PathBuf,
    gen: u64,
}

/// Runs at most one configuration read at a time; a reload asked for while
/// one is running is remembered and started when it finishes, so the file
/// as it is after the last SIGHUP is what ends up applied. A read that
/// passes its deadline is abandoned: the reload fails, and the next one
/// starts afresh.
pub struct Loader {
    waker: Arc<Waker>,
    tx: Sender<(u64, Loaded)>,
    rx: Receiver<(u64, Loaded)>,
    running: Option<Read>,
    queued: Option<(PathBuf, Arc<Config>)>,
    next_gen: u64,
    /// Reader threads alive (the running one and abandoned ones).
    threads: Arc<AtomicUsize>,
    /// The deadline of a read just started, for the loop to arm.
    deadline: Option<(u64, Instant)>,
    /// A result the loop should see without a thread (refused or failed to
    /// start).
    ready: Option<Loaded>,
}

impl Loader {
    /// A loader whose finished reads wake the poll through `waker`.
    pub fn new(waker: Arc<Waker>) -> Loader {
        let (tx, rx) = mpsc::channel();
        Loader {
            waker,
            tx,
            rx,
            running: None,
            queued: None,
            next_gen: 0,
            threads: Arc::new(AtomicUsize::new(0)),
            deadline: None,
            ready: None,
        }
    }

    /// Whether a read is running (or queued).
    pub fn busy(&self) -> bool {
        self.running.is_some() || self.queued.is_some()
    }

    /// Starts reading `path`, or queues it behind the read already running.
    /// Returns false when it was queued.
    pub fn start(&mut self, path: PathBuf, base: Arc<Config>, now: Instant) -> bool {
        if self.running.is_some() {
            self.queued = Some((path, base));
            return false;
        }
        self.next_gen += 1;
        let gen = self.next_gen;
        if self.threads.load(Ordering::SeqCst) >= MAX_STUCK {
            self.ready = Some(Err(format!(
                "{MAX_STUCK} earlier reads of the file are still stuck; not starting another"
            )));
            let _ = self.waker.wake();
            return true;
        }
        self.spawn(path.clone(), base, gen);
        self.running = Some(Read { path, gen });
        self.deadline = Some((gen, now + READ_DEADLINE));
        true
    }

    fn spawn(&mut self, path: PathBuf, base: Arc<Config>, gen: u64) {
        let (tx, waker, threads) = (self.tx.clone(), Arc::clone(&self.waker), Arc::clone(&self.threads));
        let fallback = Arc::clone(&base);
        let thread_path = path.clone();
        threads.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("easyproxy-config".into())
            .spawn(move || {
                // A panic here must still answer, or every later reload
                // would wait behind this one for ever.
                let loaded = std::panic::catch_unwind(|| read(&thread_path, base))
                    .unwrap_or_else(|_| Err("internal error while reading the file".into()));
                threads.fetch_sub(1, Ordering::SeqCst);
                // The loop may be gone (stopping): nothing to report to then.
                if tx.send((gen, loaded)).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            self.threads.fetch_sub(1, Ordering::SeqCst);
            // No thread to be had: read in the loop rather than not at all.
            log::warn!("no thread for reading the configuration ({e}); reading it in the event loop");
            let _ = self.tx.send((gen, read(&path, fallback)));
            let _ = self.waker.wake();
        }
    }

    /// The deadline of the read started last, once: `(generation, when)`.
    pub fn take_deadline(&mut self) -> Option<(u64, Instant)> {
        self.deadline.take()
    }

    /// The result of the read that finished, if one did; starts the queued
    /// read, if any. Results of abandoned reads are dropped.
    pub fn finished(&mut self, now: Instant) -> Option<Loaded> {
        if let Some(r) = self.ready.take() {
            return Some(r);
        }
        loop {
            let (gen, loaded) = self.rx.try_recv().ok()?;
            if self.running.as_ref().is_some_and(|r| r.gen == gen) {
                self.running = None;
                self.start_queued(now);
                return Some(loaded);
            }
        }
    }

    /// Read `gen`'s deadline passed: if it is still running it is
    /// abandoned and the reload fails with the answer returned.
    pub fn expire(&mut self, gen: u64, now: Instant) -> Option<Loaded> {
        let read = self.running.take_if(|r| r.gen == gen)?;
        self.start_queued(now);
        Some(Err(format!(
            "reading {} took longer than {} s; reload abandoned",
            read.path.display(),
            READ_DEADLINE.as_secs()
        )))
    }

    fn start_queued(&mut self, now: Instant) {
        if let Some((next, base)) = self.queued.take() {
            self.start(next, base, now);
        }
    }
}

/// Reads, validates and resolves the file (token and password files
/// included, `state_file` checked against the others), and plans the
/// change from `base`; errors on one line. All of it within
/// [`READ_DEADLINE`].
fn read(path: &std::path::Path, base: Arc<Config>) -> Loaded {
    let config = Config::load(path).map_err(|e| e.to_string().replace('\n', "; "))?;
    config
        .check_state_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let plan = Plan::new(&base, &config);
    Ok(Prepared { config, plan, base })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Waker};
    fn base() -> Arc<Config> {
        Arc::new(
            Config::parse(
                "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n",
            )
            .unwrap(),
        )
    }

    fn wait(poll: &mut Poll, loader: &mut Loader) -> Loaded {
        let mut events = Events::with_capacity(8);
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            if let Some(l) = loader.finished(Instant::now()) {
                return l;
            }
        }
        panic!("no result from the loader");
    }

    #[test]
    fn reads_off_the_loop_and_queues_one_more() {
        let dir = std::env::temp_dir().join(format!("easyproxy-loader-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[service]]\nnmae = 1\n").unwrap();

        let mut poll = Poll::new().unwrap();
        let mut loader = Loader::new(Arc::new(Waker::new(poll.registry(), mio::Token(1)).unwrap()));
        assert!(loader.start(good.clone(), base(), Instant::now()));
        assert!(
            !loader.start(bad.clone(), base(), Instant::now()),
            "a second read waits for the first"
        );
        assert!(loader.busy());
        let first = wait(&mut poll, &mut loader);
        assert_eq!(first.unwrap().config.services[0].name, "a");
        let second = wait(&mut poll, &mut loader);
        assert!(second.err().unwrap().contains("nmae"));
        assert!(!loader.busy());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_read_past_its_deadline_is_abandoned_and_its_late_answer_dropped() {
        let dir = std::env::temp_dir().join(format!("easyproxy-loader-late-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A read that is still running when its deadline passes (a FIFO
        // or a hung mount would be one; here the loop simply does not look
        // before the deadline).
        let slow = dir.join("slow.toml");
        std::fs::write(
            &slow,
            "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "[[service]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let mut poll = Poll::new().unwrap();
        let mut loader = Loader::new(Arc::new(Waker::new(poll.registry(), mio::Token(1)).unwrap()));
        let now = Instant::now();
        assert!(loader.start(slow.clone(), base(), now));
        let (gen, at) = loader.take_deadline().unwrap();
        assert_eq!(at, now + READ_DEADLINE);
        assert!(loader.expire(gen + 1, at).is_none(), "another read's deadline");
        let failed = loader.expire(gen, at).unwrap().unwrap_err();
        assert!(failed.contains("took longer than 10 s"), "{failed}");
        assert!(!loader.busy());
        // The abandoned read's answer comes in while a new read runs: only
        // the new read's answer comes out.
        assert!(loader.start(good.clone(), base(), at));
        let next = wait(&mut poll, &mut loader);
        assert_eq!(next.unwrap().config.services[0].name, "b");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
