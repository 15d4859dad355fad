//! Step 2 of the flow, balance: is a backend fit for new clients? Holds each backend's health
//! state (rise/fall counting over probe results and failed client connects).
//! Probes themselves are sockets of the event loop.

use std::fmt;
use std::time::{Duration, Instant};

/// The outcome of one check (a probe or a client connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    /// Never checked yet.
    None,
    Ok,
    Refused,
    TimedOut,
    Reset,
    UnexpectedReply,
    /// The backend closed before the expected reply arrived.
    Closed,
    /// The backend broke its protocol in a way worth naming (the text).
    Protocol(&'static str),
    /// A failure on this machine (no descriptor, no local port, no
    /// memory): never counted against a backend.
    LocalError,
    /// Any other socket error.
    Error,
}

impl CheckResult {
    /// Classifies a socket error.
    pub fn from_io(e: &std::io::Error) -> CheckResult {
        use std::io::ErrorKind::*;
        match e.kind() {
            ConnectionRefused => CheckResult::Refused,
            TimedOut => CheckResult::TimedOut,
            ConnectionReset | ConnectionAborted | BrokenPipe => CheckResult::Reset,
            _ if crate::io::socket::is_local_connect_error(e) => CheckResult::LocalError,
            _ => CheckResult::Error,
        }
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckResult::None => "none",
            CheckResult::Ok => "ok",
            CheckResult::Refused => "refused",
            CheckResult::TimedOut => "timeout",
            CheckResult::Reset => "reset",
            CheckResult::UnexpectedReply => "unexpected reply",
            CheckResult::Closed => "closed",
            CheckResult::Protocol(what) => what,
            CheckResult::LocalError => "local error",
            CheckResult::Error => "error",
        })
    }
}

/// A backend's health as the balancer and the stats page see it.
#[derive(Debug, Clone)]
pub struct HealthState {
    pub up: bool,
    /// Consecutive successful checks.
    pub successes: u32,
    /// Consecutive failed checks.
    pub fails: u32,
    /// All failed checks and failed client connects.
    pub failures_total: u64,
    pub last: CheckResult,
    pub last_latency: Option<Duration>,
    pub last_change: Instant,
}

/// A state change caused by a check, to be logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub up: bool,
    pub reason: CheckResult,
    /// How long the backend had been in its previous state.
    pub after: Duration,
}

impl Transition {
    /// The `warn` line every up/down change gets; `source` says what saw it
    /// (`health check`, `client connect`).
    pub fn log(&self, service: &str, address: &str, source: &str) {
        log::warn!(
            "service={service} backend={address} is {} ({source}: {}) after {:.1}s {}",
            if self.up { "UP" } else { "DOWN" },
            self.reason,
            self.after.as_secs_f64(),
            if self.up { "down" } else { "up" }
        );
    }
}

impl HealthState {
    /// Backends start up.
    pub fn new(now: Instant) -> HealthState {
        HealthState {
            up: true,
            successes: 0,
            fails: 0,
            failures_total: 0,
            last: CheckResult::None,
            last_latency: None,
            last_change: now,
        }
    }

    pub fn set_up(&mut self, up: bool, now: Instant) {
        if self.up != up {
            self.up = up;
            self.last_change = now;
        }
        self.successes = 0;
        self.fails = 0;
    }

    /// Counts one check result against `rise`/`fall`; returns the state
    /// change it caused, if any.
    pub fn record(
        &mut self,
        result: CheckResult,
        latency: Option<Duration>,
        rise: u32,
        fall: u32,
        now: Instant,
    ) -> Option<Transition> {
        self.last = result;
        self.last_latency = latency;
        if result == CheckResult::Ok {
            self.successes = self.successes.saturating_add(1);
            self.fails = 0;
            if !self.up && self.successes >= rise {
                return Some(self.flip(result, now));
            }
        } else {
            self.failures_total += 1;
            self.fails = self.fails.saturating_add(1);
            self.successes = 0;
            if self.up && self.fails >= fall {
                return Some(self.flip(result, now));
            }
        }
        None
    }

    fn flip(&mut self, reason: CheckResult, now: Instant) -> Transition {
        let after = now.saturating_duration_since(self.last_change);
        self.up = !self.up;
        self.last_change = now;
        self.successes = 0;
        self.fails = 0;
        Transition {
            up: self.up,
            reason,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_then_rise() {
        let t = Instant::now();
        let mut h = HealthState::new(t);
        assert!(h.record(CheckResult::Refused, None, 2, 3, t).is_none());
        assert!(h.record(CheckResult::Ok, None, 2, 3, t).is_none());
        assert!(h.record(CheckResult::Refused, None, 2, 3, t).is_none());
        assert!(h.record(CheckResult::Refused, None, 2, 3, t).is_none());
        let tr = h.record(CheckResult::TimedOut, None, 2, 3, t).unwrap();
        assert!(!tr.up && tr.reason == CheckResult::TimedOut);
        assert_eq!(h.failures_total, 4);
        assert!(h.record(CheckResult::Ok, None, 2, 3, t).is_none());
        assert!(h.record(CheckResult::Ok, None, 2, 3, t).unwrap().up);
    }
}
