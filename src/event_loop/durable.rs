//! The loop's side of the state file: with `global.state_file`, an admin
//! change of state or weight is made only once the file holds it.
//!
//! The request is parked; the file as the change would leave it goes to the
//! writer thread (`admin::persist`); when the writer reports the file
//! written, synced and renamed, the change is made and answered 200; when
//! it cannot be written, or not within [`WRITE_WAIT`], the answer is 503
//! and nothing changed. One write at a time: later changes wait in order
//! behind it, and each is written with the ones made before it. Without a
//! state file a change is made and answered at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Proxy;
use crate::admin::command::{self, Change, Ctl};
use crate::admin::persist::{self, WRITE_WAIT};
use crate::admin::Peer;

/// Changes waiting at most (the admin server holds 32 + 32 connections).
const MAX_PARKED: usize = 64;
/// How much longer than its change's deadline a parked connection is kept,
/// so the loop's 503 reaches it.
const HOLD_SLACK: Duration = Duration::from_secs(2);

/// A change waiting for the state file.
struct Waiting {
    key: usize,
    id: u64,
    peer: Peer,
    change: Change,
    /// Answered 503 by then.
    deadline: Instant,
    /// The write it waits for, once handed to the writer.
    seq: Option<u64>,
}

/// The parked changes, oldest first (their deadlines in the same order).
#[derive(Default)]
pub(super) struct Parked(VecDeque<Waiting>);

impl Proxy {
    /// An admin change from the request of connection (`key`, `id`): made
    /// at once without a state file, else parked until the file holds it.
    pub(super) fn admin_change(&mut self, key: usize, id: u64, peer: &Peer, change: Change, now: Instant) {
        if !self.store.enabled() {
            return self.make_change(key, id, peer, &change, now);
        }
        if self.parked.0.len() >= MAX_PARKED {
            let answer = command::refused("too many changes waiting for the state file; try again");
            return self.admin.respond(key, id, &answer, &mut self.timers, now);
        }
        let deadline = now + WRITE_WAIT;
        self.admin.hold(key, id, deadline + HOLD_SLACK, &mut self.timers);
        self.parked.0.push_back(Waiting {
            key,
            id,
            peer: *peer,
            change,
            deadline,
            seq: None,
        });
        self.next_write(now);
    }

    /// Makes `change` and answers it.
    fn make_change(&mut self, key: usize, id: u64, peer: &Peer, change: &Change, now: Instant) {
        let mut ctl = Ctl {
            state: &mut self.state,
            traffic: &mut self.traffic,
            prober: &mut self.prober,
            registry: self.poll.registry(),
            timers: &mut self.timers,
            status: &mut self.status,
            now,
        };
        let answer = command::apply(change, peer, &mut ctl);
        self.admin.respond(key, id, &answer, &mut self.timers, now);
    }

    fn refuse(&mut self, w: &Waiting, why: &str, now: Instant) {
        let (svc, b) = (&w.change.service, &w.change.backend);
        log::warn!("admin: peer={} change of {svc}/{b} refused: {why}", w.peer);
        let answer = command::refused(why);
        self.admin.respond(w.key, w.id, &answer, &mut self.timers, now);
    }

    /// Hands the next write to the writer once it is free: the oldest
    /// parked change with every setting as it is now, else the settings
    /// alone when a reload changed them.
    pub(super) fn next_write(&mut self, now: Instant) {
        if !self.store.enabled() {
            // A reload took `state_file` away: changes are made at once.
            while let Some(w) = self.parked.0.pop_front() {
                self.make_change(w.key, w.id, &w.peer, &w.change, now);
            }
            return;
        }
        if self.store.stuck() {
            let why = format!(
                "state file {}: an earlier write has not finished (a slow or hung disk?); nothing changed",
                self.store.path_text()
            );
            while let Some(w) = self.parked.0.pop_front() {
                self.refuse(&w, &why, now);
            }
            return;
        }
        if self.store.busy() {
            return;
        }
        while let Some(w) = self.parked.0.front() {
            let Some(planned) = w.change.planned(&self.state) else {
                // Its backend went away (a reload) while it waited.
                if let Some(w) = self.parked.0.pop_front() {
                    self.make_change(w.key, w.id, &w.peer, &w.change, now);
                }
                continue;
            };
            let bytes = persist::contents(&self.state, Some(&planned));
            match self.store.write(bytes, now) {
                Ok(seq) => {
                    if let Some(w) = self.parked.0.front_mut() {
                        w.seq = Some(seq);
                    }
                    return;
                }
                Err(e) => {
                    if let Some(w) = self.parked.0.pop_front() {
                        self.refuse(&w, &format!("{e}; nothing changed"), now);
                    }
                }
            }
        }
        if self.store.dirty() {
            let bytes = persist::contents(&self.state, None);
            if let Err(e) = self.store.write(bytes, now) {
                log::error!("{e}");
            }
        }
    }

    /// The writer's waker: a write is done. Its change is made and answered
    /// 200, or refused with 503; the next write goes out.
    pub(super) fn on_state_written(&mut self, now: Instant) {
        for done in self.store.reports(now) {
            if self.parked.0.front().is_none_or(|w| w.seq != Some(done.seq)) {
                // A write with no change waiting (a reload's); logged if it failed.
                continue;
            }
            let Some(w) = self.parked.0.pop_front() else { continue };
            match done.result {
                Ok(()) => self.make_change(w.key, w.id, &w.peer, &w.change, now),
                Err(e) => self.refuse(&w, &format!("state file {e}; nothing changed"), now),
            }
        }
        self.next_write(now);
    }

    /// Every turn: a change past its deadline is refused (and the write it
    /// waits for given up on: the file may end up holding it, so it is
    /// written again once the writer is back); a write with no change
    /// waiting that takes too long is given up on as well.
    pub(super) fn expire_changes(&mut self, now: Instant) {
        let mut expired = false;
        while self.parked.0.front().is_some_and(|w| w.deadline <= now) {
            let Some(w) = self.parked.0.pop_front() else { break };
            if w.seq.is_some() {
                self.store.give_up(now, true);
            }
            let why = format!(
                "state file {}: not written within {} s (a slow or hung disk?); nothing changed",
                self.store.path_text(),
                WRITE_WAIT.as_secs()
            );
            self.refuse(&w, &why, now);
            expired = true;
        }
        if self.store.deadline().is_some_and(|d| d <= now) {
            self.store.give_up(now, false);
            expired = true;
        }
        if expired {
            self.next_write(now);
        }
    }

    /// The next state file deadline, for the poll's timeout.
    pub(super) fn changes_deadline(&self) -> Option<Instant> {
        let parked = self.parked.0.front().map(|w| w.deadline);
        match (parked, self.store.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
