//! Admin API, persistence: admin states and runtime weights kept in `global.state_file`, read at start and replaced atomically on each change by a writer thread, so the loop never waits on the disk.

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::balance::AdminState;
use crate::state::State;

/// The format's version, also what tells the file from a foreign one.
const VERSION: u32 = 1;
/// Largest state file read.
const MAX_SIZE: u64 = 16 * 1024 * 1024;
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

/// The state file, if one is configured, and its writer.
#[derive(Default)]
pub struct Store {
    path: Option<PathBuf>,
    writer: Option<Writer>,
}

impl Store {
    pub fn new(path: Option<&Path>) -> Store {
        Store {
            path: path.map(Path::to_path_buf),
            writer: None,
        }
    }

    /// A reload's `global.state_file`.
    pub fn set_path(&mut self, path: Option<&Path>) {
        self.path = path.map(Path::to_path_buf);
    }

    /// Start: applies the file's settings to the backends still configured.
    /// A missing file is nothing; a corrupt or foreign one is a warning.
    pub fn restore(&self, state: &mut State) {
        let Some(path) = &self.path else { return };
        match read(path) {
            Ok(None) => {}
            Ok(Some(file)) => {
                let restored = apply(file, state);
                if !restored.is_empty() {
                    log::info!("state file {}: restored {}", path.display(), restored.join(", "));
                    state.changed();
                }
            }
            Err(e) => log::warn!("state file {}: {e}; ignored", path.display()),
        }
    }

    /// Hands the current settings to the writer (the latest replaces one
    /// not yet written). Nothing without a state file.
    pub fn save(&mut self, state: &State) {
        let Some(path) = self.path.clone() else { return };
        let file = StateFile {
            easyproxy_state: VERSION,
            backends: entries(state),
        };
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        if self.writer.is_none() {
            self.writer = Writer::start();
        }
        match &self.writer {
            Some(w) => w.put(path, bytes),
            None => log::error!("state file {}: no writer thread; not written", path.display()),
        }
    }

    /// Exit: waits (briefly) for the last write.
    pub fn finish(&mut self) {
        if let Some(w) = self.writer.take() {
            w.finish(Instant::now() + EXIT_WAIT);
        }
    }
}

/// The backends with a non-default admin state or weight, in file order.
fn entries(state: &State) -> Vec<Entry> {
    let mut out = Vec::new();
    for (_, svc) in state.services.iter().filter(|(_, s)| !s.removed) {
        let bal = &svc.balancer;
        for b in bal.order().iter().filter_map(|&k| bal.backends.get(k)) {
            if b.admin != AdminState::Ready || b.weight_override.is_some() {
                out.push(Entry {
                    service: svc.cfg.name.clone(),
                    backend: b.cfg.address.clone(),
                    admin_state: b.admin.as_str().to_string(),
                    weight: b.weight_override,
                });
            }
        }
    }
    out
}

/// The file, `None` when there is none.
fn read(path: &Path) -> Result<Option<StateFile>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(format!("larger than {} MiB", MAX_SIZE >> 20));
    }
    let file: StateFile = serde_json::from_slice(&bytes).map_err(|e| format!("not an easyproxy state file ({e})"))?;
    if file.easyproxy_state != VERSION {
        return Err(format!("unknown format version {}", file.easyproxy_state));
    }
    Ok(Some(file))
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

/// The next file to write, handed from the loop to the writer thread.
#[derive(Default)]
struct Slot {
    next: Option<(PathBuf, Vec<u8>)>,
    busy: bool,
    stop: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A thread that writes the latest settings; the loop only swaps a buffer
/// under a lock the writer never holds while writing.
struct Writer {
    shared: Arc<Shared>,
}

impl Writer {
    fn start() -> Option<Writer> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            cv: Condvar::new(),
        });
        let theirs = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("easyproxy-state".into())
            .spawn(move || write_loop(&theirs));
        match spawned {
            Ok(_) => Some(Writer { shared }),
            Err(e) => {
                log::error!("cannot start the state file writer: {e}");
                None
            }
        }
    }

    fn put(&self, path: PathBuf, bytes: Vec<u8>) {
        self.shared.lock().next = Some((path, bytes));
        self.shared.cv.notify_all();
    }

    /// Stops the thread once what is queued is written, waiting until
    /// `deadline` at most.
    fn finish(self, deadline: Instant) {
        let mut slot = self.shared.lock();
        slot.stop = true;
        self.shared.cv.notify_all();
        while slot.next.is_some() || slot.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("state file: the last change may not be written (the disk is slow)");
                return;
            }
            slot = match self.shared.cv.wait_timeout(slot, left) {
                Ok((s, _)) => s,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

fn write_loop(shared: &Shared) {
    let mut slot = shared.lock();
    loop {
        if let Some((path, bytes)) = slot.next.take() {
            slot.busy = true;
            drop(slot);
            if let Err(e) = write_atomically(&path, &bytes) {
                log::error!("state file {}: cannot write it: {e}", path.display());
            }
            slot = shared.lock();
            slot.busy = false;
            shared.cv.notify_all();
        } else if slot.stop {
            return;
        } else {
            slot = shared.cv.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Writes a temporary file next to `path`, syncs it and renames it over
/// `path`: a reader sees the old file or the new one, never a mix.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| io::Error::other("no file name"))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
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
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests;
