//! One stats connection: read the request head, write the answer, drain, close.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use super::http::{self, Reply, MAX_HEAD};
use super::Source;
use crate::io::pump::{self, Flush};
use crate::timer::{TimerKind, Timers};

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
    out: Vec<u8>,
    written: usize,
    pub(super) accepted: Instant,
    /// When the connection is closed: the request and answer deadline,
    /// then the end of draining.
    pub(super) deadline: Instant,
}

/// `Err` means: close this connection now.
type Step<T = ()> = Result<T, ()>;

/// What a stage did: handed over to the next stage, or waits for readiness.
enum Progress {
    Next,
    Wait,
}

impl Conn {
    pub(super) fn new(id: u64, stream: TcpStream, now: Instant, deadline: Instant) -> Conn {
        Conn {
            id,
            stream,
            stage: Stage::Reading,
            head: Vec::new(),
            out: Vec::new(),
            written: 0,
            accepted: now,
            deadline,
        }
    }

    /// Runs the stages as far as the socket allows (`key`: its slot, named
    /// in its timer entries).
    pub(super) fn step(&mut self, src: &Source<'_>, timers: &mut Timers, key: usize, now: Instant) -> Step {
        loop {
            let progress = match self.stage {
                Stage::Reading => self.read_request(src, now)?,
                Stage::Writing => self.write_answer(timers, key, now)?,
                Stage::Draining(_) => self.drain()?,
            };
            if let Progress::Wait = progress {
                return Ok(());
            }
        }
    }

    /// Reads the request head; once it is complete (or cannot be), the
    /// answer is ready to write.
    fn read_request(&mut self, src: &Source<'_>, now: Instant) -> Step<Progress> {
        let eof = self.read_head()?;
        match http::reply(&self.head, eof, src, now) {
            Reply::Wait => Ok(Progress::Wait),
            Reply::Close => Err(()),
            Reply::Send(out) => {
                self.out = out;
                self.stage = Stage::Writing;
                Ok(Progress::Next)
            }
        }
    }

    /// Reads what is there into `head`, keeping at most one byte more than
    /// MAX_HEAD (enough to tell it is too large). `Ok(true)` at end of input.
    fn read_head(&mut self) -> Step<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
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

    /// Writes the answer; once it is out, half-closes and starts draining.
    fn write_answer(&mut self, timers: &mut Timers, key: usize, now: Instant) -> Step<Progress> {
        let rest = self.out.get(self.written..).unwrap_or_default();
        let (n, r) = pump::write_all_nb(rest, &mut self.stream);
        self.written += n;
        match r {
            Ok(Flush::Drained) => {
                let _ = self.stream.shutdown(Shutdown::Write);
                self.stage = Stage::Draining(0);
                self.deadline = now + DRAIN_TIMEOUT;
                timers.add(self.deadline, TimerKind::StatsConn(key, self.id));
                Ok(Progress::Next)
            }
            Ok(Flush::WouldBlock) => Ok(Progress::Wait),
            Err(_) => Err(()),
        }
    }

    /// Discards input until the client closes (then `Err`: close), up to
    /// DRAIN_LIMIT bytes.
    fn drain(&mut self) -> Step<Progress> {
        let Stage::Draining(drained) = &mut self.stage else {
            return Ok(Progress::Next);
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    *drained += n;
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
