//! Database roles on top of the MySQL check, against scripted MySQL 8
//! servers (tests/common/mysql.rs): role backends start down, one primary
//! at a time, backups of a replica service checked for login only, and
//! `close_on_down`. The same against a real MariaDB primary/replica pair is
//! in tests/failover.rs.

mod common;

use std::io::Read;
use std::net::SocketAddr;

use common::mysql::{Auth, Db, Server};
use common::*;
use serde_json::Value;

const PASSWORD: &str = "s3cret-Pa55";

/// One service `db` over `servers` (extra backend keys beside each), with
/// `keys` in its health check and `service_keys` in the service; checked
/// every 100 ms, rise = fall = 1.
fn config(servers: &[(&Server, &str)], keys: &str, service_keys: &str) -> String {
    let mut c = format!(
        "[global]\nlog_level = \"info\"\n[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\
         [[service]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\n{service_keys}\n\
         [service.health_check]\ninterval_ms = 100\ntimeout_ms = 1000\nrise = 1\nfall = 1\n\
         mysql_user = \"check\"\nmysql_password = \"{PASSWORD}\"\n{keys}\n"
    );
    for (s, extra) in servers {
        c.push_str(&format!(
            "[[service.backend]]\naddress = \"{}\"\n{extra}\n",
            s.backend.addr
        ));
    }
    c
}

fn server() -> Server {
    Server::spawn(Db::new(Auth::Fast, "check", PASSWORD))
}

fn replica() -> Server {
    let s = server();
    {
        let mut db = s.db();
        db.read_only = true;
        db.replica = Some(("Yes", "Yes", Some(0)));
    }
    s
}

fn stats(p: &Running) -> Value {
    stats_json(p.stats_addr())
}

