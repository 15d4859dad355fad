//! One stats connection: read the request head, write the answer, drain, close.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::budget::Work;
use super::cache::{Answer, View};
use super::http::{self, Reply, MAX_HEAD};
use crate::io::pump::{self, Flush};
use crate::timer::TimerKind;

/// After answering, how long and how much unread input is drained before
/// closing (so the client sees the answer rather than a reset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;

/// Where a connection is in its one exchange.
pub(super) enum Stage {
    /// Reading the request head.
    Reading,
    /// Writing the answer.
    Writing,
    /// Answer sent, write side shut: discarding input (bytes so far) until
    /// the client closes.
    Draining(usize),
}

/// A stats client, from accept to close.
pub(super) struct Conn {
    /// Tells this connection's timer entries from those of an earlier
    /// connection in the same slot.
    pub(super) id: u64,
    stream: TcpStream,
    pub(super) stage: Stage,
    head: Vec<u8>,
    /// The answer (shared with other connections sending the same one) and
    /// how many of its bytes to send.
    out: Arc<[u8]>,
    out_len: usize,
    written: usize,
    pub(super) accepted: Instant,
    /// When the connection is closed: the request and answer deadline,
    /// then the end of draining.
    pub(super) deadline: Instant,
    /// Waiting in the server's queue for the next turn's budget.
    pub(super) queued: bool,
}

/// `Err` means: close this connection now.
type Step<T = ()> = Result<T, ()>;

/// Where a step left the connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Handed over to the next stage (internal to `step`).
    Next,
    /// Waits for readiness.
    Wait,
    /// This turn's budget ran out: step it again next turn (no readiness
    /// event will come for what it already has).
    Yield,
}

impl Conn {
    pub(super) fn new(id: u64, stream: TcpStream, now: Instant, deadline: Instant) -> Conn {
        Conn {
            id,
            stream,
            stage: Stage::Reading,
            head: Vec::new(),
            out: Arc::from(&b""[..]),
            out_len: 0,
            written: 0,
            accepted: now,
            deadline,
            queued: false,
        }
    }

    /// Runs the stages as far as the socket and the turn's budget allow
    /// (`key`: its slot, named in its timer entries): `Wait` or `Yield`.
    pub(super) fn step(&mut self, w: &mut Work<'_, '_>, key: usize) -> Step<Progress> {
        loop {
            let progress = match self.stage {
                Stage::Reading => self.read_request(w)?,
                Stage::Writing => self.write_answer(w, key)?,
                Stage::Draining(_) => self.drain(w)?,
            };
            if progress != Progress::Next {
                return Ok(progress);
            }
        }
    }

    /// Reads the request head; once it is complete (or cannot be), the
    /// answer is ready to write.
    fn read_request(&mut self, w: &mut Work<'_, '_>) -> Step<Progress> {
        if w.budget.spent() {
            return Ok(Progress::Yield);
        }
        let eof = self.read_head(w)?;
        let (answer, head_only) = match http::reply(&self.head, eof) {
            Reply::Wait => return Ok(Progress::Wait),
            Reply::Close => return Err(()),
            Reply::Send(answer, head_only) => (answer, head_only),
            Reply::View(view, head_only) => match view_answer(view, w) {
                Some(answer) => (answer, head_only),
                None => return Ok(Progress::Yield),
            },
        };
        w.budget.spend_request();
        (self.out, self.out_len) = answer.to_send(head_only);
        self.head = Vec::new();
        self.stage = Stage::Writing;
        Ok(Progress::Next)
    }

    /// Reads what is there into `head`, keeping at most one byte more than
    /// MAX_HEAD (enough to tell it is too large). `Ok(true)` at end of input.
    fn read_head(&mut self, w: &mut Work<'_, '_>) -> Step<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    w.budget.spend_bytes(n);
                    let room = (MAX_HEAD + 1).saturating_sub(self.head.len());
                    self.head.extend(buf.iter().take(n.min(room)));
                    if self.head.len() > MAX_HEAD {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// Writes the answer, at most what the turn's budget has left; once it
    /// is out, half-closes and starts draining.
    fn write_answer(&mut self, w: &mut Work<'_, '_>, key: usize) -> Step<Progress> {
        let end = self.out_len.min(self.written.saturating_add(w.budget.bytes_left()));
        let chunk = self.out.get(self.written..end).unwrap_or_default();
        if chunk.is_empty() && self.written < self.out_len {
            return Ok(Progress::Yield);
        }
        let (n, r) = pump::write_all_nb(chunk, &mut self.stream);
        self.written += n;
        w.budget.spend_bytes(n);
        match r {
            Ok(Flush::Drained) if self.written >= self.out_len => {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.out = Arc::from(&b""[..]);
                self.stage = Stage::Draining(0);
                self.deadline = w.now + DRAIN_TIMEOUT;
                w.timers.add(self.deadline, TimerKind::StatsConn(key, self.id));
                Ok(Progress::Next)
            }
            Ok(Flush::Drained) => Ok(Progress::Yield),
            Ok(Flush::WouldBlock) => Ok(Progress::Wait),
            Err(_) => Err(()),
        }
    }

    /// Discards input until the client closes (then `Err`: close), up to
    /// DRAIN_LIMIT bytes, at most what the turn's budget has left.
    fn drain(&mut self, w: &mut Work<'_, '_>) -> Step<Progress> {
        let Stage::Draining(drained) = &mut self.stage else {
            return Ok(Progress::Next);
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            let room = buf.len().min(w.budget.bytes_left());
            let Some(buf) = buf.get_mut(..room).filter(|b| !b.is_empty()) else {
                return Ok(Progress::Yield);
            };
            match self.stream.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    *drained += n;
                    w.budget.spend_bytes(n);
                    if *drained > DRAIN_LIMIT {
                        return Err(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Progress::Wait),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }
}

/// The answer of `view`: the shared one while it is fresh, else rendered
/// now if this turn may still render (`None`: not this turn).
fn view_answer(view: View, w: &mut Work<'_, '_>) -> Option<Answer> {
    let changes = w.src.state.changes;
    if let Some(answer) = w.cache.get(view, changes, w.now) {
        return Some(answer);
    }
    if !w.budget.take_render() {
        return None;
    }
    let answer = http::render(view, w.src, w.now);
    log::trace!("stats: rendered {view:?}, {} bytes", answer.len());
    w.cache.put(view, changes, w.now, answer.clone());
    Some(answer)
}
