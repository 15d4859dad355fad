//! One HTTP exchange on a socket, for the stats and admin listeners: input read up to a cap, the answer written within the turn's budget, unread input drained, and which slot to give up first.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::budget::Budget;
use super::cache::Answer;
use crate::io::pump::{self, Flush};
use crate::timer::{TimerKind, Timers};

/// After answering, how long and how much unread input is drained before
/// closing (so the client sees the answer rather than a reset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// How long a connection keeps its slot, at least, while its request is
/// still incomplete (slow, not yet hostile).
pub(crate) const EVICT_MIN_AGE: Duration = Duration::from_millis(200);

/// A socket an exchange runs on: TCP or unix.
pub(crate) trait Stream: Read + Write {
    /// Shuts the write half (the answer is complete).
    fn shutdown_write(&self);
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl Stream for mio::net::UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Where a connection is in its one exchange.
pub(crate) enum Stage {
    /// Reading the request.
    Reading,
    /// The request is taken; its answer comes later (an admin reload).
    Parked,
    /// Writing the answer.
    Writing,
    /// Answer sent, write side shut: discarding input (bytes so far) until
    /// the client closes.
    Draining(usize),
}

/// `Err` means: close this connection now.
pub(crate) type Step<T = ()> = Result<T, ()>;

/// Where a step left the connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Handed over to the next stage (internal to a step).
    Next,
    /// Waits for readiness (or, parked, for its answer).
    Wait,
    /// This turn's budget ran out: step it again next turn (no readiness
    /// event will come for what it already has).
    Yield,
}

/// A client of a stats or admin listener, from accept to close.
pub(crate) struct Wire<S> {
    /// Tells this connection's timer entries from those of an earlier
    /// connection in the same slot.
    pub(crate) id: u64,
    pub(crate) stream: S,
    pub(crate) stage: Stage,
    /// What was read of the request.
    pub(crate) input: Vec<u8>,
    /// The answer (shared with other connections sending the same one) and
    /// how many of its bytes to send.
    out: Arc<[u8]>,
    out_len: usize,
    written: usize,
    pub(crate) accepted: Instant,
    /// When the connection is closed: the request and answer deadline,
    /// then the end of draining.
    pub(crate) deadline: Instant,
    /// Waiting in its server's queue for the next turn's budget.
    pub(crate) queued: bool,
}

impl<S: Stream> Wire<S> {
    pub(crate) fn new(id: u64, stream: S, now: Instant, deadline: Instant) -> Wire<S> {
        Wire {
            id,
            stream,
            stage: Stage::Reading,
            input: Vec::new(),
            out: Arc::from(&b""[..]),
            out_len: 0,
            written: 0,
            accepted: now,
            deadline,
            queued: false,
        }
    }

