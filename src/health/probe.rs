//! Health flow, scheduling: each backend of a service with a
//! `[service.health_check]` table has one probe, a socket of the same event
//! loop that runs one check (see `check`) at a time, within `timeout_ms`,
//! then waits for its next turn. Probes of one service are spread over the
//! interval so they never fire together.
//!
//! Each probe keeps one deadline entry in the timer heap, however far apart
//! `interval_ms` and `timeout_ms` are: the entry is armed no later than the
//! earliest moment the probe could need it (see [`Probe::set_due`]), and
//! when it fires early it is simply armed again. A check that used up its
//! budget for one call gets one more entry, due at once, to resume it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mio::Interest;
use slab::Slab;

use crate::balance::health::{CheckOutcome, CheckResult, Transition};
use crate::balance::AdminState;
use crate::config::HealthCheck;
use crate::health::check::{Check, Progress};
use crate::health::roles;
use crate::io::socket;
use crate::rng::Rng;
use crate::state::{Service, State};
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// How soon a check that yielded is resumed: just after this loop turn's
/// timers (an entry due exactly now would fire again in the same turn).
const RESUME_AFTER: Duration = Duration::from_micros(1);

struct Probe {
    svc: usize,
    backend: usize,
    /// The running check; `None` between checks.
    check: Option<Check>,
    /// When the last check started (the running one's timeout counts from
    /// here, the next one's start too).
    started: Instant,
    /// When the probe has to act next: start a check when idle, give up on
    /// the running one otherwise.
    due: Instant,
    /// The probe's one deadline entry in the timer heap (tag, when).
    armed: Option<(u64, Instant)>,
    /// The tag of a pending entry that resumes a check which yielded.
    resume: Option<u64>,
}

/// Logs the up/down changes probes caused, and tells stats; the backends
/// that went down, as (service key, backend key).
pub fn record_changes(state: &mut State, changes: Vec<Change>) -> Vec<(usize, usize)> {
    let mut down = Vec::new();
    for (svc_key, b, t) in changes {
        state.changed();
        if !t.up {
            down.push((svc_key, b));
        }
        if let Some(svc) = state.services.get(svc_key) {
            if let Some(backend) = svc.balancer.backends.get(b) {
                t.log(&svc.cfg.name, &backend.cfg.address, "health check");
            }
        }
    }
    down
}

/// A health change to be logged: (service key, backend key, transition).
pub type Change = (usize, usize, Transition);

/// All probes of all services.
pub struct Prober {
    probes: Slab<Probe>,
    by_service: HashMap<usize, Vec<usize>>,
    rng: Rng,
    tags: Tags,
}

/// Timer entry tags, unique for the process's life, so an entry armed for
/// an older deadline, or for an older probe in the same slab slot, is stale.
#[derive(Default)]
struct Tags(u64);

impl Tags {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

impl Default for Prober {
    fn default() -> Prober {
        Prober {
            probes: Slab::new(),
            by_service: HashMap::new(),
            rng: Rng::from_clock(),
            tags: Tags::default(),
        }
    }
}

impl Probe {
    /// Sets when the probe acts next and makes sure its timer entry fires
    /// by then. The entry is never armed past the earliest start of the
    /// next check (`started + interval`, or a quarter interval from now), so
    /// when a check ends before its timeout the entry already pending still
    /// comes first and no second one is needed: one entry per probe, with
    /// one early wake-up per quarter interval while a long check runs.
    fn set_due(
        &mut self,
        key: usize,
        due: Instant,
        interval: Duration,
        now: Instant,
        tags: &mut Tags,
        timers: &mut Timers,
    ) {
        self.due = due;
        let at = due.min((self.started + interval).max(now + interval / 4));
        if self.armed.is_some_and(|(_, when)| when <= at) {
            return;
        }
        let tag = tags.next();
        timers.add(at, TimerKind::Probe(key, tag));
        self.armed = Some((tag, at));
    }

