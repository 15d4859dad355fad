//! Admin API, persistence: admin states and runtime weights kept in `global.state_file`.
//!
//! One writer thread does every access to the file (the read at start and
//! each write), so neither a slow disk nor a hung mount holds the loop; the
//! loop waits for it only with a deadline. One write at a time: the loop
//! hands over the file's whole new contents, the writer replaces the file
//! atomically and durably (a fresh temporary file, `fsync`, `rename`,
//! `fsync` of the directory) and reports back through a mio waker. A file
//! that exists and is not a state file (the config, a secret, a FIFO) is
//! never written over: the writer checks before every write.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;
use serde::{Deserialize, Serialize};

use crate::balance::AdminState;
use crate::io::file::{self, ReadError};
use crate::state::State;

/// The format's version, also what tells the file from a foreign one.
const VERSION: u32 = 1;
/// Largest state file read.
const MAX_SIZE: u64 = 16 * 1024 * 1024;
/// How long the start waits for the file to be read (a hung mount).
pub const START_WAIT: Duration = Duration::from_secs(5);
/// How long a write may take before the change waiting for it is refused
/// (below `easyproxy ctl`'s default 10 s, so the client sees the 503).
pub const WRITE_WAIT: Duration = Duration::from_secs(8);
/// How long the exit waits for the last write.
const EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    easyproxy_state: u32,
    backends: Vec<Entry>,
}

/// One backend an operator changed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    service: String,
    backend: String,
    admin_state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<u32>,
}

/// One backend's settings as a change not made yet would leave them: the
/// file is written with them before the change is made.
#[derive(Debug, Clone, Copy)]
pub struct Override {
    pub service: usize,
    pub backend: usize,
    pub admin: AdminState,
    pub weight: Option<u32>,
}

/// The file's contents for the settings in `state`, with `change` in
/// place of what its backend has now.
pub fn contents(state: &State, change: Option<&Override>) -> Vec<u8> {
    let file = StateFile {
        easyproxy_state: VERSION,
        backends: entries(state, change),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The backends with a non-default admin state or weight, in file order.
fn entries(state: &State, change: Option<&Override>) -> Vec<Entry> {
    let mut out = Vec::new();
    for (sk, svc) in state.services.iter().filter(|(_, s)| !s.removed) {
        let bal = &svc.balancer;
        for &bk in bal.order() {
            let Some(b) = bal.backends.get(bk) else { continue };
            let (admin, weight) = match change {
                Some(c) if c.service == sk && c.backend == bk => (c.admin, c.weight),
                _ => (b.admin, b.weight_override),
            };
            if admin != AdminState::Ready || weight.is_some() {
                out.push(Entry {
                    service: svc.cfg.name.clone(),
                    backend: b.cfg.address.clone(),
                    admin_state: admin.as_str().to_string(),
                    weight,
                });
            }
        }
    }
    out
}

/// Why the file at the path cannot be taken as a state file.
enum Problem {
    /// It is something else: never written over.
    Foreign(String),
    /// It cannot be read.
    Io(io::Error),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Foreign(why) => write!(f, "{why}: not an easyproxy state file, never written over"),
            Problem::Io(e) => write!(f, "cannot read it: {e}"),
        }
    }
}

/// What is at `path`: nothing (`None`), a state file, or a problem. Only a
/// regular file is opened, and a FIFO never blocks the open.
fn inspect(path: &Path) -> Result<Option<StateFile>, Problem> {
    let bytes = match file::read_bounded(path, MAX_SIZE) {
        Ok(b) => b,
        Err(ReadError::Missing) => return Ok(None),
        Err(ReadError::TooLarge(_)) => return Err(Problem::Foreign(format!("larger than {} MiB", MAX_SIZE >> 20))),
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(Problem::Foreign(e.to_string()))
        }
        Err(ReadError::Io(e)) => return Err(Problem::Io(e)),
    };
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| Problem::Foreign(format!("{e}")))?;
    if file.easyproxy_state != VERSION {
        return Err(Problem::Foreign(format!(
            "format version {} (this easyproxy writes {VERSION})",
            file.easyproxy_state
        )));
    }
    Ok(Some(file))
}

