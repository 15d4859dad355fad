//! Side flow: active health-check probes. Each backend of a service with a
//! `[service.health_check]` table has one probe: a socket of the same event
//! loop that connects, sends `send`, reads until the reply contains `expect`,
//! all within `timeout_ms`, then waits for its next turn. Probes of one
//! service are spread over the interval so they never fire together.

use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::Interest;
use slab::Slab;

use crate::balance::health::{CheckResult, Transition};
use crate::config::HealthCheck;
use crate::health::mysql;
use crate::io::pump::{self, Flush};
use crate::io::socket;
use crate::rng::Rng;
use crate::state::Service;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// Most reply bytes a probe keeps while looking for `expect`.
const MAX_REPLY: usize = 16 * 1024;

/// Where a probe is in its cycle.
enum Stage {
    /// Waiting for its next turn.
    Idle,
    /// Non-blocking connect in progress.
    Connecting(TcpStream),
    /// Writing `send` (bytes written so far).
    Sending(TcpStream, usize),
    /// Reading the reply (bytes received so far).
    Reading(TcpStream, Vec<u8>),
    /// MySQL check: waiting for a server packet (bytes so far, what it is).
    MysqlReading(TcpStream, Vec<u8>, MysqlStep),
    /// MySQL check: writing a packet (bytes, written so far), then `step`.
    MysqlWriting(TcpStream, Vec<u8>, usize, MysqlStep),
}

/// Where a MySQL check is: the greeting, the login's answer, the quit.
#[derive(Clone, Copy)]
enum MysqlStep {
    Greeting,
    Auth,
    Quit,
}

struct Probe {
    svc: usize,
    backend: usize,
    /// Set from the prober's counter at every step, so a timer armed for an
    /// older step, or for an older probe in the same slab slot, is stale.
    gen: u64,
    stage: Stage,
    started: Instant,
}

/// A health change to be logged: (service key, backend key, transition).
pub type Change = (usize, usize, Transition);

/// All probes of all services.
pub struct Prober {
    probes: Slab<Probe>,
    by_service: HashMap<usize, Vec<usize>>,
    rng: Rng,
    /// Source of probe generations, unique for the process's life.
    next_gen: u64,
}

impl Default for Prober {
    fn default() -> Prober {
        Prober {
            probes: Slab::new(),
            by_service: HashMap::new(),
            rng: Rng::from_clock(),
            next_gen: 0,
        }
    }
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
            let gen = self.bump();
            let key = self.probes.insert(Probe {
                svc: svc_key,
                backend,
                gen,
                stage: Stage::Idle,
                started: now,
            });
            timers.add(now + offset, TimerKind::Probe(key, gen));
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

    /// Stops probing altogether (graceful stop).
    pub fn stop_all(&mut self) {
        self.probes.clear();
        self.by_service.clear();
    }

    fn bump(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// A probe's timer: start a check when idle, or time it out when running.
    pub fn on_timer(
        &mut self,
        key: usize,
        gen: u64,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        registry: &mio::Registry,
        now: Instant,
    ) -> Vec<Change> {
        let next_gen = self.next_gen + 1;
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        if probe.gen != gen {
            return Vec::new();
        }
        let Some(svc) = services.get(probe.svc) else {
            return Vec::new();
        };
        let Some(hc) = svc.cfg.health_check.as_ref() else {
            return Vec::new();
        };
        let result = if !matches!(probe.stage, Stage::Idle) {
            Some(CheckResult::TimedOut)
        } else if let Some(addr) = svc.balancer.backends.get(probe.backend).map(|b| b.cfg.addr) {
            probe.started = now;
            probe.gen = next_gen;
            self.next_gen = next_gen;
            match socket::connect(addr) {
                Ok(mut stream) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    match registry.register(&mut stream, Target::Probe(key).token(), interest) {
                        Ok(()) => {
                            probe.stage = Stage::Connecting(stream);
                            timers.add(now + hc.timeout, TimerKind::Probe(key, probe.gen));
                            None
                        }
                        Err(_) => Some(CheckResult::LocalError),
                    }
                }
                Err(e) => Some(CheckResult::from_io(&e)),
            }
        } else {
            None
        };
        match result {
            Some(r) => self.finish(key, r, services, timers, now),
            None => Vec::new(),
        }
    }

    /// Readiness on a probe socket: advance connect -> send -> read.
    pub fn on_event(
        &mut self,
        key: usize,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        now: Instant,
    ) -> Vec<Change> {
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        let Some(hc) = services.get(probe.svc).and_then(|s| s.cfg.health_check.as_ref()) else {
            return Vec::new();
        };
        match advance(probe, hc) {
            Some(r) => self.finish(key, r, services, timers, now),
            None => Vec::new(),
        }
    }

    /// Records a check's result, closes its socket and schedules the next.
    fn finish(
        &mut self,
        key: usize,
        result: CheckResult,
        services: &mut Slab<Service>,
        timers: &mut Timers,
        now: Instant,
    ) -> Vec<Change> {
        let gen = self.bump();
        let Some(probe) = self.probes.get_mut(key) else {
            return Vec::new();
        };
        probe.stage = Stage::Idle; // drops (closes) the socket
        probe.gen = gen;
        let mut changes = Vec::new();
        let Some(svc) = services.get_mut(probe.svc) else {
            return changes;
        };
        let Some(hc) = svc.cfg.health_check.as_ref() else {
            return changes;
        };
        let next = (probe.started + hc.interval).max(now + hc.interval / 4);
        timers.add(next, TimerKind::Probe(key, probe.gen));
        if let Some(b) = svc.balancer.backends.get_mut(probe.backend) {
            let latency = now.saturating_duration_since(probe.started);
            if result != CheckResult::Ok {
                b.failures += 1;
            }
            if let Some(t) = b.health.record(result, Some(latency), hc.rise, hc.fall, now) {
                changes.push((probe.svc, probe.backend, t));
            }
        }
        changes
    }
}