    /// Has the check resumed in a later loop turn (one pending entry at most).
    fn resume_soon(&mut self, key: usize, now: Instant, tags: &mut Tags, timers: &mut Timers) {
        if self.resume.is_none() {
            let tag = tags.next();
            timers.add(now + RESUME_AFTER, TimerKind::Probe(key, tag));
            self.resume = Some(tag);
        }
    }
}

fn health_check<'a>(services: &'a Slab<Service>, probe: &Probe) -> Option<&'a HealthCheck> {
    services.get(probe.svc).and_then(|s| s.cfg.health_check.as_ref())
}

impl Prober {
    /// (Re)creates the probes of one service, spread over its interval.
    pub fn schedule_service(&mut self, svc_key: usize, svc: &Service, timers: &mut Timers, now: Instant) {
        self.remove_service(svc_key);
        let Some(hc) = &svc.cfg.health_check else { return };
        if svc.removed {
            return;
        }
        let keys: Vec<usize> = svc.balancer.order().to_vec();
        let n = keys.len().max(1) as u128;
        let interval = hc.interval.as_nanos();
        let mut mine = Vec::with_capacity(keys.len());
        for (i, backend) in keys.into_iter().enumerate() {
            // Slot i of n across the interval, plus up to a tenth of a slot
            // of noise so services with equal intervals do not line up.
            let noise = u128::from(self.rng.below(1000)) * interval / n / 10_000;
            let offset = Duration::from_nanos(((interval * i as u128 / n) + noise) as u64);
            let key = self.probes.insert(Probe {
                svc: svc_key,
                backend,
                check: None,
                started: now,
                due: now,
                armed: None,
                resume: None,
            });
            self.probes[key].set_due(key, now + offset, hc.interval, now, &mut self.tags, timers);
            mine.push(key);
        }
        self.by_service.insert(svc_key, mine);
    }

    /// Drops a service's probes (their sockets close).
    pub fn remove_service(&mut self, svc_key: usize) {
        for key in self.by_service.remove(&svc_key).unwrap_or_default() {
            self.probes.try_remove(key);
        }
    }

    /// Whether a probe timer entry still matters; `false` lets the loop's
    /// compaction drop it (entries of probes removed by a reload).
    pub fn timer_is_live(&self, key: usize, tag: u64) -> bool {
        self.probes
            .get(key)
            .is_some_and(|p| p.armed.is_some_and(|(armed, _)| armed == tag) || p.resume == Some(tag))
    }

    /// Has backend `backend` of service `svc_key` checked at once, unless
    /// a check of it is running (a backend leaving maintenance).
    pub fn check_now(
        &mut self,
        svc_key: usize,
        backend: usize,
        services: &Slab<Service>,
        timers: &mut Timers,
        now: Instant,
    ) {
        let keys = self.by_service.get(&svc_key).map_or(&[][..], Vec::as_slice);
        let Some(&key) = keys
            .iter()
            .find(|&&k| self.probes.get(k).is_some_and(|p| p.backend == backend))
        else {
            return;
        };
        let (Some(probe), Some(hc)) = (
            self.probes.get_mut(key),
            services.get(svc_key).and_then(|s| s.cfg.health_check.as_ref()),
        ) else {
            return;
        };
        if probe.check.is_none() {
            probe.set_due(key, now, hc.interval, now, &mut self.tags, timers);
        }
    }

    /// Stops probing altogether (graceful stop).
    pub fn stop_all(&mut self) {
        self.probes.clear();
        self.by_service.clear();
    }

    /// A probe's timer entry: resume a check that yielded, start a check
    /// when one is due, time out the running one, or re-arm when early.
    pub fn on_timer(
        &mut self,
        key: usize,
        tag: u64,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        registry: &mio::Registry,
        now: Instant,
    ) -> Vec<Change> {
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        if probe.resume == Some(tag) {
            probe.resume = None;
            return self.drive(key, services, timers, now);
        }
        if probe.armed.is_none_or(|(armed, _)| armed != tag) {
            return Vec::new();
        }
        probe.armed = None;
        let Some(hc) = health_check(services, probe) else {
            return Vec::new();
        };
        if now < probe.due {
            let due = probe.due;
            probe.set_due(key, due, hc.interval, now, &mut self.tags, timers);
            return Vec::new();
        }
        if probe.check.is_some() {
            return self.finish(key, CheckResult::TimedOut.into(), services, timers, now);
        }
        self.start(key, services, timers, registry, now)
    }

