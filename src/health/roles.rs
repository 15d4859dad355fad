//! Health flow, database roles: what a service's checks ask of each
//! backend, and the rule that keeps one primary. A `role = "primary"`
//! service has at most one backend up: a second server that turns writable
//! while one is up stays down (an `error` line names both), so writes never
//! go to two servers at once. Backups of a `role = "replica"` service are
//! checked for login only, so the primary can serve reads when no replica
//! can.

use crate::balance::health::{CheckOutcome, CheckResult};
use crate::balance::{AdminState, Backend};
use crate::config::{HealthCheck, Role};
use crate::state::Service;

/// The role a check of `backend` must see (`None`: login only).
pub fn wanted(hc: &HealthCheck, backend: &Backend) -> Option<Role> {
    match hc.role {
        Some(Role::Replica) if backend.cfg.backup => None,
        role => role,
    }
}

/// Applies the one-primary rule to a check of backend `key` of `svc`: a
/// successful `primary` check while another backend is up becomes a failed
/// one, naming the primary. Logs an `error` the first time (not at every
/// check while it lasts).
pub fn one_primary(svc: &Service, key: usize, outcome: CheckOutcome) -> CheckOutcome {
    let primary_service = svc
        .cfg
        .health_check
        .as_ref()
        .is_some_and(|hc| hc.role == Some(Role::Primary));
    if !primary_service || outcome.result != CheckResult::Ok {
        return outcome;
    }
    let Some(first) = svc
        .balancer
        .backends
        .iter()
        .find(|(k, b)| {
            // The primary: up, seen writable by its last check, and not
            // parked in maintenance (whose checks stopped).
            *k != key && !b.removed && b.is_up() && b.health.role == Some(Role::Primary) && b.admin != AdminState::Maint
        })
        .map(|(_, b)| b.cfg.address.as_str())
    else {
        return outcome;
    };
    let detail = format!("role: writable, but {first} is the primary");
    if let Some(second) = svc.balancer.backends.get(key) {
        if second.health.last_detail.as_deref() != Some(detail.as_str()) {
            log::error!(
                "service={} backend={} is writable too, but backend={first} is the primary: it stays down while {first} is up",
                svc.cfg.name,
                second.cfg.address
            );
        }
    }
    CheckOutcome {
        result: CheckResult::WrongRole,
        detail: Some(detail.into()),
        ..outcome
    }
}
