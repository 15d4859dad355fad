//! Reload, step 1: reading, validating and resolving the configuration file
//! off the event loop. A slow disk, a FIFO nobody writes or a DNS server that
//! does not answer (hostname backends are resolved at every reload) would
//! otherwise stop all traffic for as long as it takes. A helper thread does
//! the blocking part and owns no socket; the loop applies the result when the
//! waker says it is there.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;

use mio::{Registry, Token, Waker};

use crate::config::Config;

/// What one read of the configuration file produced: the config, or the
/// error text to log.
pub type Loaded = Result<Config, String>;

/// Runs at most one configuration read at a time; a reload asked for while
/// one is running is remembered and started when it finishes, so the file
/// as it is after the last SIGHUP is what ends up applied.
pub struct Loader {
    waker: Arc<Waker>,
    tx: Sender<Loaded>,
    rx: Receiver<Loaded>,
    running: Option<PathBuf>,
    queued: Option<PathBuf>,
}

impl Loader {
    /// A loader whose finished reads wake the poll with `token`.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Loader> {
        let (tx, rx) = mpsc::channel();
        Ok(Loader {
            waker: Arc::new(Waker::new(registry, token)?),
            tx,
            rx,
            running: None,
            queued: None,
        })
    }

    /// Whether a read is running (or queued).
    pub fn busy(&self) -> bool {
        self.running.is_some() || self.queued.is_some()
    }

    /// Starts reading `path`, or queues it behind the read already running.
    /// Returns false when it was queued.
    pub fn start(&mut self, path: PathBuf) -> bool {
        if self.running.is_some() {
            self.queued = Some(path);
            return false;
        }
        let (tx, waker) = (self.tx.clone(), Arc::clone(&self.waker));
        let thread_path = path.clone();
        let spawned = std::thread::Builder::new()
            .name("easyproxy-config".into())
            .spawn(move || {
                // A panic here must still answer, or every later reload
                // would wait behind this one for ever.
                let loaded = std::panic::catch_unwind(|| read(&thread_path))
                    .unwrap_or_else(|_| Err("internal error while reading the file".into()));
                // The loop may be gone (stopping): nothing to report to then.
                if tx.send(loaded).is_ok() {
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            // No thread to be had: read in the loop rather than not at all.
            log::warn!("no thread for reading the configuration ({e}); reading it in the event loop");
            let _ = self.tx.send(read(&path));
            let _ = self.waker.wake();
        }
        self.running = Some(path);
        true
    }

    /// The result of the read that finished, if one did; starts the queued
    /// read, if any.
    pub fn finished(&mut self) -> Option<Loaded> {
        let loaded = self.rx.try_recv().ok()?;
        self.running = None;
        if let Some(next) = self.queued.take() {
            self.start(next);
        }
        Some(loaded)
    }
}

/// Reads, validates and resolves the file; errors on one line.
fn read(path: &std::path::Path) -> Loaded {
    Config::load(path).map_err(|e| e.to_string().replace('\n', "; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    fn wait(poll: &mut Poll, loader: &mut Loader) -> Loaded {
        let mut events = Events::with_capacity(8);
        for _ in 0..100 {
            poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
            if let Some(l) = loader.finished() {
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
        let mut loader = Loader::new(poll.registry(), Token(1)).unwrap();
        assert!(loader.start(good.clone()));
        assert!(!loader.start(bad.clone()), "a second read waits for the first");
        assert!(loader.busy());
        let first = wait(&mut poll, &mut loader);
        assert_eq!(first.unwrap().services[0].name, "a");
        let second = wait(&mut poll, &mut loader);
        assert!(second.unwrap_err().contains("nmae"));
        assert!(!loader.busy());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
