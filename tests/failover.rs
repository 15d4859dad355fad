//! Database roles against a real MariaDB primary/replica pair
//! (tests/common/mariadb.rs: two `mariadbd`, GTID replication), with
//! easyproxy in front: a `write` service (`role = "primary"`, both servers,
//! `close_on_down`) and a `read` service (`role = "replica"`, the replica,
//! the primary as its backup), checked every 300 ms with `rise = fall = 1`.
//! The clients are real MySQL sessions through the proxy (a login as `app`,
//! `SELECT @@port`, `INSERT`).
//!
//! - a switchover moves new write connections to the promoted server within
//!   2 s, and the session left on the demoted primary is closed;
//! - reads leave a replica whose SQL thread stopped and come back;
//! - a second writable server gets no writes while the first is up, and an
//!   `error` line names both;
//! - replica checks leave `Aborted_connects` alone; a wrong password is a
//!   DOWN backend with the server's "access denied".
//!
//! Two pairs, one per test (the switchover is not undone), running side by
//! side. Skipped loudly without `mariadbd` (failing instead under CI=true).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::mariadb::*;
use common::*;
use serde_json::Value;

/// The failover bound the issue fixes.
const FAILOVER_LIMIT: Duration = Duration::from_secs(2);

fn health_check(role: &str, password: &str, interval_ms: u64) -> String {
    format!(
        "[service.health_check]\ninterval_ms = {interval_ms}\ntimeout_ms = 1000\nrise = 1\nfall = 1\n\
         mysql_user = \"{CHECK_USER}\"\nmysql_password = \"{password}\"\nrole = \"{role}\"\n"
    )
}

/// `write` (role primary, both servers, close_on_down) and `read` (role
/// replica, the replica with the primary as backup), checked every 300 ms.
fn proxy_config(pair: &Pair) -> String {
    format!(
        "[global]\nlog_level = \"info\"\n\n[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\n\
         [[service]]\nname = \"write\"\nlisten = \"127.0.0.1:0\"\nclose_on_down = true\n{}\n\
         [[service.backend]]\naddress = \"{}\"\n[[service.backend]]\naddress = \"{}\"\n\n\
         [[service]]\nname = \"read\"\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[service.backend]]\naddress = \"{}\"\n[[service.backend]]\naddress = \"{}\"\nbackup = true\n",
        health_check("primary", CHECK_PASSWORD, 300),
        pair.primary.addr(),
        pair.replica.addr(),
        health_check("replica", CHECK_PASSWORD, 300),
        pair.replica.addr(),
        pair.primary.addr(),
    )
}

fn stats_json(addr: SocketAddr) -> Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// Backend `addr` of service `service` in the stats JSON.
fn backend(stats: &Value, service: &str, addr: SocketAddr) -> Value {
    let services = stats["services"].as_array().unwrap();
    let svc = services.iter().find(|s| s["name"] == service).unwrap();
    let backends = svc["backends"].as_array().unwrap();
    let want = addr.to_string();
    backends.iter().find(|b| b["address"] == want.as_str()).unwrap().clone()
}