/// The settings read at start, to apply once the services exist.
#[derive(Default)]
pub struct Saved(Option<StateFile>);

impl Saved {
    /// Applies the file's settings to the backends still configured.
    pub fn restore(self, state: &mut State) {
        let Some(file) = self.0 else { return };
        let restored = apply(file, state);
        if !restored.is_empty() {
            log::info!("state file: restored {}", restored.join(", "));
            state.changed();
        }
    }
}

/// Applies the entries that name a configured backend; what was restored.
fn apply(file: StateFile, state: &mut State) -> Vec<String> {
    let mut restored = Vec::new();
    for e in file.backends {
        let (Some(admin), true) = (
            AdminState::parse(&e.admin_state),
            e.weight.is_none_or(|w| (1..=256).contains(&w)),
        ) else {
            log::warn!("state file: bad entry for {}/{} skipped", e.service, e.backend);
            continue;
        };
        let svc = state
            .services
            .iter_mut()
            .find(|(_, s)| !s.removed && s.cfg.name == e.service);
        let Some((_, svc)) = svc else { continue };
        let found = svc
            .balancer
            .backends
            .iter_mut()
            .find(|(_, b)| !b.removed && b.cfg.address == e.backend);
        let Some((_, b)) = found else { continue };
        b.admin = admin;
        b.weight_override = e.weight;
        restored.push(match e.weight {
            Some(w) => format!("{admin} weight {w} {}/{}", e.service, e.backend),
            None => format!("{admin} {}/{}", e.service, e.backend),
        });
        svc.balancer.reweight();
    }
    restored
}

/// Work for the writer thread.
enum Job {
    Read { seq: u64, path: PathBuf },
    Write { seq: u64, path: PathBuf, bytes: Vec<u8> },
}

/// What the writer did.
enum Report {
    Read(u64, Result<Option<StateFile>, Problem>),
    Written(u64, Result<(), String>),
}

/// A write the writer finished: its number and how it went (the error
/// text names the file).
pub struct Done {
    pub seq: u64,
    pub result: Result<(), String>,
}

/// The job handed to the writer and not reported yet.
struct InFlight {
    seq: u64,
    since: Instant,
    /// Given up on at its deadline: the writer is stuck in it.
    given_up: bool,
    /// A write (not the read at start): once it finishes late, the file
    /// may hold a change never made, and is written again.
    write: bool,
}

/// The writer thread's two ends.
struct Writer {
    jobs: Sender<Job>,
    reports: Receiver<Report>,
}

/// The state file, if one is configured, and its writer. The loop hands
/// over one write at a time ([`Store::write`]) and learns how it went from
/// [`Store::reports`] when the waker fires.
pub struct Store {
    path: Option<PathBuf>,
    waker: Option<Arc<Waker>>,
    writer: Option<Writer>,
    in_flight: Option<InFlight>,
    next_seq: u64,
    /// The settings changed without a write (a reload; a write finished
    /// after it was given up on): to write once the writer is free.
    dirty: bool,
}

impl Store {
    /// A store for `path`; its writer (started now when there is a path)
    /// wakes the loop through `waker` when a job is done.
    pub fn new(path: Option<&Path>, waker: Option<Arc<Waker>>) -> Store {
        let mut store = Store {
            path: path.map(Path::to_path_buf),
            waker,
            writer: None,
            in_flight: None,
            next_seq: 1,
            dirty: false,
        };
        if store.path.is_some() {
            store.writer = store.start_writer();
        }
        store
    }

    fn start_writer(&self) -> Option<Writer> {
        let (jobs, theirs) = mpsc::channel();
        let (tx, reports) = mpsc::channel();
        let waker = self.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("easyproxy-state".into())
            .spawn(move || {
                // A panic here must not leave changes waiting for ever.
                let body = std::panic::AssertUnwindSafe(|| work(&theirs, &tx, waker.as_deref()));
                if std::panic::catch_unwind(body).is_err() {
                    std::process::abort();
                }
            });
        match spawned {
            Ok(_) => Some(Writer { jobs, reports }),
            Err(e) => {
                log::error!("cannot start the state file writer: {e}");
                None
            }
        }
    }

