//! Health flow, MySQL check, after the login: which queries a check runs
//! for the role it wants, and what their answers mean. `primary`: writable
//! (`read_only`, and `super_read_only`/`innodb_read_only` where the server
//! has them, all off). `replica`: read-only, IO and SQL threads running,
//! lag known and within the limit (`SHOW REPLICA STATUS`, or `SHOW SLAVE
//! STATUS` on servers that answer ERR to it). Then `mysql_query`, if any.

use std::time::Duration;

use crate::balance::health::{CheckOutcome, CheckResult};
use crate::config::{HealthCheck, Role};

use super::packets::ServerError;
use super::resultset::Table;

/// A query the check runs, in this order (each one only when needed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    Variables,
    ReplicaStatus,
    SlaveStatus,
    /// `mysql_query`.
    User,
}

const VARIABLES: &str =
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only','super_read_only','innodb_read_only')";

impl Query {
    /// The statement's text.
    pub fn sql<'a>(&self, hc: &'a HealthCheck) -> &'a str {
        match self {
            Query::Variables => VARIABLES,
            Query::ReplicaStatus => "SHOW REPLICA STATUS",
            Query::SlaveStatus => "SHOW SLAVE STATUS",
            Query::User => hc.mysql_query.as_deref().unwrap_or("SELECT 1"),
        }
    }

    /// How a reason names it.
    fn name(&self) -> &'static str {
        match self {
            Query::Variables => "SHOW GLOBAL VARIABLES",
            Query::ReplicaStatus => "SHOW REPLICA STATUS",
            Query::SlaveStatus => "SHOW SLAVE STATUS",
            Query::User => "mysql_query",
        }
    }
}

/// What the queries saw so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Findings {
    pub role: Option<Role>,
    pub lag: Option<Duration>,
}

impl Findings {
    /// The outcome with what was seen.
    pub fn outcome(&self, result: CheckResult, detail: Option<String>) -> CheckOutcome {
        CheckOutcome {
            result,
            detail: detail.map(Into::into),
            role: self.role,
            replication_lag: self.lag,
        }
    }

    fn fail(&self, result: CheckResult, detail: String) -> CheckOutcome {
        self.outcome(result, Some(detail))
    }
}

/// The first query after the login; `None`: logging in was enough.
pub fn first(want: Option<Role>, hc: &HealthCheck) -> Option<Query> {
    match want {
        Some(_) => Some(Query::Variables),
        None => after_role(hc),
    }
}

fn after_role(hc: &HealthCheck) -> Option<Query> {
    hc.mysql_query.as_ref().map(|_| Query::User)
}

/// Judges an answer: the next query (`None`: all passed) or the failure.
pub fn on_table(
    q: Query,
    t: &Table,
    want: Option<Role>,
    hc: &HealthCheck,
    seen: &mut Findings,
) -> Result<Option<Query>, CheckOutcome> {
    match q {
        Query::Variables => {
            variables(t, want, seen)?;
            Ok(match want {
                Some(Role::Replica) => Some(Query::ReplicaStatus),
                _ => after_role(hc),
            })
        }
        Query::ReplicaStatus | Query::SlaveStatus => {
            replication(t, hc.max_replication_lag, seen)?;
            Ok(after_role(hc))
        }
        Query::User => user_query(t, seen).map(|()| None),
    }
}

/// An ERR answer: `SHOW REPLICA STATUS` falls back to `SHOW SLAVE STATUS`;
/// anything else fails the check with the server's message.
pub fn on_error(q: Query, e: &ServerError, seen: &Findings) -> Result<Query, CheckOutcome> {
    match q {
        Query::ReplicaStatus => Ok(Query::SlaveStatus),
        _ => Err(seen.fail(CheckResult::QueryFailed, format!("{}: {e}", q.name()))),
    }
}

fn on(value: Option<Option<&str>>) -> bool {
    matches!(value, Some(Some(v)) if v.eq_ignore_ascii_case("ON") || v == "1")
}