/// Waits until a new session through `addr` reaches the server on `port`
/// (`f` is one client session: its server's port); how long it took.
fn wait_reaches(
    what: &str,
    addr: SocketAddr,
    port: u16,
    limit: Duration,
    f: fn(SocketAddr) -> Result<u16, String>,
) -> Duration {
    let start = Instant::now();
    let mut last = Err(String::new());
    loop {
        let got = f(addr);
        if got == Ok(port) {
            return start.elapsed();
        }
        last = got.or(last);
        assert!(
            start.elapsed() < limit,
            "{what}: no session reached port {port} within {limit:?} (last: {last:?})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// (a) and (b): a switchover. New write connections reach the promoted
/// server within 2 s of its start; the write session left open on the old
/// primary is closed by close_on_down (the client sees EOF) and the log
/// says so; reads fall back to the backup.
#[test]
fn switchover_moves_writes_within_2s_and_closes_the_demoted_primarys_sessions() {
    let test = "switchover_moves_writes_within_2s_and_closes_the_demoted_primarys_sessions";
    let Some(pair) = Pair::start(test) else {
        return;
    };
    let (old, new) = (&pair.primary, &pair.replica);
    let p = Running::start(&proxy_config(&pair));
    let (write, read, stats) = (p.addr("write"), p.addr("read"), p.stats_addr());

    // Role backends start down and come up once a check has seen the role.
    wait_reaches("first write", write, old.port, SOON, app_write);
    wait_reaches("first read", read, new.port, SOON, app_port);
    let s = wait_for("every backend checked", SOON, || {
        let s = stats_json(stats);
        let checked = |svc: &str, db: &MariaDb| backend(&s, svc, db.addr())["last_check"] != "none";
        (checked("write", old) && checked("write", new) && checked("read", old) && checked("read", new)).then_some(s)
    });
    assert_eq!(backend(&s, "write", old.addr())["role"], "primary", "{s}");
    assert_eq!(backend(&s, "write", new.addr())["role"], "replica", "{s}");
    assert_eq!(backend(&s, "write", new.addr())["state"], "down", "{s}");
    assert_eq!(backend(&s, "write", new.addr())["last_check"], "role: read-only", "{s}");
    assert!(backend(&s, "read", new.addr())["replication_lag_ms"].is_u64(), "{s}");
    assert_eq!(backend(&s, "read", old.addr())["state"], "up", "login-only backup: {s}");

    // A session held open on the primary through `write`.
    let mut held = Client::login(write, APP_USER, APP_PASSWORD).unwrap();
    assert_eq!(held.server_port(), Ok(old.port));
    held.query("INSERT INTO app.t (port) VALUES (@@port)").unwrap();

    let begun = Instant::now();
    pair.switchover();
    let writable = begun.elapsed();
    let took = wait_reaches(
        "write after the switchover",
        write,
        new.port,
        FAILOVER_LIMIT * 2,
        app_write,
    );
    let failover = writable + took;
    eprintln!(
        "FIGURE failover: new write connections reach the promoted server {} ms after the switchover began \
         ({} ms after it became writable; interval_ms = 300, rise = fall = 1)",
        ms(failover),
        ms(took)
    );
    assert!(failover <= FAILOVER_LIMIT, "failover took {failover:?}");
    // And they stay there.
    for _ in 0..10 {
        assert_eq!(app_write(write), Ok(new.port));
    }

    // (b) The held session was closed, both sides, and the log says so.
    assert!(
        held.closed_within(SOON),
        "the session on the demoted primary is still open"
    );
    eprintln!(
        "FIGURE close_on_down: the session on the demoted primary found closed {} ms after the switchover began",
        ms(begun.elapsed())
    );
    assert!(held.query("SELECT 1").is_err());
    let down = p.wait_log(&format!("service=write backend={} is DOWN", old.addr()), SOON);
    assert!(down.contains("role: read-only"), "{down}");
    let closed = p.wait_log("close_on_down", SOON);
    assert!(
        closed.contains(&old.addr().to_string()) && closed.contains('1'),
        "{closed}"
    );
    wait_for("the old primary to lose the app session", SOON, || {
        (old.sql(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{APP_USER}'"
        )) == "0")
            .then_some(())
    });

    // The rows: the one written before and the ones after, on the new primary.
    let before = new.sql(&format!("SELECT COUNT(*) FROM app.t WHERE port = {}", old.port));
    let after = new.sql(&format!("SELECT COUNT(*) FROM app.t WHERE port = {}", new.port));
    assert!(before.parse::<u32>().unwrap() >= 2, "{before}");
    assert!(after.parse::<u32>().unwrap() >= 11, "{after}");

    // Reads: the promoted server is no replica any more; the backup (the
    // old primary, checked for login only) takes them.
    wait_reaches("read after the switchover", read, old.port, SOON, app_port);
    let s = stats_json(stats);
    assert_eq!(backend(&s, "write", new.addr())["role"], "primary", "{s}");
    assert_eq!(backend(&s, "write", new.addr())["state"], "up", "{s}");
    assert_eq!(backend(&s, "write", old.addr())["role"], "replica", "{s}");
    assert_eq!(backend(&s, "write", old.addr())["state"], "down", "{s}");
    assert_eq!(backend(&s, "read", new.addr())["state"], "down", "{s}");
    assert_eq!(backend(&s, "read", old.addr())["state"], "up", "{s}");
}

/// (c), (d), (e) on one live pair, in turn, each leaving it as it found it.
#[test]
fn live_pair_stopped_replica_second_writable_and_logins() {
    let test = "live_pair_stopped_replica_second_writable_and_logins";
    let Some(pair) = Pair::start(test) else {
        return;
    };
    logins_leave_no_aborted_connects_and_wrong_password_is_denied(&pair);
    reads_leave_a_replica_whose_sql_thread_stopped(&pair);
    a_second_writable_server_gets_no_writes(&pair);
}

/// (e) 200 and more `role = "replica"` checks (SHOW SLAVE STATUS after the
/// login) and login-only checks of the backup leave `Aborted_connects` and
/// `Aborted_clients` where they were; a wrong password is DOWN with the
/// server's "access denied"; the proxy's address is not blocked after it.
fn logins_leave_no_aborted_connects_and_wrong_password_is_denied(pair: &Pair) {
    let (primary, replica) = (&pair.primary, &pair.replica);
    let counters = |db: &MariaDb| (db.status("Aborted_connects"), db.status("Aborted_clients"));
    let (replica_before, primary_before) = (counters(replica), counters(primary));
    let connections = replica.status("Connections");
    let text = format!(
        "[global]\nlog_level = \"info\"\n\n[[service]]\nname = \"reads\"\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[service.backend]]\naddress = \"{}\"\n[[service.backend]]\naddress = \"{}\"\nbackup = true\n",
        health_check("replica", CHECK_PASSWORD, 20),
        replica.addr(),
        primary.addr()
    );
    let p = Running::start(&text);
    let reads = p.addr("reads");
    wait_for("200 replica checks", Duration::from_secs(60), || {
        (replica.status("Connections") >= connections + 200).then_some(())
    });
    let checks = replica.status("Connections") - connections;
    // Sessions through the proxy quit cleanly too.
    assert_eq!(app_port(reads), Ok(replica.port));
    let (replica_after, primary_after) = (counters(replica), counters(primary));
    eprintln!(
        "FIGURE logins: {checks} replica checks: (Aborted_connects, Aborted_clients) replica {replica_before:?} -> \
         {replica_after:?}, backup primary {primary_before:?} -> {primary_after:?}"
    );
    assert_eq!(replica_after, replica_before, "replica checks abort nothing");
    assert_eq!(primary_after, primary_before, "login-only backup checks abort nothing");
    assert!(!p.log_text().contains("is DOWN"), "{}", p.log_text());
    drop(p);

    // A wrong password: the backend (down from the start, as a role
    // backend) stays down with the server's message as its reason.
    let text = format!(
        "[global]\nlog_level = \"info\"\n\n[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\n\
         [[service]]\nname = \"denied\"\nlisten = \"127.0.0.1:0\"\n{}\n\
         [[service.backend]]\naddress = \"{}\"\n",
        health_check("replica", "not-the-password", 100),
        replica.addr()
    );
    let p = Running::start(&text);
    let denied = format!("access denied for user '{CHECK_USER}'@'127.0.0.1' (using password: YES)");
    let b = wait_for("the denied login in /stats", SOON, || {
        let b = backend(&stats_json(p.stats_addr()), "denied", replica.addr());
        (b["last_check"] == denied.as_str()).then_some(b)
    });
    assert_eq!(b["state"], "down", "{b}");
    assert!(b["role"].is_null(), "no role seen without a login: {b}");
    assert_eq!(app_port(p.addr("denied")), Err("connection closed (EOF)".into()));
    assert!(!p.log_text().contains("not-the-password"));
    // The denied logins are counted, and 127.0.0.1 is still let in.
    assert!(replica.status("Aborted_connects") > replica_before.0);
    assert_eq!(
        replica.try_sql_tcp(CHECK_USER, CHECK_PASSWORD, "SELECT 1").as_deref(),
        Ok("1")
    );
}

/// (c) Reads leave a replica whose SQL thread stopped (for the backup
/// primary) and return when it runs again. `read` has no close_on_down: a
/// session already on the replica stays.
fn reads_leave_a_replica_whose_sql_thread_stopped(pair: &Pair) {
    let (primary, replica) = (&pair.primary, &pair.replica);
    let p = Running::start(&proxy_config(pair));
    let (write, read, stats) = (p.addr("write"), p.addr("read"), p.stats_addr());
    wait_reaches("first read", read, replica.port, SOON, app_port);
    wait_reaches("first write", write, primary.port, SOON, app_write);
    let mut held = Client::login(read, APP_USER, APP_PASSWORD).unwrap();
    assert_eq!(held.server_port(), Ok(replica.port));

    let begun = Instant::now();
    replica.stop_sql_thread();
    let took = wait_reaches("reads on the backup", read, primary.port, SOON, app_port);
    eprintln!(
        "FIGURE stopped SQL thread: new reads on the backup primary {} ms after STOP SLAVE SQL_THREAD began",
        ms(begun.elapsed())
    );
    let line = p.wait_log(&format!("service=read backend={} is DOWN", replica.addr()), SOON);
    assert!(line.contains("replication: SQL thread stopped"), "{line}");
    let s = stats_json(stats);
    let b = backend(&s, "read", replica.addr());
    assert_eq!(b["state"], "down", "{s}");
    assert_eq!(b["role"], "replica", "{s}");
    assert!(b["replication_lag_ms"].is_null(), "{s}");
    for _ in 0..5 {
        assert_eq!(app_port(read), Ok(primary.port));
    }
    // Writes go on, and the held read session too.
    assert_eq!(app_write(write), Ok(primary.port));
    assert_eq!(held.server_port(), Ok(replica.port));
    let _ = took;

    let begun = Instant::now();
    replica.start_sql_thread();
    wait_reaches("reads back on the replica", read, replica.port, SOON, app_port);
    eprintln!(
        "FIGURE restarted SQL thread: new reads back on the replica {} ms after START SLAVE SQL_THREAD began",
        ms(begun.elapsed())
    );
    p.wait_log(&format!("service=read backend={} is UP", replica.addr()), SOON);
    for _ in 0..5 {
        assert_eq!(app_port(read), Ok(replica.port));
    }
    replica.wait_caught_up(primary);
}

/// (d) Both servers writable: every write connection over ~3 s lands on
/// the primary that was up first, and an `error` line names both.
fn a_second_writable_server_gets_no_writes(pair: &Pair) {
    let (primary, replica) = (&pair.primary, &pair.replica);
    let p = Running::start(&proxy_config(pair));
    let (write, stats) = (p.addr("write"), p.stats_addr());
    wait_reaches("first write", write, primary.port, SOON, app_write);

    replica.set_read_only(false);
    let line = wait_for("an error line naming both writable servers", SOON, || {
        p.logs
            .lock()
            .unwrap()
            .iter()
            .find(|l| {
                l.contains("[ERROR]")
                    && l.contains(&primary.addr().to_string())
                    && l.contains(&replica.addr().to_string())
            })
            .cloned()
    });
    eprintln!("two writable servers: {line}");
    let start = Instant::now();
    let mut writes = 0;
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(app_write(write), Ok(primary.port), "write #{writes}");
        writes += 1;
    }
    let s = stats_json(stats);
    let second = backend(&s, "write", replica.addr());
    assert_eq!(second["state"], "down", "{s}");
    assert_eq!(second["role"], "primary", "{s}");
    assert_eq!(second["total"], 0, "{s}");
    eprintln!("FIGURE second writable server: {writes} write connections in 3 s, all on the first primary");

    replica.set_read_only(true);
    replica.wait_caught_up(primary);
    // The `read` service takes the replica back.
    wait_reaches(
        "reads back on the replica",
        p.addr("read"),
        replica.port,
        SOON,
        app_port,
    );
}
