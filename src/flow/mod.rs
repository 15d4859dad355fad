//! The data flow of one client: accepted on a listener (`listen`), given a
//! backend by the balancer, connected (`connect`), relayed both ways
//! (`session`), closed and logged (`close`). [`Traffic`] owns the pairs in
//! flight and their storage; the counters they move live in [`State`].

pub mod close;
pub mod connect;
pub mod listen;
pub mod proxy_protocol;
pub mod relay;
pub mod session;

use std::time::Instant;

use mio::Registry;
use slab::Slab;

use crate::config::Global as GlobalConfig;
use crate::io::buffer::Pools;
use crate::state::State;
use crate::timer::{TimerKind, Timers};
use session::{End, Pair, Phase};

/// What the steps of the flow work on besides the pairs themselves: the
/// counters, the poll registry, the timers, and the time of this turn.
pub struct Ctx<'a> {
    pub state: &'a mut State,
    pub registry: &'a Registry,
    pub timers: &'a mut Timers,
    pub now: Instant,
}

/// The client connections in flight: pairs, the pools their bytes are held
/// in, and the pacing of accepts.
pub struct Traffic {
    pub pairs: Slab<Pair>,
    pub pools: Pools,
    /// Client connections open at once, all services together.
    max_connections: usize,
    next_id: u64,
    /// Pairs that stopped at their budget with data left: (key, id).
    again: Vec<(usize, u64)>,
    accept_paused_until: Option<Instant>,
    /// When running out of descriptors was last logged (at most once a second).
    fd_warned_at: Option<Instant>,
}

impl Traffic {
    pub fn new(global: &GlobalConfig) -> Traffic {
        Traffic {
            pairs: Slab::new(),
            pools: Pools::new(global.buffer_size, global.splice),
            max_connections: global.max_connections,
            next_id: 1,
            again: Vec::new(),
            accept_paused_until: None,
            fd_warned_at: None,
        }
    }

    /// A reload's `[global]`: applies to connections opened from now on.
    pub fn configure(&mut self, global: &GlobalConfig) {
        self.pools.configure(global.buffer_size, global.splice);
        self.max_connections = global.max_connections;
    }

    /// Some pair stopped at its budget and must be driven again at once.
    pub fn has_again(&self) -> bool {
        !self.again.is_empty()
    }

    /// A readiness event on a pair's client socket.
    pub fn on_client_event(&mut self, key: usize, event: &mio::event::Event, cx: &mut Ctx) {
        if let Some(p) = self.pairs.get_mut(key) {
            p.client.on_event(event);
            self.drive(key, cx);
        }
    }

    /// Drives the pairs that stopped at their budget in an earlier call.
    pub fn drive_again(&mut self, cx: &mut Ctx) {
        let again = std::mem::take(&mut self.again);
        for (key, id) in again {
            if self.pairs.get(key).is_some_and(|p| p.id == id) {
                self.drive(key, cx);
            }
        }
    }

    /// Drives a pair after an event or a yield, accounts the bytes moved,
    /// then settles its fate.
    pub fn drive(&mut self, key: usize, cx: &mut Ctx) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        match pair.drive(&mut self.pools) {
            Ok(p) => {
                if p.from_client + p.from_backend + p.to_backend + p.to_client > 0 {
                    pair.last_active = cx.now;
                    cx.state.bytes(pair.service, pair.backend, p.from_backend, p.to_backend);
                }
                if p.finished {
                    self.close(key, End::Done, cx);
                    return;
                }
                if p.again {
                    self.again.push((key, pair.id));
                }
                self.arm(key, cx.timers);
            }
            Err(end) => self.close(key, end, cx),
        }
    }

    /// Makes sure a timer entry exists no later than the pair's deadline.
    fn arm(&mut self, key: usize, timers: &mut Timers) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let Some(deadline) = pair.deadline() else { return };
        if pair.timer_at.is_none_or(|t| deadline < t) {
            pair.timer_at = Some(deadline);
            timers.add(deadline, TimerKind::Pair(key, pair.id));
        }
    }

    /// A pair's timer entry fired: its connect or idle deadline.
    pub fn on_timer(&mut self, key: usize, id: u64, when: Instant, cx: &mut Ctx) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if pair.id != id || pair.timer_at != Some(when) {
            return; // a stale entry; a newer one is armed
        }
        pair.timer_at = None;
        match pair.deadline() {
            Some(d) if d <= cx.now => match pair.phase {
                Phase::Connecting => self.connect_timed_out(key, cx),
                Phase::Relaying => self.close(key, End::IdleTimeout, cx),
            },
            _ => self.arm(key, cx.timers),
        }
    }

    /// Whether a pair's timer entry still matters (for sweeping stale ones).
    pub fn timer_is_live(&self, key: usize, id: u64, when: Instant) -> bool {
        self.pairs
            .get(key)
            .is_some_and(|p| p.id == id && p.timer_at == Some(when))
    }
}