/// The `/stats` entry of the backend at `addr`.
fn backend(p: &Running, addr: SocketAddr) -> Value {
    stats(p)["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr.to_string())
        .cloned()
        .unwrap()
}

/// A `role` backend takes no client before a check has seen its role: a
/// server that never finishes its greeting keeps it down, and a client is
/// turned away (`no_backend`) instead of reaching it.
#[test]
fn role_backends_start_down() {
    let silent = Backend::spawn(|s| {
        let mut s = s;
        let mut b = [0u8; 64];
        while matches!(s.read(&mut b), Ok(n) if n > 0) {}
    });
    let text = format!(
        "[global]\nlog_level = \"info\"\n[[service]]\nname = \"write\"\nlisten = \"127.0.0.1:0\"\n\
         [service.health_check]\ninterval_ms = 60000\ntimeout_ms = 60000\n\
         mysql_user = \"check\"\nrole = \"primary\"\n[[service.backend]]\naddress = \"{}\"\n",
        silent.addr
    );
    let p = Running::start(&text);
    let mut c = connect(p.addr("write"));
    assert!(closes_within(&mut c, SOON), "the client is turned away");
    p.wait_log("end=no_backend", SOON);
}

/// Two writable servers in a `role = "primary"` service: the one up first
/// stays the primary, the other stays down with a reason naming it (and one
/// `error` line); when the primary turns read-only the other takes over.
#[test]
fn one_primary_at_a_time() {
    let (a, b) = (server(), server());
    b.db().read_only = true;
    let p = Running::start(&config(&[(&a, ""), (&b, "")], "role = \"primary\"", ""));
    wait_for("a to be the primary", SOON, || {
        (backend(&p, a.backend.addr)["state"] == "up").then_some(())
    });
    b.db().read_only = false; // a second writable server
    let reason = format!("role: writable, but {} is the primary", a.backend.addr);
    wait_for("b to be held down", SOON, || {
        (backend(&p, b.backend.addr)["last_check"] == reason.as_str()).then_some(())
    });
    for _ in 0..5 {
        let (ja, jb) = (backend(&p, a.backend.addr), backend(&p, b.backend.addr));
        assert_eq!((ja["state"].as_str(), jb["state"].as_str()), (Some("up"), Some("down")));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let line = p.wait_log("is writable too", SOON);
    assert!(
        line.contains("[ERROR]") && line.contains(&a.backend.addr.to_string()),
        "{line}"
    );
    assert_eq!(p.count_log("is writable too"), 1, "said once, not at every check");
    a.db().read_only = true; // a demoted, b the one writable server
    wait_for("b to take over", SOON, || {
        let (ja, jb) = (backend(&p, a.backend.addr), backend(&p, b.backend.addr));
        (ja["state"] == "down" && jb["state"] == "up" && jb["role"] == "primary").then_some(())
    });
}

/// Backups of a `role = "replica"` service are checked for login only: the
/// primary listed as backup is up (no role query runs on it) and serves
/// when the replica's SQL thread stops.
#[test]
fn replica_backups_are_checked_for_login_only() {
    let (r, primary) = (replica(), server());
    let p = Running::start(&config(
        &[(&r, ""), (&primary, "backup = true")],
        "role = \"replica\"",
        "",
    ));
    wait_for("both up", SOON, || {
        let (jr, jp) = (backend(&p, r.backend.addr), backend(&p, primary.backend.addr));
        (jr["state"] == "up" && jp["state"] == "up").then_some(())
    });
    assert!(primary.db().queries.is_empty(), "{:?}", primary.db().queries);
    assert_eq!(backend(&p, r.backend.addr)["role"], "replica");
    assert_eq!(backend(&p, r.backend.addr)["replication_lag_ms"], 0);
    r.db().replica = Some(("Yes", "No", None));
    wait_for("the replica to go down", SOON, || {
        (backend(&p, r.backend.addr)["state"] == "down").then_some(())
    });
    assert_eq!(backend(&p, primary.backend.addr)["state"], "up");
}

/// With `close_on_down`, a session open on a backend that goes down (here
/// a primary turning read-only) is closed, and the log says how many.
#[test]
fn close_on_down_closes_the_sessions_of_a_backend_that_goes_down() {
    let a = server();
    let p = Running::start(&config(&[(&a, "")], "role = \"primary\"", "close_on_down = true"));
    wait_for("a to be up", SOON, || {
        (backend(&p, a.backend.addr)["state"] == "up").then_some(())
    });
    let mut client = connect(p.addr("db"));
    let mut greeting = [0u8; 4];
    client.read_exact(&mut greeting).unwrap(); // the server's greeting came through
    a.db().read_only = true;
    assert!(
        closes_within(&mut client, SOON),
        "the session on the demoted primary is closed"
    );
    let line = p.wait_log("(close_on_down)", SOON);
    assert!(line.contains("closed 1 connections"), "{line}");
    p.wait_log("end=backend_down", SOON);
}

/// Only a backend its check saw writable counts as "the primary": when a
/// reload turns a login-only service into a `role = "primary"` one, a
/// read-only server that was up does not hold the writable one down.
#[test]
fn only_a_backend_seen_writable_holds_the_primary_slot() {
    let (ro, rw) = (replica(), server());
    let servers = [(&ro, ""), (&rw, "")];
    let p = Running::start(&config(&servers, "", ""));
    wait_for("both up (login only)", SOON, || {
        let (a, b) = (backend(&p, ro.backend.addr), backend(&p, rw.backend.addr));
        (a["state"] == "up" && b["state"] == "up").then_some(())
    });
    p.reload(&config(&servers, "role = \"primary\"", ""));
    wait_for("the writable server to be the only one up", SOON, || {
        let (a, b) = (backend(&p, ro.backend.addr), backend(&p, rw.backend.addr));
        (a["state"] == "down" && b["state"] == "up" && b["role"] == "primary").then_some(())
    });
    assert_eq!(p.count_log("is writable too"), 0, "{}", p.log_text());
}