    /// Whether changes wait for the file (a `state_file` is configured).
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// The path, for messages.
    pub fn path_text(&self) -> String {
        self.path
            .as_deref()
            .map_or_else(|| "-".into(), |p| p.display().to_string())
    }

    /// A reload's `global.state_file`; the file is written again (the
    /// settings of removed backends go, a new path gets the file).
    pub fn set_path(&mut self, path: Option<&Path>) {
        self.path = path.map(Path::to_path_buf);
        self.dirty = self.path.is_some();
    }

    /// Start: reads the file on the writer thread, waiting `wait` at most.
    /// A missing file is nothing; a foreign, unreadable or slow one is a
    /// warning (and a foreign one is never written over).
    pub fn load(&mut self, wait: Duration) -> Saved {
        let Some(path) = self.path.clone() else {
            return Saved(None);
        };
        let seq = self.next_seq;
        let Some(writer) = self.writer.as_ref() else {
            return Saved(None);
        };
        self.next_seq += 1;
        if writer
            .jobs
            .send(Job::Read {
                seq,
                path: path.clone(),
            })
            .is_err()
        {
            return Saved(None);
        }
        let shown = path.display();
        match writer.reports.recv_timeout(wait) {
            Ok(Report::Read(_, Ok(file))) => Saved(file),
            Ok(Report::Read(_, Err(e @ Problem::Foreign(_)))) => {
                log::warn!(
                    "state file {shown}: {e}; admin state and weight changes are refused (503) \
                     while state_file names it"
                );
                Saved(None)
            }
            Ok(Report::Read(_, Err(e))) => {
                log::warn!("state file {shown}: {e}; its settings are not restored");
                Saved(None)
            }
            Ok(Report::Written(..)) => Saved(None),
            Err(_) => {
                log::warn!(
                    "state file {shown}: not read within {} s (a hung mount?); starting without its settings, \
                     admin changes are refused (503) until the read finishes",
                    wait.as_secs()
                );
                self.in_flight = Some(InFlight {
                    seq,
                    since: Instant::now(),
                    given_up: true,
                    write: false,
                });
                Saved(None)
            }
        }
    }

