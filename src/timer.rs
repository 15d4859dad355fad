//! The deadlines that drive the poll timeout: connect and idle timeouts,
//! probe schedules, the shutdown deadline, accept back-off. No timer thread:
//! the loop sleeps until the earliest one and then pops what has expired.
//!
//! Entries are never cancelled; each names what it is for (with the owner's
//! generation id) and the owner decides, when it fires, whether it still
//! matters. That keeps arming O(log n) and cancelling free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// A pair's connect or idle deadline (pair key, pair id).
    Pair(usize, u64),
    /// A health probe's deadline, or the resumption of a check that used
    /// up its budget (probe key, entry tag).
    Probe(usize, u64),
    /// A stats connection's idle deadline (connection key, id).
    StatsConn(usize, u64),
    /// An admin connection's deadline (connection key, id).
    AdminConn(usize, u64),
    /// Accepting may resume after running out of file descriptors.
    AcceptRetry,
    /// A configuration read's deadline (read generation).
    ReloadRead(u64),
    /// The graceful-stop deadline.
    Shutdown,
}

/// A min-heap of deadlines.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, TimerKind)>>,
    seq: u64,
}

impl Timers {
    pub fn add(&mut self, when: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse((when, self.seq, kind)));
    }

    /// The earliest deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((when, _, _))| *when)
    }

    /// Pops one entry due at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, TimerKind)> {
        match self.heap.peek() {
            Some(Reverse((when, _, _))) if *when <= now => self.heap.pop().map(|Reverse((w, _, k))| (w, k)),
            _ => None,
        }
    }

    /// Drops the entries `keep` says are stale. Entries are never cancelled
    /// one by one, so a long deadline (an hour of idle timeout) of a pair
    /// that closed long before would otherwise stay until it expires.
    pub fn retain(&mut self, mut keep: impl FnMut(Instant, &TimerKind) -> bool) {
        self.heap.retain(|Reverse((when, _, kind))| keep(*when, kind));
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order() {
        let t = Instant::now();
        let mut timers = Timers::default();
        timers.add(t + Duration::from_millis(30), TimerKind::Shutdown);
        timers.add(t + Duration::from_millis(10), TimerKind::Pair(1, 1));
        timers.add(t + Duration::from_millis(20), TimerKind::AcceptRetry);
        assert_eq!(timers.next_deadline(), Some(t + Duration::from_millis(10)));
        assert!(timers.pop_expired(t).is_none());
        let now = t + Duration::from_millis(25);
        assert_eq!(timers.pop_expired(now).unwrap().1, TimerKind::Pair(1, 1));
        assert_eq!(timers.pop_expired(now).unwrap().1, TimerKind::AcceptRetry);
        assert!(timers.pop_expired(now).is_none());
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn retain_drops_stale_entries() {
        let t = Instant::now();
        let mut timers = Timers::default();
        for i in 0..10 {
            timers.add(t + Duration::from_secs(3600), TimerKind::Pair(i, i as u64));
        }
        timers.add(t, TimerKind::Shutdown);
        timers.retain(|_, k| !matches!(k, TimerKind::Pair(i, _) if i % 2 == 1));
        assert_eq!(timers.len(), 6);
        assert_eq!(timers.pop_expired(t).unwrap().1, TimerKind::Shutdown);
    }
}