/// Moves a running probe as far as its socket allows; `Some` when the check
/// is decided.
fn advance(probe: &mut Probe, hc: &HealthCheck) -> Option<CheckResult> {
    let (send, expect) = (&hc.send[..], &hc.expect[..]);
    loop {
        let stage = std::mem::replace(&mut probe.stage, Stage::Idle);
        probe.stage = match stage {
            Stage::Idle => return None,
            Stage::Connecting(stream) => {
                match socket::connect_finished(&stream, false).map_err(|e| CheckResult::from_io(&e)) {
                    Ok(true) if hc.mysql_user.is_some() => Stage::MysqlReading(stream, Vec::new(), MysqlStep::Greeting),
                    Ok(true) => Stage::Sending(stream, 0),
                    Ok(false) => {
                        probe.stage = Stage::Connecting(stream);
                        return None;
                    }
                    Err(r) => return Some(r),
                }
            }
            Stage::Sending(mut stream, written) => {
                let (n, r) = pump::write_all_nb(&send[written..], &mut stream);
                match r {
                    Ok(Flush::Drained) if expect.is_empty() => return Some(CheckResult::Ok),
                    Ok(Flush::Drained) => Stage::Reading(stream, Vec::new()),
                    Ok(Flush::WouldBlock) => {
                        probe.stage = Stage::Sending(stream, written + n);
                        return None;
                    }
                    Err(e) => return Some(CheckResult::from_io(&e)),
                }
            }
            Stage::MysqlReading(stream, got, step) => {
                let user = hc.mysql_user.as_deref().unwrap_or("");
                match mysql_read(stream, got, step, user) {
                    // Still waiting: the stage was handed back unchanged.
                    Ok(Stage::MysqlReading(stream, got, step)) => {
                        probe.stage = Stage::MysqlReading(stream, got, step);
                        return None;
                    }
                    Ok(next) => next,
                    Err(r) => return r,
                }
            }
            Stage::MysqlWriting(mut stream, bytes, written, step) => {
                let (n, r) = pump::write_all_nb(&bytes[written..], &mut stream);
                match r {
                    Ok(Flush::Drained) => match step {
                        MysqlStep::Quit => return Some(CheckResult::Ok),
                        _ => Stage::MysqlReading(stream, Vec::new(), step),
                    },
                    Ok(Flush::WouldBlock) => {
                        probe.stage = Stage::MysqlWriting(stream, bytes, written + n, step);
                        return None;
                    }
                    Err(e) => return Some(CheckResult::from_io(&e)),
                }
            }
            Stage::Reading(mut stream, mut got) => {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        // A peer that closed after a wrong reply gave a wrong reply.
                        Ok(0) if got.is_empty() => return Some(CheckResult::Closed),
                        Ok(0) => return Some(CheckResult::UnexpectedReply),
                        Ok(n) => {
                            // Search only where a match could newly end.
                            let from = got.len().saturating_sub(expect.len().saturating_sub(1));
                            got.extend_from_slice(&buf[..n]);
                            if contains(&got[from..], expect) {
                                return Some(CheckResult::Ok);
                            }
                            if got.len() > MAX_REPLY {
                                return Some(CheckResult::UnexpectedReply);
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            probe.stage = Stage::Reading(stream, got);
                            return None;
                        }
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Some(CheckResult::from_io(&e)),
                    }
                }
            }
        };
    }
}

/// One step of the MySQL check on a readable socket: `Err` decides the
/// check, `Ok(None)` waits for more, `Ok(Some(stage))` moves on.
fn mysql_read(
    mut stream: TcpStream,
    mut got: Vec<u8>,
    step: MysqlStep,
    user: &str,
) -> Result<Stage, Option<CheckResult>> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some((seq, payload, _)) = mysql::packet(&got) {
            let next_seq = seq.wrapping_add(1);
            return match (step, mysql::classify(payload)) {
                (MysqlStep::Greeting, mysql::Reply::Greeting) => Ok(Stage::MysqlWriting(
                    stream,
                    mysql::handshake_response(user, next_seq),
                    0,
                    MysqlStep::Auth,
                )),
                (MysqlStep::Auth, mysql::Reply::Ok) => {
                    Ok(Stage::MysqlWriting(stream, mysql::QUIT.to_vec(), 0, MysqlStep::Quit))
                }
                (MysqlStep::Auth, mysql::Reply::AuthSwitch) => Ok(Stage::MysqlWriting(
                    stream,
                    mysql::frame(next_seq, &[]),
                    0,
                    MysqlStep::Auth,
                )),
                _ => Err(Some(CheckResult::UnexpectedReply)),
            };
        }
        if got.len() > MAX_REPLY {
            return Err(Some(CheckResult::UnexpectedReply));
        }
        match stream.read(&mut buf) {
            Ok(0) if got.is_empty() => return Err(Some(CheckResult::Closed)),
            Ok(0) => return Err(Some(CheckResult::UnexpectedReply)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Stage::MysqlReading(stream, got, step)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Some(CheckResult::from_io(&e))),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::contains;

    #[test]
    fn contains_finds_needles() {
        assert!(contains(b"+PONG\r\n", b"PONG"));
        assert!(!contains(b"-ERR", b"PONG"));
        assert!(contains(b"anything", b""));
        assert!(!contains(b"PO", b"PONG"));
    }
}
