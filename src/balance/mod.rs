//! Step 2 of the flow, balance: a new client needs a backend. Holds each
//! service's backends (their up/down state and counters) and the five
//! strategies that choose among the candidates.
//!
//! A candidate is a backend that is up, not put aside by an operator
//! (`drain`, `maint`), not removed by a reload, below its own
//! `max_connections`, not already tried for this client, and a primary
//! unless no primary is usable (then only backups are candidates). Weights
//! are the effective ones: a runtime override, else the file's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use slab::Slab;

use crate::config::{BackendConfig, Strategy};
use crate::rng::{mix, Rng};
pub mod admin;
pub mod health;

pub use admin::AdminState;
use health::HealthState;

/// One backend server with its live state and counters.
#[derive(Debug)]
pub struct Backend {
    pub cfg: BackendConfig,
    pub health: HealthState,
    /// Removed by a reload; kept only until its last connection ends.
    pub removed: bool,
    pub active: usize,
    pub total: u64,
    pub failures: u64,
    /// Bytes received from the backend.
    pub bytes_in: u64,
    /// Bytes sent to the backend.
    pub bytes_out: u64,
    /// What the operator said (admin API); kept across reloads.
    pub admin: AdminState,
    /// Runtime weight (admin API) in place of the file's; kept across reloads.
    pub weight_override: Option<u32>,
    /// Position in the service's backend list in the file: the order ties
    /// are broken in and the stats page lists backends in.
    pub rank: usize,
    /// Smooth weighted round-robin accumulator.
    current: i64,
}

impl Backend {
    pub fn new(cfg: BackendConfig, now: Instant) -> Backend {
        Backend {
            cfg,
            health: HealthState::new(now),
            removed: false,
            active: 0,
            total: 0,
            failures: 0,
            bytes_in: 0,
            bytes_out: 0,
            admin: AdminState::Ready,
            weight_override: None,
            rank: 0,
            current: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.health.up
    }

    /// The weight the strategies use: the runtime override, else the file's.
    pub fn effective_weight(&self) -> u32 {
        self.weight_override.unwrap_or(self.cfg.weight).max(1)
    }

    fn weight(&self) -> u64 {
        u64::from(self.effective_weight())
    }

    /// Up and not put aside by an operator: may take new clients.
    pub fn is_usable(&self) -> bool {
        self.is_up() && self.admin == AdminState::Ready
    }

    fn has_room(&self) -> bool {
        self.cfg.max_connections == 0 || self.active < self.cfg.max_connections
    }
}

/// Points a weight-1 backend gets on the ip_hash ring.
const RING_POINTS_PER_WEIGHT: u64 = 64;
/// Upper bound on the ring's size, whatever the weights.
const RING_MAX_POINTS: u64 = 1 << 18;

/// The backends of one service and the strategy that picks among them.
pub struct Balancer {
    pub strategy: Strategy,
    pub backends: Slab<Backend>,
    /// Backend keys in configuration order (the order ties are broken in).
    order: Vec<usize>,
    /// ip_hash ring: (point, backend key), sorted by point.
    ring: Vec<(u64, usize)>,
    cursor: usize,
    rng: Rng,
    /// Backend keys by configured address (removed ones still draining
    /// included): a reload finds its backends without a pass over all.
    by_address: HashMap<String, usize>,
    /// The rank the next backend appended to the list gets.
    next_rank: usize,
}

impl Balancer {
    pub fn new(strategy: Strategy, backends: &[BackendConfig], now: Instant) -> Balancer {
        let mut b = Balancer {
            strategy,
            backends: Slab::new(),
            order: Vec::new(),
            ring: Vec::new(),
            cursor: 0,
            rng: Rng::from_clock(),
            by_address: HashMap::new(),
            next_rank: 0,
        };
        for cfg in backends {
            b.insert(Backend::new(cfg.clone(), now));
        }
        b.rebuild();
        b
    }

    /// Adds a backend after the others (a reload may set its rank); its
    /// key.
    pub fn insert(&mut self, mut backend: Backend) -> usize {
        backend.rank = self.next_rank;
        self.next_rank += 1;
        let address = backend.cfg.address.clone();
        let key = self.backends.insert(backend);
        self.by_address.insert(address, key);
        key
    }

    /// Drops a backend (a reload removed it and its last connection ended).
    pub fn remove(&mut self, key: usize) {
        if let Some(b) = self.backends.try_remove(key) {
            if self.by_address.get(&b.cfg.address) == Some(&key) {
                self.by_address.remove(&b.cfg.address);
            }
        }
    }

    /// The key of the backend configured as `address`.
    pub fn find(&self, address: &str) -> Option<usize> {
        self.by_address.get(address).copied()
    }

    /// Gives backend `key` the rank `rank` (its place in the file); later
    /// appended backends go after it.
    pub fn set_rank(&mut self, key: usize, rank: usize) {
        if let Some(b) = self.backends.get_mut(key) {
            b.rank = rank;
            self.next_rank = self.next_rank.max(rank + 1);
        }
    }

    /// Puts backend `key` after every other one (a removed backend the file
    /// lists again, at its end).
    pub fn move_last(&mut self, key: usize) {
        let rank = self.next_rank;
        self.set_rank(key, rank);
    }