    /// Reads what is there into `input`, keeping at most one byte more
    /// than `cap` (enough to tell it is too large). `Ok(true)` at end of input.
    pub(crate) fn read_input(&mut self, cap: usize, budget: &mut Budget) -> Step<bool> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(n) => {
                    budget.spend_bytes(n);
                    let room = (cap + 1).saturating_sub(self.input.len());
                    self.input.extend(buf.iter().take(n.min(room)));
                    if self.input.len() > cap {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
    }

    /// The answer to send (its head only when `head_only`); the request is
    /// dropped.
    pub(crate) fn send(&mut self, answer: &Answer, head_only: bool) {
        (self.out, self.out_len) = answer.to_send(head_only);
        self.written = 0;
        self.input = Vec::new();
        self.stage = Stage::Writing;
    }

    /// Writes the answer and drains, as far as the socket and the budget
    /// go; a reading or parked connection waits. `timer` is the entry the
    /// end of draining is armed with.
    pub(crate) fn step_out(
        &mut self,
        budget: &mut Budget,
        timers: &mut Timers,
        now: Instant,
        timer: TimerKind,
    ) -> Step<Progress> {
        loop {
            let progress = match self.stage {
                Stage::Reading | Stage::Parked => return Ok(Progress::Wait),
                Stage::Writing => self.write_answer(budget, timers, now, timer)?,
                Stage::Draining(_) => self.drain(budget)?,
            };
            if progress != Progress::Next {
                return Ok(progress);
            }
        }
    }

    /// Writes the answer, at most what the turn's budget has left; once it
    /// is out, half-closes and starts draining.
    fn write_answer(
        &mut self,
        budget: &mut Budget,
        timers: &mut Timers,
        now: Instant,
        timer: TimerKind,
    ) -> Step<Progress> {
        let end = self.out_len.min(self.written.saturating_add(budget.bytes_left()));
        let chunk = self.out.get(self.written..end).unwrap_or_default();
        if chunk.is_empty() && self.written < self.out_len {
            return Ok(Progress::Yield);
        }
        let (n, r) = pump::write_all_nb(chunk, &mut self.stream);
        self.written += n;
        budget.spend_bytes(n);
        match r {
            Ok(Flush::Drained) if self.written >= self.out_len => {
                self.stream.shutdown_write();
                self.out = Arc::from(&b""[..]);
                self.stage = Stage::Draining(0);
                self.deadline = now + DRAIN_TIMEOUT;
                timers.add(self.deadline, timer);
                Ok(Progress::Next)
            }
            Ok(Flush::Drained) => Ok(Progress::Yield),
            Ok(Flush::WouldBlock) => Ok(Progress::Wait),
            Err(_) => Err(()),
        }
    }

    /// Discards input until the client closes (then `Err`: close), up to
    /// DRAIN_LIMIT bytes, at most what the turn's budget has left.
    fn drain(&mut self, budget: &mut Budget) -> Step<Progress> {
        let Stage::Draining(drained) = &mut self.stage else {
            return Ok(Progress::Next);
        };
        let mut buf = [0u8; 16 * 1024];
        loop {
            let room = buf.len().min(budget.bytes_left());
            let Some(buf) = buf.get_mut(..room).filter(|b| !b.is_empty()) else {
                return Ok(Progress::Yield);
            };
            match self.stream.read(buf) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    *drained += n;
                    budget.spend_bytes(n);
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

/// The slot to give up when all are taken: a connection already answered
/// (draining), else the oldest one that has had its slot for
/// EVICT_MIN_AGE without a complete request, else the oldest that has not
/// taken its answer in that time. A parked one is never given up.
pub(crate) fn victim<'a, S: 'a>(
    conns: impl Iterator<Item = (usize, &'a Wire<S>)> + Clone,
    now: Instant,
) -> Option<usize> {
    let stale = |w: &Wire<S>| now.saturating_duration_since(w.accepted) >= EVICT_MIN_AGE;
    let oldest = |pick: &dyn Fn(&Wire<S>) -> bool| {
        conns
            .clone()
            .filter(|(_, w)| pick(w))
            .min_by_key(|(_, w)| (w.accepted, w.id))
            .map(|(k, _)| k)
    };
    oldest(&|w| matches!(w.stage, Stage::Draining(_)))
        .or_else(|| oldest(&|w| matches!(w.stage, Stage::Reading) && stale(w)))
        // A client that does not read its answer holds the slot no
        // longer than one that does not send its request.
        .or_else(|| oldest(&|w| matches!(w.stage, Stage::Writing) && stale(w)))
}

/// The slot a client at its per-address cap gives up for its own new
/// connection: one of its connections already answered, else its oldest
/// without a complete request however young (its new one is as likely to
/// be the slow one, and waiting would leave the listener to it), else its
/// oldest that has not taken its answer in EVICT_MIN_AGE. A parked one is
/// never given up.
pub(crate) fn own_victim<'a, S: 'a>(
    conns: impl Iterator<Item = (usize, &'a Wire<S>)> + Clone,
    now: Instant,
) -> Option<usize> {
    let stale = |w: &Wire<S>| now.saturating_duration_since(w.accepted) >= EVICT_MIN_AGE;
    let oldest = |pick: &dyn Fn(&Wire<S>) -> bool| {
        conns
            .clone()
            .filter(|(_, w)| pick(w))
            .min_by_key(|(_, w)| (w.accepted, w.id))
            .map(|(k, _)| k)
    };
    oldest(&|w| matches!(w.stage, Stage::Draining(_)))
        .or_else(|| oldest(&|w| matches!(w.stage, Stage::Reading)))
        .or_else(|| oldest(&|w| matches!(w.stage, Stage::Writing) && stale(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(id: u64, stage: Stage, age_ms: u64, now: Instant) -> Wire<()> {
        let accepted = now - Duration::from_millis(age_ms);
        Wire {
            id,
            stream: (),
            stage,
            input: Vec::new(),
            out: Arc::from(&b""[..]),
            out_len: 0,
            written: 0,
            accepted,
            deadline: now,
            queued: false,
        }
    }

    #[test]
    fn an_address_at_its_cap_gives_up_its_own_oldest_however_young() {
        let now = Instant::now();
        let pick = |conns: &[Wire<()>]| own_victim(conns.iter().enumerate(), now);
        // Young, incomplete: the oldest goes (the same age: the first accepted).
        let young = [wire(2, Stage::Reading, 1, now), wire(1, Stage::Reading, 1, now)];
        assert_eq!(pick(&young), Some(1));
        assert_eq!(victim(young.iter().enumerate(), now), None, "not for another address");
        // One that is done goes first; parked ones never; a young writer stays.
        let mixed = [
            wire(1, Stage::Parked, 900, now),
            wire(2, Stage::Writing, 5, now),
            wire(3, Stage::Reading, 5, now),
            wire(4, Stage::Draining(0), 1, now),
        ];
        assert_eq!(pick(&mixed), Some(3));
        let busy = [wire(1, Stage::Parked, 900, now), wire(2, Stage::Writing, 5, now)];
        assert_eq!(pick(&busy), None, "the new connection is closed instead");
        let slow_reader = [wire(1, Stage::Parked, 900, now), wire(2, Stage::Writing, 300, now)];
        assert_eq!(pick(&slow_reader), Some(1));
    }
}
