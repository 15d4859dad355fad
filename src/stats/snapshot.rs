//! The numbers every view shows, read from the proxy into a Snapshot; `/stats` is its JSON.

use std::time::Instant;

use serde::Serialize;

use super::Source;
use crate::balance::{AdminState, Backend};
use crate::config::Role;
use crate::state::Service;

#[derive(Serialize)]
pub struct Snapshot {
    pub uptime_ms: u64,
    pub connections: Connections,
    pub reloads: u64,
    pub reloads_failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub buffers_in_use: usize,
    pub timers_pending: usize,
    pub log_lines_dropped: u64,
    pub services: Vec<ServiceSnap>,
}

#[derive(Serialize)]
pub struct Connections {
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
    /// Backend connects that failed on this host (no local port, no
    /// descriptor), not counted against any backend.
    pub local_errors: u64,
}

#[derive(Serialize)]
pub struct ServiceSnap {
    pub name: String,
    pub listen: String,
    pub strategy: String,
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub health_check: bool,
    pub backends: Vec<BackendSnap>,
    pub clients: Vec<ClientSnap>,
}

#[derive(Serialize)]
pub struct BackendSnap {
    pub address: String,
    pub resolved: String,
    /// `up`, `down`, or `maint` while an operator has it in maintenance
    /// (no checks run then).
    pub state: &'static str,
    /// `ready`, `drain` or `maint` (admin API).
    pub admin_state: &'static str,
    /// The effective weight: the runtime override, else the file's.
    pub weight: u32,
    /// The file's weight.
    pub weight_config: u32,
    pub backup: bool,
    pub max_connections: usize,
    pub active: usize,
    pub total: u64,
    pub failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_check: String,
    pub last_check_ms: Option<f64>,
    pub state_since_ms: u64,
    /// MySQL checks: what the last check saw the server to be, `primary`
    /// (writable) or `replica` (read-only), whatever the service wants;
    /// `null` when unknown or not a MySQL check.
    pub role: Option<&'static str>,
    /// MySQL replicas: the replication lag the last check saw.
    pub replication_lag_ms: Option<u64>,
}

#[derive(Serialize)]
pub struct ClientSnap {
    pub ip: String,
    pub active: usize,
}

/// Everything the three views show, read from the proxy at `now`.
pub fn snapshot(src: &Source<'_>, now: Instant) -> Snapshot {
    let state = src.state;
    let c = &state.counters;
    Snapshot {
        uptime_ms: now.saturating_duration_since(state.started).as_millis() as u64,
        connections: Connections {
            active: c.active,
            total: c.total,
            rejected: c.rejected,
            local_errors: c.local_errors,
        },
        reloads: c.reloads,
        reloads_failed: c.reloads_failed,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        buffers_in_use: src.buffers_in_use,
        timers_pending: src.timers_pending,
        log_lines_dropped: crate::logsink::lines_dropped(),
        services: state
            .services
            .iter()
            .filter(|(_, s)| !s.removed)
            .map(|(_, s)| service_snap(s, now))
            .collect(),
    }
}

/// One service, its backends in balancing order and its clients by IP.
fn service_snap(s: &Service, now: Instant) -> ServiceSnap {
    let mut clients: Vec<ClientSnap> = s
        .clients
        .iter()
        .map(|(ip, n)| ClientSnap {
            ip: ip.to_string(),
            active: *n,
        })
        .collect();
    clients.sort_by(|a, b| a.ip.cmp(&b.ip));
    ServiceSnap {
        name: s.cfg.name.clone(),
        listen: s
            .listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(s.cfg.listen)
            .to_string(),
        strategy: s.cfg.strategy.to_string(),
        active: s.active,
        total: s.total,
        rejected: s.rejected,
        bytes_in: s.bytes_in,
        bytes_out: s.bytes_out,
        health_check: s.cfg.health_check.is_some(),
        backends: s
            .balancer
            .order()
            .iter()
            .filter_map(|&k| s.balancer.backends.get(k))
            .map(|b| backend_snap(b, now))
            .collect(),
        clients,
    }
}

fn backend_snap(b: &Backend, now: Instant) -> BackendSnap {
    BackendSnap {
        address: b.cfg.address.clone(),
        resolved: b.cfg.addr.to_string(),
        state: match (b.admin, b.is_up()) {
            (AdminState::Maint, _) => "maint",
            (_, true) => "up",
            (_, false) => "down",
        },
        admin_state: b.admin.as_str(),
        weight: b.effective_weight(),
        weight_config: b.cfg.weight,
        backup: b.cfg.backup,
        max_connections: b.cfg.max_connections,
        active: b.active,
        total: b.total,
        failures: b.failures,
        bytes_in: b.bytes_in,
        bytes_out: b.bytes_out,
        last_check: b.health.last_text().into_owned(),
        last_check_ms: b.health.last_latency.map(|d| d.as_secs_f64() * 1000.0),
        state_since_ms: now.saturating_duration_since(b.health.last_change).as_millis() as u64,
        role: b.health.role.map(|r| match r {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }),
        replication_lag_ms: b.health.replication_lag.map(|d| d.as_millis() as u64),
    }
}

/// The `/stats` body: the snapshot as pretty JSON and a newline.
pub(super) fn json(snap: &Snapshot) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(snap).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}
