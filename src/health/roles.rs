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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::time::Instant;

    fn svc() -> Service {
        let text = "[[service]]\nname = \"w\"\nlisten = \"127.0.0.1:0\"\n\
            [service.health_check]\nmysql_user = \"u\"\nrole = \"primary\"\n\
            [[service.backend]]\naddress = \"127.0.0.1:1\"\n[[service.backend]]\naddress = \"127.0.0.1:2\"\n";
        let cfg = Config::parse(text).unwrap();
        let l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Service::new(cfg.services[0].clone(), l, Instant::now())
    }
    fn ok_primary() -> CheckOutcome {
        CheckOutcome {
            role: Some(Role::Primary),
            ..CheckOutcome::from(CheckResult::Ok)
        }
    }
    fn check(s: &mut Service, k: usize, o: CheckOutcome) {
        let o = one_primary(s, k, o);
        let (rise, fall) = (2, 3);
        s.balancer.backends[k]
            .health
            .record_outcome(o, None, rise, fall, Instant::now());
    }

    /// A is the primary; two of its checks time out (still up, fall = 3),
    /// its role is forgotten, B (also writable) rises: both up. Then each
    /// blocks the other and both go down.
    #[test]
    fn a_primary_that_misses_checks_keeps_the_slot() {
        let mut s = svc();
        let (a, b) = (0, 1);
        check(&mut s, a, ok_primary());
        check(&mut s, a, ok_primary());
        assert!(s.balancer.backends[a].is_up());
        check(&mut s, b, ok_primary());
        assert!(!s.balancer.backends[b].is_up(), "held down by the rule");
        // A's checks time out twice (overloaded): still up, role forgotten.
        check(&mut s, a, CheckResult::TimedOut.into());
        check(&mut s, b, ok_primary());
        check(&mut s, a, CheckResult::TimedOut.into());
        check(&mut s, b, ok_primary());
        assert!(
            !(s.balancer.backends[a].is_up() && s.balancer.backends[b].is_up()),
            "two writable backends up at once in a role=primary service"
        );
        // A answers again: each check now sees the other as primary.
        for _ in 0..3 {
            check(&mut s, a, ok_primary());
            check(&mut s, b, ok_primary());
        }
        assert!(
            s.balancer.backends[a].is_up() || s.balancer.backends[b].is_up(),
            "both writable servers went down: no primary at all"
        );
    }
}
