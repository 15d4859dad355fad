//! MySQL health checks against scripted MySQL 8 servers (tests/common/mysql.rs):
//! caching_sha2 fast and full (RSA) authentication, an auth switch to
//! mysql_native_password, an ERR greeting and a wrong password, and the
//! primary and replica roles following the server's state. Every check
//! quits cleanly: the server sees no aborted session. (The server key
//! settings of full authentication: tests/mysql_key.rs.)

mod common;

use common::mysql::{Auth, Db, Server, PUBLIC_PEM};
use common::*;

const PASSWORD: &str = "s3cret-Pa55";

/// One service over `servers`, checked every 100 ms, rise = fall = 1.
fn config(servers: &[&Server], keys: &str) -> String {
    let mut c = format!(
        "[global]\nlog_level = \"debug\"\n[[service]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\n\
         [service.health_check]\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 1\nfall = 1\n\
         mysql_user = \"check\"\nmysql_password = \"{PASSWORD}\"\n{keys}\n"
    );
    for s in servers {
        c.push_str(&format!("[[service.backend]]\naddress = \"{}\"\n", s.backend.addr));
    }
    c
}

fn server(auth: Auth, password: &str) -> Server {
    Server::spawn(Db::new(auth, "check", password))
}

/// The scripted servers' key pinned: `mysql_server_public_key_file` in
/// `dir`, as a health-check line.
fn pinned_key(dir: &TempDir) -> String {
    let path = dir.path("public_key.pem");
    std::fs::write(&path, PUBLIC_PEM).unwrap();
    format!("mysql_server_public_key_file = {:?}", path.display().to_string())
}

fn wait_logins(s: &Server, n: usize) {
    wait_for("logins", SOON, || (s.db().logins >= n).then_some(()));
}

#[test]
fn every_auth_path_logs_in_and_quits_cleanly() {
    let servers = [
        server(Auth::Native, PASSWORD),
        server(Auth::Fast, PASSWORD),
        server(Auth::Full, PASSWORD),
        server(Auth::SwitchToNative, PASSWORD),
    ];
    let refs: Vec<&Server> = servers.iter().collect();
    let dir = TempDir::new();
    let p = Running::start(&config(&refs, &pinned_key(&dir)));
    for s in &servers {
        wait_logins(s, 5);
    }
    let logs = p.log_text();
    assert!(!logs.contains("is DOWN"), "{logs}");
    assert!(!logs.contains(PASSWORD), "the password is never logged");
    for s in &servers {
        let db = s.db();
        assert_eq!((db.denied, db.aborted), (0, 0), "{:?}: {db:?}", db.auth);
        // Every finished login quit (one may be in flight).
        assert!(db.quits + 1 >= db.logins, "{db:?}");
        assert!(db.queries.is_empty(), "role any runs no query: {:?}", db.queries);
    }
}

#[test]
fn an_err_greeting_and_a_wrong_password_are_down_with_the_server_message() {
    let busy = server(Auth::TooManyConnections, PASSWORD);
    let wrong = server(Auth::Full, "another password");
    let dir = TempDir::new();
    let p = Running::start(&config(&[&busy, &wrong], &pinned_key(&dir)));
    let line = p.wait_log(&format!("backend={} is DOWN", busy.backend.addr), SOON);
    assert!(line.contains("(health check: too many connections)"), "{line}");
    let line = p.wait_log(&format!("backend={} is DOWN", wrong.backend.addr), SOON);
    assert!(
        line.contains("(health check: access denied for user 'check'@'127.0.0.1' (using password: YES))"),
        "{line}"
    );
    assert_eq!(wrong.db().logins, 0);
    assert!(!p.log_text().contains(PASSWORD));
}

#[test]
fn a_primary_is_down_while_read_only() {
    let s = server(Auth::Fast, PASSWORD);
    let p = Running::start(&config(&[&s], "role = \"primary\""));
    wait_logins(&s, 3);
    assert!(!p.log_text().contains("is DOWN"));
    s.db().read_only = true;
    let line = p.wait_log("is DOWN", SOON);
    assert!(line.contains("(health check: role: read-only)"), "{line}");
    s.db().read_only = false;
    let line = p.wait_log("is UP", SOON);
    assert!(line.contains("(health check: ok)"), "{line}");
    let db = s.db();
    assert!(
        db.queries.iter().all(|q| q.starts_with("SHOW GLOBAL VARIABLES")),
        "{:?}",
        db.queries
    );
    assert_eq!(db.aborted, 0, "role failures quit cleanly too: {db:?}");
}

#[test]
fn a_replica_follows_its_threads_and_lag() {
    let s = server(Auth::Native, PASSWORD);
    {
        let mut db = s.db();
        db.read_only = true;
        db.old_syntax = true;
        db.replica = Some(("Yes", "Yes", Some(1)));
    }
    let keys = "role = \"replica\"\nmax_replication_lag_ms = 5000";
    let p = Running::start(&config(&[&s], keys));
    wait_logins(&s, 3);
    assert!(!p.log_text().contains("is DOWN"));
    let queries = s.db().queries.clone();
    assert!(
        queries.iter().any(|q| q == "SHOW REPLICA STATUS") && queries.iter().any(|q| q == "SHOW SLAVE STATUS"),
        "falls back to SHOW SLAVE STATUS: {queries:?}"
    );
    s.db().replica = Some(("Yes", "No", None));
    let line = p.wait_log("is DOWN", SOON);
    assert!(
        line.contains("(health check: replication: SQL thread stopped)"),
        "{line}"
    );
    s.db().replica = Some(("Yes", "Yes", Some(0)));
    // Role backends start down: the first UP was the start.
    p.wait_log_count("is UP", 2, SOON);
    s.db().replica = Some(("Yes", "Yes", Some(12)));
    wait_for("the lag to take it down", SOON, || {
        (p.count_log("is DOWN") >= 2).then_some(())
    });
    assert!(p.log_text().contains("(health check: replication lag 12.0s > 5.0s)"));
    s.db().replica = Some(("Yes", "Yes", Some(0)));
    p.wait_log_count("is UP", 3, SOON);
    s.db().read_only = false;
    wait_for("the writable server to go down", SOON, || {
        (p.count_log("is DOWN") >= 3).then_some(())
    });
    assert!(p.log_text().contains("(health check: role: writable)"));
    assert_eq!(s.db().aborted, 0);
}

#[test]
fn check_prints_password_set_never_the_password() {
    let s = server(Auth::Native, PASSWORD);
    let dir = TempDir::new();
    let path = dir.path("easyproxy.toml");
    std::fs::write(&path, config(&[&s], "role = \"primary\"")).unwrap();
    let out = std::process::Command::new(bin())
        .arg("--check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("mysql_user \"check\" password: set role primary"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}