    /// Recomputes the tie-break order and (for ip_hash) the ring after
    /// backends were added, removed or re-weighted, or the strategy changed.
    pub fn rebuild(&mut self) {
        self.order = self
            .backends
            .iter()
            .filter(|(_, b)| !b.removed)
            .map(|(k, _)| k)
            .collect();
        let backends = &self.backends;
        self.order
            .sort_by_key(|&k| backends.get(k).map_or(usize::MAX, |b| b.rank));
        self.ring.clear();
        if self.strategy != Strategy::IpHash {
            return; // only ip_hash reads the ring
        }
        let total: u64 = self.order.iter().map(|&k| self.backends[k].weight()).sum();
        let per_weight = if total * RING_POINTS_PER_WEIGHT > RING_MAX_POINTS {
            (RING_MAX_POINTS / total.max(1)).max(1)
        } else {
            RING_POINTS_PER_WEIGHT
        };
        for &k in &self.order {
            let b = &self.backends[k];
            let points = b.weight() * per_weight;
            let seed = fnv1a(b.cfg.address.as_bytes());
            for i in 0..points {
                self.ring.push((mix(seed ^ mix(i + 1)), k));
            }
        }
        self.ring.sort_unstable();
    }

    /// Sets a backend's health state; the one call that takes it in or out of
    /// rotation.
    pub fn set_up(&mut self, key: usize, up: bool, now: Instant) {
        if let Some(b) = self.backends.get_mut(key) {
            b.health.set_up(up, now);
        }
    }

    /// Runtime weights changed: the ring follows them, and round robin
    /// starts its cycle afresh so the new shares hold from the next pick.
    pub fn reweight(&mut self) {
        for (_, b) in self.backends.iter_mut() {
            b.current = 0;
        }
        self.rebuild();
    }

    /// Whether backups are the candidates now (no primary is usable).
    fn use_backups(&self) -> bool {
        !self.order.iter().any(|&k| {
            let b = &self.backends[k];
            !b.cfg.backup && b.is_usable()
        })
    }

    fn is_candidate(&self, key: usize, backups: bool, tried: &[usize]) -> bool {
        match self.backends.get(key) {
            Some(b) => !b.removed && b.is_usable() && b.cfg.backup == backups && b.has_room() && !tried.contains(&key),
            None => false,
        }
    }

    /// Chooses a backend for a client from `ip`, skipping those in `tried`.
    /// `None` when no backend can take it.
    pub fn pick(&mut self, ip: IpAddr, tried: &[usize]) -> Option<usize> {
        let backups = self.use_backups();
        match self.strategy {
            Strategy::RoundRobin => self.pick_smooth_wrr(backups, tried),
            Strategy::Random => self.pick_weighted_random(backups, tried),
            Strategy::LeastConn => self.pick_least_conn(backups, tried),
            Strategy::PowerOfTwo => {
                let a = self.pick_weighted_random(backups, tried)?;
                let b = self.pick_weighted_random(backups, tried)?;
                Some(if self.backends[b].active < self.backends[a].active {
                    b
                } else {
                    a
                })
            }
            Strategy::IpHash => self.pick_ip_hash(ip, backups, tried),
        }
    }

    /// nginx's smooth weighted round robin: every candidate gains its weight,
    /// the largest wins and pays back the sum.
    fn pick_smooth_wrr(&mut self, backups: bool, tried: &[usize]) -> Option<usize> {
        let mut best: Option<usize> = None;
        let mut sum: i64 = 0;
        for i in 0..self.order.len() {
            let k = self.order[i];
            if !self.is_candidate(k, backups, tried) {
                continue;
            }
            let b = &mut self.backends[k];
            b.current += b.weight() as i64;
            sum += b.weight() as i64;
            if best.is_none_or(|bk| self.backends[k].current > self.backends[bk].current) {
                best = Some(k);
            }
        }
        let k = best?;
        self.backends[k].current -= sum;
        Some(k)
    }

    fn pick_weighted_random(&mut self, backups: bool, tried: &[usize]) -> Option<usize> {
        let sum: u64 = self
            .order
            .iter()
            .filter(|&&k| self.is_candidate(k, backups, tried))
            .map(|&k| self.backends[k].weight())
            .sum();
        if sum == 0 {
            return None;
        }
        let mut r = self.rng.below(sum);
        for &k in &self.order {
            if !self.is_candidate(k, backups, tried) {
                continue;
            }
            let w = self.backends[k].weight();
            if r < w {
                return Some(k);
            }
            r -= w;
        }
        None
    }

    /// Fewest active connections per unit of weight; ties go round robin.
    fn pick_least_conn(&mut self, backups: bool, tried: &[usize]) -> Option<usize> {
        let n = self.order.len();
        let mut best: Option<(usize, usize)> = None; // (position in order, key)
        for i in 0..n {
            let pos = (self.cursor + i) % n;
            let k = self.order[pos];
            if !self.is_candidate(k, backups, tried) {
                continue;
            }
            let better = match best {
                None => true,
                Some((_, bk)) => {
                    let (a, b) = (&self.backends[k], &self.backends[bk]);
                    (a.active as u128) * (b.weight() as u128) < (b.active as u128) * (a.weight() as u128)
                }
            };
            if better {
                best = Some((pos, k));
            }
        }
        let (pos, k) = best?;
        self.cursor = (pos + 1) % n.max(1);
        Some(k)
    }

    /// Consistent hash: the first candidate clockwise from the client IP's
    /// point. Removing a backend moves only its own clients, to the next
    /// point; restoring it moves exactly those back.
    fn pick_ip_hash(&mut self, ip: IpAddr, backups: bool, tried: &[usize]) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let h = hash_ip(ip);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        let n = self.ring.len();
        (0..n)
            .map(|i| self.ring[(start + i) % n].1)
            .find(|&k| self.is_candidate(k, backups, tried))
    }

    /// Keys of backends still in the configuration, in configuration order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The ring point of a client IP (IPv4-mapped IPv6 hashes as IPv4).
pub fn hash_ip(ip: IpAddr) -> u64 {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => mix(fnv1a(&a.octets())),
        IpAddr::V6(a) => mix(fnv1a(&a.octets())),
    }
}

#[cfg(test)]
mod tests;
