//! Step 2 of the flow, balance: is a backend fit for new clients? Holds each backend's health
//! state (rise/fall counting over probe results and failed client connects).
//! Probes themselves are sockets of the event loop.

use std::fmt;
use std::time::{Duration, Instant};

use crate::config::Role;

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
    /// MySQL: the server refused the session (an ERR greeting, or the
    /// login denied); its message is in the outcome's detail.
    LoginFailed,
    /// MySQL: the server is not in the role the service wants.
    WrongRole,
    /// MySQL: replication stopped, unknown or lagging too far.
    Replication,
    /// MySQL: a query failed, or `mysql_query` was not true.
    QueryFailed,
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
            CheckResult::LoginFailed => "login failed",
            CheckResult::WrongRole => "wrong role",
            CheckResult::Replication => "replication",
            CheckResult::QueryFailed => "query failed",
        })
    }
}

/// All that one probe check tells: its result, a text that says more
/// (the server's message, why the role or replication is wrong) and, for
/// a MySQL check, the role and replication lag it saw (`None`: unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub result: CheckResult,
    /// Printable, one line, bounded (the server's words are cleaned first).
    pub detail: Option<Box<str>>,
    pub role: Option<Role>,
    pub replication_lag: Option<Duration>,
}

impl CheckOutcome {
    /// A result with a detail.
    pub fn with_detail(result: CheckResult, detail: impl Into<Box<str>>) -> CheckOutcome {
        CheckOutcome {
            detail: Some(detail.into()),
            ..CheckOutcome::from(result)
        }
    }
}

impl From<CheckResult> for CheckOutcome {
    fn from(result: CheckResult) -> CheckOutcome {
        CheckOutcome {
            result,
            detail: None,
            role: None,
            replication_lag: None,
        }
    }
}

/// The reason a check gives: its detail when it has one, else the result.
fn reason_text(result: CheckResult, detail: Option<&str>) -> std::borrow::Cow<'_, str> {
    detail.map_or_else(|| result.to_string().into(), Into::into)
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
    /// What the last probe check said beyond `last` (see [`CheckOutcome`]).
    pub last_detail: Option<Box<str>>,
    pub last_latency: Option<Duration>,
    pub last_change: Instant,
    /// MySQL: the role the last probe check saw (`None`: unknown, or not a
    /// MySQL check).
    pub role: Option<Role>,
    /// MySQL replica: the replication lag the last probe check saw.
    pub replication_lag: Option<Duration>,
}

/// A state change caused by a check, to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub up: bool,
    pub reason: CheckResult,
    /// The check's detail, logged instead of `reason` when present.
    pub detail: Option<Box<str>>,
    /// How long the backend had been in its previous state.
    pub after: Duration,
}

impl Transition {
    /// The `warn` line every up/down change gets; `source` says what saw it
    /// (`health check`, `client connect`).
    pub fn log(&self, service: &str, address: &str, source: &str) {
        log::warn!("{}", self.line(service, address, source));
    }

    /// That line's text: `service=S backend=A is DOWN (health check: role:
    /// read-only) after 3.2s up`.
    pub fn line(&self, service: &str, address: &str, source: &str) -> String {
        format!(
            "service={service} backend={address} is {} ({source}: {}) after {:.1}s {}",
            if self.up { "UP" } else { "DOWN" },
            reason_text(self.reason, self.detail.as_deref()),
            self.after.as_secs_f64(),
            if self.up { "down" } else { "up" }
        )
    }
}

impl HealthState {
    /// Forgets what checks saw and starts afresh, down when `down` (a
    /// backend that now means another server, or is back from maint or
    /// from removal in a service whose backends start down).
    pub fn restart(&mut self, down: bool, now: Instant) {
        self.set_up(!down, now);
        self.role = None;
        self.replication_lag = None;
    }

    /// Backends start up.
    pub fn new(now: Instant) -> HealthState {
        HealthState {
            up: true,
            successes: 0,
            fails: 0,
            failures_total: 0,
            last: CheckResult::None,
            last_detail: None,
            last_latency: None,
            last_change: now,
            role: None,
            replication_lag: None,
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

    /// The last check's reason as the stats page and logs should show it:
    /// its detail when it had one.
    pub fn last_text(&self) -> std::borrow::Cow<'_, str> {
        reason_text(self.last, self.last_detail.as_deref())
    }

    /// Counts one probe check against `rise`/`fall` and keeps what it saw
    /// (detail; role and lag unless it failed before seeing them); returns
    /// the state change it caused, if any.
    pub fn record_outcome(
        &mut self,
        outcome: CheckOutcome,
        latency: Option<Duration>,
        rise: u32,
        fall: u32,
        now: Instant,
    ) -> Option<Transition> {
        let CheckOutcome {
            result,
            detail,
            role,
            replication_lag,
        } = outcome;
        // A check that saw no role (it failed before asking: a timeout, a
        // reset) keeps the role seen last: a primary that misses a check
        // is still the primary for the one-primary rule.
        if role.is_some() || result == CheckResult::Ok {
            self.role = role;
            self.replication_lag = replication_lag;
        }
        let mut t = self.record(result, latency, rise, fall, now);
        if let Some(t) = &mut t {
            t.detail.clone_from(&detail);
        }
        self.last_detail = detail;
        t
    }

    /// Counts one check result against `rise`/`fall`; returns the state
    /// change it caused, if any. The detail is cleared; role and lag stay
    /// (a client connect does not see them).
    pub fn record(
        &mut self,
        result: CheckResult,
        latency: Option<Duration>,
        rise: u32,
        fall: u32,
        now: Instant,
    ) -> Option<Transition> {
        self.last = result;
        self.last_detail = None;
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
            detail: None,
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

    #[test]
    fn outcomes_keep_detail_role_and_lag_and_the_log_line_names_the_detail() {
        let t = Instant::now();
        let mut h = HealthState::new(t);
        let wrong = CheckOutcome {
            role: Some(Role::Replica),
            ..CheckOutcome::with_detail(CheckResult::WrongRole, "role: read-only")
        };
        let later = t + Duration::from_millis(3200);
        let tr = h.record_outcome(wrong, None, 1, 1, later).unwrap();
        assert_eq!(
            tr.line("write", "10.0.0.7:3306", "health check"),
            "service=write backend=10.0.0.7:3306 is DOWN (health check: role: read-only) after 3.2s up"
        );
        assert_eq!(
            (h.role, h.last_text().as_ref()),
            (Some(Role::Replica), "role: read-only")
        );
        let ok = CheckOutcome {
            role: Some(Role::Primary),
            replication_lag: Some(Duration::from_secs(2)),
            ..CheckOutcome::from(CheckResult::Ok)
        };
        let tr = h.record_outcome(ok, None, 1, 1, later).unwrap();
        assert!(tr.line("w", "a", "health check").contains("is UP (health check: ok)"));
        assert_eq!(h.last_detail, None);
        assert_eq!(
            (h.role, h.replication_lag),
            (Some(Role::Primary), Some(Duration::from_secs(2)))
        );
        // A client connect keeps what the last probe saw.
        h.record(CheckResult::Refused, None, 1, 5, later);
        assert_eq!(h.role, Some(Role::Primary));
    }
}
