//! What stats may do in one loop turn: bytes moved, requests answered and views rendered; past that it yields to the next turn.

use std::collections::VecDeque;
use std::time::Instant;

use slab::Slab;

use super::cache::Cache;
use super::conn::{self, Conn};
use super::wire::Progress;
use super::Source;
use crate::timer::Timers;

/// Bytes read and written on stats connections per loop turn.
pub(super) const BYTES_PER_TURN: usize = 256 * 1024;
/// Requests answered per loop turn.
pub(super) const REQUESTS_PER_TURN: u32 = 32;
/// Views rendered per loop turn (a render is O(backends)).
pub(super) const RENDERS_PER_TURN: u32 = 1;

/// What this turn has used. The loop passes one `now` per turn, so a new
/// `now` starts a fresh budget.
#[derive(Default)]
pub(crate) struct Budget {
    turn: Option<Instant>,
    bytes: usize,
    requests: u32,
    renders: u32,
}

impl Budget {
    /// Starts the budget of the turn at `now` unless it is already running.
    pub(crate) fn begin(&mut self, now: Instant) {
        if self.turn != Some(now) {
            *self = Budget {
                turn: Some(now),
                ..Budget::default()
            };
        }
    }

    pub(crate) fn bytes_left(&self) -> usize {
        BYTES_PER_TURN.saturating_sub(self.bytes)
    }

    pub(crate) fn spend_bytes(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n);
    }

    pub(crate) fn requests_left(&self) -> bool {
        self.requests < REQUESTS_PER_TURN
    }

    pub(crate) fn spend_request(&mut self) {
        self.requests += 1;
    }

    /// Takes one render, if any is left.
    pub(crate) fn take_render(&mut self) -> bool {
        let ok = self.renders < RENDERS_PER_TURN;
        if ok {
            self.renders += 1;
        }
        ok
    }

    /// Nothing left that a connection step could use.
    pub(crate) fn spent(&self) -> bool {
        self.bytes_left() == 0 || !self.requests_left()
    }
}

/// What a connection step works with: the proxy to read, the shared
/// answers, this turn's budget, the timers and the turn's time.
pub(super) struct Work<'a, 'b> {
    pub(super) src: &'a Source<'b>,
    pub(super) cache: &'a mut Cache,
    pub(super) budget: &'a mut Budget,
    pub(super) timers: &'a mut Timers,
    pub(super) now: Instant,
}

/// Connections waiting for the next turn's budget: (slot, connection id).
pub(super) type Queue = VecDeque<(usize, u64)>;

/// Steps connection `key`: closed on error, queued when this turn's budget
/// ran out. `true` when it was closed.
pub(super) fn drive(conns: &mut Slab<Conn>, queue: &mut Queue, key: usize, w: &mut Work<'_, '_>) -> bool {
    let Some(conn) = conns.get_mut(key) else { return false };
    match conn::step(conn, w, key) {
        Ok(Progress::Yield) => {
            enqueue(conns, queue, key);
            false
        }
        Ok(_) => false,
        Err(()) => {
            conns.remove(key);
            true
        }
    }
}

/// Puts connection `key` at the back of the queue, unless it is in it.
pub(super) fn enqueue(conns: &mut Slab<Conn>, queue: &mut Queue, key: usize) {
    if let Some(conn) = conns.get_mut(key).filter(|c| !c.queued) {
        conn.queued = true;
        queue.push_back((key, conn.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_new_turn_starts_a_fresh_budget() {
        let now = Instant::now();
        let mut b = Budget::default();
        b.begin(now);
        assert!(b.take_render());
        assert!(!b.take_render(), "one render per turn");
        b.spend_bytes(BYTES_PER_TURN);
        assert!(b.spent() && b.bytes_left() == 0);
        b.begin(now);
        assert!(b.spent(), "same turn, same budget");
        b.begin(now + Duration::from_nanos(1));
        assert!(!b.spent() && b.take_render());
        for _ in 0..REQUESTS_PER_TURN {
            b.spend_request();
        }
        assert!(b.spent());
    }
}