/// `read_only` and friends: sets the role seen, fails a wrong one.
fn variables(t: &Table, want: Option<Role>, seen: &mut Findings) -> Result<(), CheckOutcome> {
    let value = |name: &str| {
        t.rows
            .iter()
            .find(|r| matches!(r.first(), Some(Some(n)) if n.eq_ignore_ascii_case(name)))
            .map(|r| r.get(1).and_then(Option::as_deref))
    };
    if value("read_only").is_none() {
        let detail = "SHOW GLOBAL VARIABLES: no read_only in the answer".to_string();
        return Err(seen.fail(CheckResult::QueryFailed, detail));
    }
    let why = ["read_only", "super_read_only", "innodb_read_only"]
        .into_iter()
        .find(|n| on(value(n)));
    seen.role = Some(if why.is_some() { Role::Replica } else { Role::Primary });
    match (want, why) {
        (Some(Role::Primary), Some("read_only" | "super_read_only")) => {
            Err(seen.fail(CheckResult::WrongRole, "role: read-only".into()))
        }
        (Some(Role::Primary), Some(other)) => {
            Err(seen.fail(CheckResult::WrongRole, format!("role: read-only ({other})")))
        }
        (Some(Role::Replica), None) => Err(seen.fail(CheckResult::WrongRole, "role: writable".into())),
        _ => Ok(()),
    }
}

/// The replica status row: threads running, lag known and within `max`.
fn replication(t: &Table, max: Option<Duration>, seen: &mut Findings) -> Result<(), CheckOutcome> {
    let fail = |seen: &Findings, what: String| Err(seen.fail(CheckResult::Replication, what));
    if t.rows.is_empty() {
        return fail(seen, "replication: not configured (no replica status)".into());
    }
    let lag = t.get_any(0, &["Seconds_Behind_Source", "Seconds_Behind_Master"]);
    let secs = lag.flatten().and_then(|v| v.trim().parse::<u64>().ok());
    seen.lag = secs.map(Duration::from_secs);
    let io = t.get_any(0, &["Replica_IO_Running", "Slave_IO_Running"]).flatten();
    let sql = t.get_any(0, &["Replica_SQL_Running", "Slave_SQL_Running"]).flatten();
    let running = |v: Option<&str>| v.is_some_and(|v| v.eq_ignore_ascii_case("Yes"));
    match (running(io), running(sql)) {
        (false, false) => return fail(seen, "replication: IO and SQL threads stopped".into()),
        (false, true) if io.is_some_and(|v| v.eq_ignore_ascii_case("Connecting")) => {
            return fail(seen, "replication: IO thread connecting".into())
        }
        (false, true) => return fail(seen, "replication: IO thread stopped".into()),
        (true, false) => return fail(seen, "replication: SQL thread stopped".into()),
        (true, true) => {}
    }
    let Some(lag) = seen.lag else {
        let what = if lag.is_none() {
            "no Seconds_Behind column"
        } else {
            "lag unknown (NULL)"
        };
        return fail(seen, format!("replication: {what}"));
    };
    match max {
        Some(max) if lag > max => fail(
            seen,
            format!("replication lag {:.1}s > {:.1}s", lag.as_secs_f64(), max.as_secs_f64()),
        ),
        _ => Ok(()),
    }
}

/// `mysql_query`: up only if the first column of the first row is true:
/// not NULL, not empty, not a number equal to zero.
fn user_query(t: &Table, seen: &Findings) -> Result<(), CheckOutcome> {
    let value = match t.rows.first().map(|r| r.first()) {
        None | Some(None) => return Err(seen.fail(CheckResult::QueryFailed, "mysql_query: no rows".into())),
        Some(Some(v)) => v.as_deref(),
    };
    let truthy = value.is_some_and(|v| {
        let v = v.trim();
        !v.is_empty() && !v.parse::<f64>().is_ok_and(|n| n == 0.0)
    });
    if truthy {
        return Ok(());
    }
    let shown = value.map_or("NULL".to_string(), |v| format!("{v:?}"));
    Err(seen.fail(CheckResult::QueryFailed, format!("mysql_query: {shown} is not true")))
}

#[cfg(test)]
#[path = "role_tests.rs"]
mod tests;
