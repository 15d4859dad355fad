//! What the data flow counts: services, their backends and the process-wide
//! counters. A connection's opening, bytes and closing are accounted here,
//! at all three levels at once, and nowhere else.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mio::net::TcpListener;
use slab::Slab;

use crate::balance::health::CheckResult;
use crate::balance::Balancer;
use crate::config::ServiceConfig;

/// One configured service: its listener, backends and counters.
pub struct Service {
    /// The service's settings; its backends live in `balancer` (this
    /// copy's backend list is empty).
    pub cfg: ServiceConfig,
    pub listener: Option<TcpListener>,
    pub balancer: Balancer,
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
    /// Bytes received from this service's backends.
    pub bytes_in: u64,
    /// Bytes sent to this service's backends.
    pub bytes_out: u64,
    /// Open connections per client IP.
    pub clients: HashMap<IpAddr, usize>,
    /// The listener reported readiness not yet drained by accept.
    pub accept_ready: bool,
    /// Removed by a reload; kept only until its last connection ends.
    pub removed: bool,
}

impl Service {
    /// A service listening on `listener`, its backends all up.
    pub fn new(cfg: ServiceConfig, listener: TcpListener, now: Instant) -> Service {
        let mut balancer = Balancer::new(cfg.strategy, &cfg.backends, now);
        if cfg.health_check.as_ref().is_some_and(|hc| hc.starts_down()) {
            for (_, b) in balancer.backends.iter_mut() {
                b.health.set_up(false, now);
            }
        }
        Service {
            balancer,
            cfg: cfg.settings(),
            listener: Some(listener),
            active: 0,
            total: 0,
            rejected: 0,
            bytes_in: 0,
            bytes_out: 0,
            clients: HashMap::new(),
            accept_ready: true,
            removed: false,
        }
    }

    /// Below its own `max_connections` (0 = no limit of its own).
    pub fn has_room(&self) -> bool {
        self.cfg.max_connections == 0 || self.active < self.cfg.max_connections
    }
}

/// Process-wide counters shown by the stats endpoint.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
    pub reloads: u64,
    pub reloads_failed: u64,
    /// Bytes received from backends, all services.
    pub bytes_in: u64,
    /// Bytes sent to backends, all services.
    pub bytes_out: u64,
    /// Backend connects that failed on this host (no port, no descriptor),
    /// not counted against any backend.
    pub local_errors: u64,
}

/// The services and the counters over all of them.
pub struct State {
    pub services: Slab<Service>,
    pub counters: Counters,
    pub started: Instant,
    /// Bumped by every change of what the proxy is (a backend going up or
    /// down, a reload): stats answers rendered before it are stale at once.
    pub changes: u64,
}

/// One fewer; going below zero is a bookkeeping bug, caught in debug builds.
fn decrement(n: &mut usize, what: &str) {
    debug_assert!(*n > 0, "{what} would go below zero");
    *n = n.saturating_sub(1);
}

impl State {
    pub fn new(now: Instant) -> State {
        State {
            services: Slab::new(),
            counters: Counters::default(),
            started: now,
            changes: 0,
        }
    }

    /// Something stats shows at once changed (see [`State::changes`]).
    pub fn changed(&mut self) {
        self.changes = self.changes.wrapping_add(1);
    }

    /// A client was accepted on service `svc`.
    pub fn open(&mut self, svc: usize, ip: IpAddr) {
        let Some(s) = self.services.get_mut(svc) else { return };
        s.active += 1;
        s.total += 1;
        *s.clients.entry(ip).or_insert(0) += 1;
        self.counters.active += 1;
        self.counters.total += 1;
    }

    /// No backend could take a new client of `svc`.
    pub fn reject(&mut self, svc: usize) {
        if let Some(s) = self.services.get_mut(svc) {
            s.rejected += 1;
        }
        self.counters.rejected += 1;
    }

    /// A connect to backend `b` started: it counts as active from now on.
    pub fn backend_attempt(&mut self, svc: usize, b: usize) {
        if let Some(be) = self.services.get_mut(svc).and_then(|s| s.balancer.backends.get_mut(b)) {
            be.active += 1;
        }
    }

    /// A connect to backend `b` failed: a failed check against it (a
    /// passive health check, logged when it takes the backend down), or,
    /// for a failure on this host, only a local error. `true` when it took
    /// the backend down.
    pub fn connect_failed(&mut self, svc: usize, b: usize, result: CheckResult, now: Instant) -> bool {
        if result == CheckResult::LocalError {
            self.counters.local_errors += 1;
            return false;
        }
        let Some(s) = self.services.get_mut(svc) else {
            return false;
        };
        let Some(be) = s.balancer.backends.get_mut(b) else {
            return false;
        };
        be.failures += 1;
        let Some(hc) = &s.cfg.health_check else { return false };
        let Some(t) = be.health.record(result, None, hc.rise, hc.fall, now) else {
            return false;
        };
        t.log(&s.cfg.name, &be.cfg.address, "client connect");
        self.changed();
        !t.up
    }

    /// The connect to backend `b` completed.
    pub fn backend_connected(&mut self, svc: usize, b: usize) {
        if let Some(be) = self.services.get_mut(svc).and_then(|s| s.balancer.backends.get_mut(b)) {
            be.total += 1;
        }
    }

    /// A connection to backend `b` is over (a failed connect or a close):
    /// not active any more, and gone if a reload removed it and it was the
    /// last.
    pub fn backend_released(&mut self, svc: usize, b: usize) {
        let Some(s) = self.services.get_mut(svc) else { return };
        let Some(be) = s.balancer.backends.get_mut(b) else {
            return;
        };
        decrement(&mut be.active, "backend active");
        if be.removed && be.active == 0 {
            s.balancer.remove(b);
        }
    }

    /// Bytes moved for a connection of `svc` through backend `b`.
    pub fn bytes(&mut self, svc: usize, b: Option<usize>, from_backend: u64, to_backend: u64) {
        self.counters.bytes_in += from_backend;
        self.counters.bytes_out += to_backend;
        let Some(s) = self.services.get_mut(svc) else { return };
        s.bytes_in += from_backend;
        s.bytes_out += to_backend;
        if let Some(be) = b.and_then(|b| s.balancer.backends.get_mut(b)) {
            be.bytes_in += from_backend;
            be.bytes_out += to_backend;
        }
    }

    /// A client connection of `svc` from `ip` ended (through backend `b`, if
    /// it had one): every level counts it down, and what a reload removed
    /// goes with its last connection.
    pub fn close(&mut self, svc: usize, b: Option<usize>, ip: IpAddr) {
        decrement(&mut self.counters.active, "global active");
        if let Some(b) = b {
            self.backend_released(svc, b);
        }
        let Some(s) = self.services.get_mut(svc) else { return };
        decrement(&mut s.active, "service active");
        if let Some(n) = s.clients.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.clients.remove(&ip);
            }
        }
        self.drop_if_removed(svc);
    }

    /// The address each service actually listens on (port 0 resolved).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.services
            .iter()
            .filter_map(|(_, s)| Some((s.cfg.name.clone(), s.listener.as_ref()?.local_addr().ok()?)))
            .collect()
    }

    /// A service removed by a reload goes away with its last connection.
    pub fn drop_if_removed(&mut self, svc: usize) {
        if self.services.get(svc).is_some_and(|s| s.removed && s.active == 0) {
            self.services.remove(svc);
        }
    }
}