    /// Whether a job is with the writer (a new write waits).
    pub fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Whether the writer is stuck in a job given up on: changes are
    /// refused until it reports.
    pub fn stuck(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.given_up)
    }

    /// Hands `bytes` to the writer for the configured path; its number.
    /// The writer must be free ([`Self::busy`] false). The dirty mark goes:
    /// `bytes` are made from the settings as they are now.
    pub fn write(&mut self, bytes: Vec<u8>, now: Instant) -> Result<u64, String> {
        let Some(path) = self.path.clone() else {
            return Err("no state_file".into());
        };
        if self.writer.is_none() {
            self.writer = self.start_writer();
        }
        let seq = self.next_seq;
        let sent = self
            .writer
            .as_ref()
            .is_some_and(|w| w.jobs.send(Job::Write { seq, path, bytes }).is_ok());
        if !sent {
            self.writer = None;
            return Err(format!("state file {}: no writer thread", self.path_text()));
        }
        self.next_seq += 1;
        self.dirty = false;
        self.in_flight = Some(InFlight {
            seq,
            since: now,
            given_up: false,
            write: true,
        });
        Ok(seq)
    }

    /// Whether the settings are to be written without a change waiting.
    pub fn dirty(&self) -> bool {
        self.dirty && self.path.is_some()
    }

    /// The writes finished since the last call (the waker fired). A job
    /// given up on that finishes is logged, not returned; if it was a
    /// write, the settings are marked to be written again.
    pub fn reports(&mut self, now: Instant) -> Vec<Done> {
        let mut done = Vec::new();
        let Some(writer) = self.writer.as_ref() else {
            return done;
        };
        while let Ok(report) = writer.reports.try_recv() {
            let (seq, result) = match report {
                Report::Read(seq, r) => (seq, r.map(|_| ()).map_err(|e| e.to_string())),
                Report::Written(seq, r) => (seq, r),
            };
            let Some(job) = self.in_flight.take_if(|f| f.seq == seq) else {
                continue;
            };
            let shown = self
                .path
                .as_deref()
                .map_or_else(|| "-".into(), |p| p.display().to_string());
            if let Err(e) = &result {
                log::error!("state file {shown}: {e}");
            }
            if job.given_up {
                let took = now.saturating_duration_since(job.since).as_secs();
                log::warn!(
                    "state file {shown}: the {} given up on finished after {took} s; admin changes are taken again",
                    if job.write { "write" } else { "read" }
                );
                self.dirty |= job.write;
            } else {
                done.push(Done { seq, result });
            }
        }
        done
    }

    /// When the write with the writer is due, if one is and has not been
    /// given up on.
    pub fn deadline(&self) -> Option<Instant> {
        self.in_flight
            .as_ref()
            .filter(|f| !f.given_up)
            .map(|f| f.since + WRITE_WAIT)
    }

    /// Gives up on the job with the writer if its deadline has passed, or
    /// (`force`) at once: the loop refuses changes until it reports.
    pub fn give_up(&mut self, now: Instant, force: bool) {
        let shown = self.path_text();
        let Some(f) = self.in_flight.as_mut().filter(|f| !f.given_up) else {
            return;
        };
        if force || now >= f.since + WRITE_WAIT {
            f.given_up = true;
            log::error!(
                "state file {shown}: a write has not finished in {} s (a slow or hung disk?); \
                 admin changes are refused until it does",
                now.saturating_duration_since(f.since).as_secs()
            );
        }
    }

    /// Exit: waits (briefly) for the write with the writer, then writes
    /// what is marked to be written.
    pub fn finish(&mut self, state: &State) {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            if self.stuck() {
                log::warn!(
                    "state file {}: the writer is stuck; the last settings may not be written",
                    self.path_text()
                );
                return;
            }
            if !self.busy() {
                if !self.dirty() {
                    return;
                }
                if self.write(contents(state, None), Instant::now()).is_err() {
                    return;
                }
            }
            let Some(writer) = self.writer.as_ref() else { return };
            let left = deadline.saturating_duration_since(Instant::now());
            let report = match writer.reports.recv_timeout(left) {
                Ok(r) => r,
                Err(_) => {
                    log::warn!(
                        "state file {}: the last change may not be written (the disk is slow)",
                        self.path_text()
                    );
                    return;
                }
            };
            if let Report::Written(seq, Err(e)) = &report {
                if self.in_flight.as_ref().is_some_and(|f| f.seq == *seq) {
                    log::error!("state file {}: {e}", self.path_text());
                }
            }
            let seq = match report {
                Report::Read(s, _) | Report::Written(s, _) => s,
            };
            self.in_flight.take_if(|f| f.seq == seq);
        }
    }
}

/// The writer thread: one job at a time, each reported and the loop woken.
fn work(jobs: &Receiver<Job>, reports: &Sender<Report>, waker: Option<&Waker>) {
    for job in jobs {
        let report = match job {
            Job::Read { seq, path } => Report::Read(seq, inspect(&path)),
            Job::Write { seq, path, bytes } => Report::Written(seq, write_checked(&path, &bytes)),
        };
        if reports.send(report).is_err() {
            return;
        }
        if let Some(w) = waker {
            let _ = w.wake();
        }
    }
}

/// Replaces `path` with `bytes` unless it is something other than a state
/// file; the error says why, naming the file.
fn write_checked(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    inspect(path).map_err(|e| format!("{shown}: {e}"))?;
    write_atomically(path, bytes).map_err(|e| format!("{shown}: cannot write it: {e}"))
}

/// The temporary file `path` is written to before the rename.
pub fn temp_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    Some(dir_of(path).join(format!(".{}.tmp", name.to_string_lossy())))
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes a fresh temporary file next to `path` (a stale one, whatever it
/// is, removed first; created exclusively, mode 0600, no symbolic link
/// followed), syncs it, renames it over `path` and syncs the directory:
/// a reader sees the old file or the new one, and after `Ok` the new one
/// survives a crash.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path).ok_or_else(|| io::Error::other("no file name"))?;
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself reaches the disk with the directory.
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir_of(path))?;
    dir.sync_all()
}

#[cfg(test)]
mod tests;
