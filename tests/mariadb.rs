//! MySQL health checks against a real MariaDB (tests/common/mariadb.rs):
//! a user with a password logs in and stays up, a wrong password is down
//! with the server's "access denied", 200 checks leave `Aborted_connects`
//! and `Aborted_clients` where they were, and `SET GLOBAL read_only` takes
//! a `role = "primary"` backend down and back up. Skipped loudly without
//! `mariadbd` (failing instead under CI=true).

mod common;

use std::time::Duration;

use common::mariadb::MariaDb;
use common::*;

const PASSWORD: &str = "Ch3ck-pw";

/// One service `name` over `db`, checked every `interval_ms`.
fn service(name: &str, db: &MariaDb, interval_ms: u64, keys: &str) -> String {
    format!(
        "[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:0\"\n\
         [service.health_check]\ninterval_ms = {interval_ms}\ntimeout_ms = 2000\nrise = 1\nfall = 1\n\
         mysql_user = \"check\"\n{keys}\n[[service.backend]]\naddress = \"{}\"\n",
        db.addr()
    )
}

fn setup(db: &MariaDb) {
    db.sql(&format!(
        "CREATE USER 'check'@'%' IDENTIFIED BY '{PASSWORD}'; \
         GRANT REPLICA MONITOR ON *.* TO 'check'@'%'"
    ));
}

#[test]
fn real_mariadb_logins_roles_and_no_aborted_connects() {
    let Some(db) = MariaDb::start("real_mariadb_logins_roles_and_no_aborted_connects", &[]) else {
        return;
    };
    setup(&db);
    let good = format!("mysql_password = \"{PASSWORD}\"");
    let text = format!(
        "[global]\nlog_level = \"info\"\n{}{}",
        service("login", &db, 20, &good),
        service("write", &db, 100, &format!("{good}\nrole = \"primary\""))
    );
    let (aborted, clients, connections) = (
        db.status("Aborted_connects"),
        db.status("Aborted_clients"),
        db.status("Connections"),
    );
    let p = Running::start(&text);
    wait_for("200 checks", Duration::from_secs(60), || {
        (db.status("Connections") >= connections + 200).then_some(())
    });
    let checks = db.status("Connections") - connections;
    let (aborted_after, clients_after) = (db.status("Aborted_connects"), db.status("Aborted_clients"));
    eprintln!(
        "{checks} checks: Aborted_connects {aborted} -> {aborted_after}, Aborted_clients {clients} -> {clients_after}"
    );
    assert_eq!(aborted_after, aborted, "a good login is never an aborted connect");
    assert_eq!(clients_after, clients, "every check quit");
    assert!(!p.log_text().contains("is DOWN"), "{}", p.log_text());
    // A `role` backend starts down and comes up once a check saw the role.
    let line = p.wait_log("service=write", SOON);
    assert!(line.contains("is UP (health check: ok)"), "{line}");
    // The proxy's address is not blocked: a login over TCP from 127.0.0.1
    // passes. (MariaDB exempts loopback from its host cache, so blocking
    // cannot happen here whatever the checks do; `Aborted_connects`, which
    // feeds max_connect_errors from other addresses, is the real measure.)
    assert_eq!(db.try_sql_tcp("check", PASSWORD, "SELECT 1").as_deref(), Ok("1"));

    db.sql("SET GLOBAL read_only = 1");
    p.wait_log_count("service=write", 2, SOON);
    let logs = p.log_text();
    let down = logs
        .lines()
        .filter(|l| l.contains("service=write"))
        .nth(1)
        .unwrap_or_default();
    assert!(down.contains("is DOWN (health check: role: read-only)"), "{logs}");
    assert_eq!(p.count_log("service=login"), 0, "role any does not care");
    db.sql("SET GLOBAL read_only = 0");
    p.wait_log_count("service=write", 3, SOON);
    let logs = p.log_text();
    let up = logs
        .lines()
        .filter(|l| l.contains("service=write"))
        .nth(2)
        .unwrap_or_default();
    assert!(up.contains("is UP (health check: ok)"), "{logs}");
    assert!(!p.log_text().contains(PASSWORD));
}

#[test]
fn real_mariadb_wrong_password_is_down_with_access_denied() {
    let Some(db) = MariaDb::start("real_mariadb_wrong_password_is_down_with_access_denied", &[]) else {
        return;
    };
    setup(&db);
    let text = format!(
        "[global]\nlog_level = \"info\"\n[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n{}{}",
        service("denied", &db, 100, "mysql_password = \"not-the-password\""),
        service(
            "replica",
            &db,
            100,
            &format!("mysql_password = \"{PASSWORD}\"\nrole = \"replica\"")
        )
    );
    let aborted = db.status("Aborted_connects");
    let p = Running::start(&text);
    let line = p.wait_log("service=denied", SOON);
    assert!(
        line.contains("is DOWN (health check: access denied for user 'check'@'127.0.0.1' (using password: YES))"),
        "{line}"
    );
    // A writable server is no replica (and its check logs in fine): the
    // backend, down from the start, stays down and says why.
    wait_for("the replica check to see a writable server", SOON, || {
        let j = stats_json(p.stats_addr());
        let b = &j["services"][1]["backends"][0];
        (b["state"] == "down" && b["last_check"] == "role: writable" && b["role"] == "primary").then_some(())
    });
    assert_eq!(p.count_log("service=replica"), 0, "never up, so no change to log");
    assert!(!p.log_text().contains("not-the-password"));
    // The counter the good checks leave alone does see denied logins.
    assert!(db.status("Aborted_connects") > aborted);
}