    /// Readiness on a probe socket.
    pub fn on_event(
        &mut self,
        key: usize,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        now: Instant,
    ) -> Vec<Change> {
        self.drive(key, services, timers, now)
    }

    /// Starts a check: a non-blocking connect to the probe's backend.
    fn start(
        &mut self,
        key: usize,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        registry: &mio::Registry,
        now: Instant,
    ) -> Vec<Change> {
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        let Some(svc) = services.get(probe.svc) else {
            return Vec::new();
        };
        let (Some(hc), Some(backend)) = (svc.cfg.health_check.as_ref(), svc.balancer.backends.get(probe.backend))
        else {
            return Vec::new();
        };
        if backend.admin == AdminState::Maint {
            // In maintenance: no check; look again next interval.
            probe.set_due(key, now + hc.interval, hc.interval, now, &mut self.tags, timers);
            return Vec::new();
        }
        let addr = backend.cfg.addr;
        probe.started = now;
        let failed = match socket::connect(addr) {
            Ok(mut stream) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match registry.register(&mut stream, Target::Probe(key).token(), interest) {
                    Ok(()) => {
                        probe.check = Some(Check::new(stream, roles::wanted(hc, backend)));
                        probe.set_due(key, now + hc.timeout, hc.interval, now, &mut self.tags, timers);
                        return Vec::new();
                    }
                    Err(_) => CheckResult::LocalError,
                }
            }
            Err(e) => CheckResult::from_io(&e),
        };
        self.finish(key, failed.into(), services, timers, now)
    }

    /// Moves the running check on; has it resumed later if it yielded.
    fn drive(&mut self, key: usize, services: &mut Slab<Service>, timers: &mut Timers, now: Instant) -> Vec<Change> {
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        let Some(hc) = health_check(services, probe) else {
            return Vec::new();
        };
        let deadline = probe.started + hc.timeout;
        let Some(check) = probe.check.as_mut() else {
            return Vec::new();
        };
        match check.advance(hc, now, deadline) {
            Progress::Done(result) => self.finish(key, result, services, timers, now),
            Progress::Wait => Vec::new(),
            Progress::Yield => {
                probe.resume_soon(key, now, &mut self.tags, timers);
                Vec::new()
            }
        }
    }

    /// Records a check's result, closes its socket and schedules the next
    /// check, an interval after this one started and never sooner than a
    /// quarter interval from now: checks never overlap.
    fn finish(
        &mut self,
        key: usize,
        outcome: CheckOutcome,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        now: Instant,
    ) -> Vec<Change> {
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        probe.check = None; // drops (closes) the socket
        probe.resume = None;
        let mut changes = Vec::new();
        let Some(svc) = services.get_mut(probe.svc) else {
            return changes;
        };
        let Some(hc) = svc.cfg.health_check.as_ref() else {
            return changes;
        };
        let next = (probe.started + hc.interval).max(now + hc.interval / 4);
        probe.set_due(key, next, hc.interval, now, &mut self.tags, timers);
        if outcome.result == CheckResult::LocalError {
            // This host's shortage (no descriptor, no port) says nothing
            // about the backend: not counted against it.
            log::debug!("service={}: a health check could not start on this host", svc.cfg.name);
            return changes;
        }
        let outcome = roles::one_primary(svc, probe.backend, outcome);
        let (rise, fall) = (hc.rise, hc.fall);
        if let Some(b) = svc
            .balancer
            .backends
            .get_mut(probe.backend)
            .filter(|b| b.admin != AdminState::Maint)
        {
            let latency = now.saturating_duration_since(probe.started);
            if outcome.result != CheckResult::Ok {
                b.failures += 1;
            }
            if let Some(t) = b.health.record_outcome(outcome, Some(latency), rise, fall, now) {
                changes.push((probe.svc, probe.backend, t));
            }
        }
        changes
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;
