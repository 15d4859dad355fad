//! The loop's side listeners: stats clients and admin clients accepted and stepped, admin requests carried out on the proxy and answered, reload requests parked until their outcome.

use std::time::Instant;

use log::warn;

use super::Proxy;
use crate::admin::command::{self, Ctl, Outcome};
use crate::admin::{self, Ready};
use crate::flow::listen::FD_BACKOFF;
use crate::flow::Traffic;
use crate::io::socket;
use crate::state::State;
use crate::stats::Source;
use crate::timer::Timers;

impl Proxy {
    pub(super) fn on_stats_event(&mut self, key: usize, now: Instant) {
        if let Some(s) = self.stats.as_mut() {
            let src = stats_source(&self.state, &self.traffic, &self.timers);
            s.on_event(key, &src, &mut self.timers, now);
        }
    }

    pub(super) fn accept_stats(&mut self, now: Instant) {
        let ready = self.stats.as_ref().is_some_and(|s| s.wants_accept());
        if !ready || self.traffic.accept_paused(now) {
            return;
        }
        let Some(stats) = self.stats.as_mut() else { return };
        let src = stats_source(&self.state, &self.traffic, &self.timers);
        if let Err(e) = stats.accept(&src, self.poll.registry(), &mut self.timers, now) {
            self.accept_failed("stats", &e, now);
        }
    }

    /// Out of descriptors: every listener pauses for a while.
    fn accept_failed(&mut self, what: &str, e: &std::io::Error, now: Instant) {
        if socket::is_resource_exhaustion(e) {
            warn!("{what} accept: {e}; pausing accepts for {} ms", FD_BACKOFF.as_millis());
            self.traffic.pause_accepting(&mut self.timers, now);
        }
    }

    /// The stats address, if `[stats]` listens.
    pub fn stats_addr(&self) -> Option<std::net::SocketAddr> {
        self.stats.as_ref().and_then(|s| s.local_addr())
    }

    pub(super) fn on_admin_event(&mut self, key: usize, now: Instant) {
        self.admin.on_event(key, &mut self.timers, now);
        self.run_admin(now);
    }

    pub(super) fn accept_admin(&mut self, now: Instant) {
        if !self.admin.wants_accept() || self.traffic.accept_paused(now) {
            return;
        }
        if let Err(e) = self.admin.accept(self.poll.registry(), &mut self.timers, now) {
            self.accept_failed("admin", &e, now);
        }
        self.run_admin(now);
    }

    /// Carries out the admin requests taken this step and answers them; a
    /// change of admin state or weight waits for the state file
    /// (`durable`).
    fn run_admin(&mut self, now: Instant) {
        for Ready { key, id, peer, command } in self.admin.take_ready() {
            let mut ctl = Ctl {
                state: &mut self.state,
                traffic: &mut self.traffic,
                prober: &mut self.prober,
                registry: self.poll.registry(),
                timers: &mut self.timers,
                status: &mut self.status,
                now,
            };
            match command::execute(command, &peer, &mut ctl) {
                Outcome::Answer(answer) => self.admin.respond(key, id, &answer, &mut self.timers, now),
                Outcome::Change(change) => self.admin_change(key, id, &peer, change, now),
                Outcome::Reload => self.admin_reload(key, id, &peer, now),
            }
        }
    }

    /// `POST /v1/reload`: as SIGHUP, and the request waits for the outcome
    /// of a read that starts after it.
    fn admin_reload(&mut self, key: usize, id: u64, peer: &admin::Peer, now: Instant) {
        let refused = if self.shutdown_deadline.is_some() {
            Some("shutting down")
        } else {
            None
        };
        // A read already running is followed by one more, which is ours.
        let waits_for = self.reloads_finished + if self.loader.busy() { 2 } else { 1 };
        if refused.is_none() {
            warn!("admin: peer={peer} reload");
        }
        let started = refused.is_none() && self.reload("admin API", now);
        if started {
            self.admin.park(key, id, waits_for, &mut self.timers, now);
        } else {
            let why = refused.unwrap_or("no configuration file to reload");
            let answer = admin::reload_answer(&Err(why.to_string()));
            self.admin.respond(key, id, &answer, &mut self.timers, now);
        }
    }

    /// A reload finished: parked requests get its outcome, and after a
    /// change the state file forgets removed backends (and follows a moved
    /// `global.state_file`).
    pub(super) fn reload_finished(&mut self, outcome: &Result<String, String>, now: Instant) {
        self.reloads_finished += 1;
        if outcome.is_ok() {
            self.status.set_max_age(super::status_window(&self.config));
            self.store.set_path(self.config.global.state_file.as_deref());
            self.next_write(now);
        }
        let answer = admin::reload_answer(outcome);
        self.admin
            .reload_done(self.reloads_finished, &answer, &mut self.timers, now);
    }
}

/// What the stats views read, at the moment of the call.
pub(super) fn stats_source<'a>(state: &'a State, traffic: &Traffic, timers: &Timers) -> Source<'a> {
    Source {
        state,
        buffers_in_use: traffic.pools.buffers.in_use(),
        timers_pending: timers.len(),
    }
}
