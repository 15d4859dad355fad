//! Health flow, MySQL check, role tests: what the answers to the role
//! queries and to `mysql_query` mean.

use super::*;
use crate::health::mysql::resultset::{Feed, ResultReader};
use crate::health::mysql::testutil;

fn table(packets: Vec<Vec<u8>>) -> Table {
    let mut r = ResultReader::new();
    for p in packets {
        if let Feed::Done(t) = r.feed(&p).unwrap() {
            return t;
        }
    }
    panic!("no end");
}

fn vars(read_only: &str, extra: &[(&str, &str)]) -> Table {
    let mut t = table(testutil::variables(read_only, None));
    t.rows.extend(
        extra
            .iter()
            .map(|(n, v)| vec![Some(n.to_string()), Some(v.to_string())]),
    );
    t
}

/// The detail of a failed judgement, or "ok" (and the next query).
fn judge(q: Query, t: &Table, want: Option<Role>, hc: &HealthCheck) -> (String, Findings) {
    let mut seen = Findings::default();
    let text = match on_table(q, t, want, hc, &mut seen) {
        Ok(next) => format!("ok {next:?}"),
        Err(o) => o.detail.as_deref().unwrap_or("").to_string(),
    };
    (text, seen)
}

#[test]
fn primaries_must_be_writable() {
    let hc = testutil::hc("", Some(Role::Primary));
    let p = Some(Role::Primary);
    let (text, seen) = judge(Query::Variables, &vars("OFF", &[("super_read_only", "OFF")]), p, &hc);
    assert_eq!((text.as_str(), seen.role), ("ok None", Some(Role::Primary)));
    let (text, seen) = judge(Query::Variables, &vars("ON", &[]), p, &hc);
    assert_eq!((text.as_str(), seen.role), ("role: read-only", Some(Role::Replica)));
    let (text, _) = judge(Query::Variables, &vars("0", &[("innodb_read_only", "ON")]), p, &hc);
    assert_eq!(text, "role: read-only (innodb_read_only)");
    let (text, _) = judge(Query::Variables, &vars("1", &[]), p, &hc);
    assert_eq!(text, "role: read-only");
    let (text, _) = judge(Query::Variables, &Table::default(), p, &hc);
    assert_eq!(text, "SHOW GLOBAL VARIABLES: no read_only in the answer");
    let with_query = HealthCheck {
        mysql_query: Some("SELECT 1".into()),
        ..hc
    };
    assert_eq!(
        judge(Query::Variables, &vars("OFF", &[]), p, &with_query).0,
        "ok Some(User)"
    );
}

#[test]
fn replicas_must_be_read_only_replicating_and_close_enough() {
    let r = Some(Role::Replica);
    let hc = HealthCheck {
        max_replication_lag: Some(Duration::from_secs(5)),
        ..testutil::hc("", r)
    };
    assert_eq!(judge(Query::Variables, &vars("OFF", &[]), r, &hc).0, "role: writable");
    assert_eq!(
        judge(Query::Variables, &vars("ON", &[]), r, &hc).0,
        "ok Some(ReplicaStatus)"
    );
    let status = |io, sql, lag| table(testutil::replica_status(io, sql, lag));
    let (text, seen) = judge(Query::ReplicaStatus, &status("Yes", "Yes", Some("3")), r, &hc);
    assert_eq!((text.as_str(), seen.lag), ("ok None", Some(Duration::from_secs(3))));
    let (text, seen) = judge(Query::ReplicaStatus, &status("Yes", "Yes", Some("12")), r, &hc);
    assert_eq!(
        (text.as_str(), seen.lag),
        ("replication lag 12.0s > 5.0s", Some(Duration::from_secs(12)))
    );
    for (io, sql, lag, want) in [
        ("Yes", "No", None, "replication: SQL thread stopped"),
        ("No", "Yes", Some("0"), "replication: IO thread stopped"),
        ("Connecting", "Yes", None, "replication: IO thread connecting"),
        ("No", "No", None, "replication: IO and SQL threads stopped"),
        ("Yes", "Yes", None, "replication: lag unknown (NULL)"),
    ] {
        assert_eq!(judge(Query::ReplicaStatus, &status(io, sql, lag), r, &hc).0, want);
    }
    let none = table(testutil::result_set(&["Slave_IO_Running"], &[]));
    assert_eq!(
        judge(Query::SlaveStatus, &none, r, &hc).0,
        "replication: not configured (no replica status)"
    );
    // MariaDB's and older MySQL's column names.
    let old = table(testutil::result_set(
        &["Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master"],
        &[&[Some("Yes"), Some("Yes"), Some("0")]],
    ));
    assert_eq!(judge(Query::SlaveStatus, &old, r, &hc).0, "ok None");
}

#[test]
fn replica_status_errors_fall_back_once() {
    let e = ServerError {
        code: 1064,
        message: "You have an error in your SQL syntax".into(),
    };
    let seen = Findings::default();
    assert_eq!(on_error(Query::ReplicaStatus, &e, &seen), Ok(Query::SlaveStatus));
    let fail = on_error(Query::SlaveStatus, &e, &seen).unwrap_err();
    assert_eq!(fail.result, CheckResult::QueryFailed);
    assert_eq!(
        fail.detail.as_deref(),
        Some("SHOW SLAVE STATUS: you have an error in your SQL syntax")
    );
}

#[test]
fn mysql_query_is_true_unless_null_empty_or_zero() {
    let hc = testutil::hc("", None);
    let one = |v: Option<&str>| table(testutil::result_set(&["x", "y"], &[&[v, Some("0")]]));
    for v in ["1", "ON", "yes", "0.5", "-1", "abc"] {
        assert_eq!(judge(Query::User, &one(Some(v)), None, &hc).0, "ok None", "{v}");
    }
    for (v, why) in [
        (Some("0"), "mysql_query: \"0\" is not true"),
        (Some("0.00"), "mysql_query: \"0.00\" is not true"),
        (Some(""), "mysql_query: \"\" is not true"),
        (None, "mysql_query: NULL is not true"),
    ] {
        assert_eq!(judge(Query::User, &one(v), None, &hc).0, why);
    }
    assert_eq!(
        judge(Query::User, &Table::default(), None, &hc).0,
        "mysql_query: no rows"
    );
    let t = table(testutil::result_set(&["x"], &[]));
    assert_eq!(judge(Query::User, &t, None, &hc).0, "mysql_query: no rows");
}

#[test]
fn the_plan_follows_the_wanted_role() {
    let hc = testutil::hc("", None);
    assert_eq!(first(None, &hc), None);
    assert_eq!(first(Some(Role::Replica), &hc), Some(Query::Variables));
    let q = HealthCheck {
        mysql_query: Some("SELECT 1".into()),
        ..hc
    };
    assert_eq!(first(None, &q), Some(Query::User));
    assert_eq!(Query::User.sql(&q), "SELECT 1");
}
