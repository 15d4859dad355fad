//! The admin API against real sockets: drain, maint, runtime weights and
//! close do what the spec says, survive a SIGHUP and (with `state_file`) a
//! restart, and `reload` answers with its outcome.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::Duration;

use common::admin::*;
use common::*;
use serde_json::Value;

/// Which backend serves a new client (its tag byte).
fn served_by(addr: SocketAddr) -> String {
    let mut c = connect(addr);
    String::from_utf8(read_n(&mut c, 1)).unwrap()
}

fn sequence(addr: SocketAddr, n: usize) -> String {
    (0..n).map(|_| served_by(addr)).collect()
}

#[test]
fn a_drained_backend_gets_no_new_client_while_its_open_connection_goes_on() {
    let (a, b) = (Backend::tagged("A"), Backend::tagged("B"));
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, ""), (b.addr, "")]));
    let svc = p.addr("svc");
    let mut open = connect(svc);
    assert_eq!(read_n(&mut open, 1), b"A");
    let v = set_state(&p, a.addr, "drain");
    assert_eq!(
        (v["admin_state"].as_str(), v["was"].as_str()),
        (Some("drain"), Some("ready"))
    );
    assert_eq!(v["active"], 1);
    assert_eq!(sequence(svc, 6), "BBBBBB");
    assert_eq!(roundtrip(&mut open, b"still relayed"), b"still relayed");
    let st = backend(&status(&p), a.addr);
    assert_eq!(
        (st["state"].as_str(), st["admin_state"].as_str()),
        (Some("up"), Some("drain"))
    );
    assert_eq!(st["active"], 1);
    let line = p.wait_log(&format!(" drain svc/{}", a.addr), SOON);
    assert!(line.contains("[WARN] admin: peer=127.0.0.1:"), "{line}");
    set_state(&p, a.addr, "ready");
    assert!(sequence(svc, 4).contains('A'), "back in rotation");
}

#[test]
fn maint_stops_the_backends_probes_and_ready_brings_them_back() {
    let probed = Backend::spawn(drop);
    let files = AdminFiles::new();
    let check = "[service.health_check]\ninterval_ms = 50\ntimeout_ms = 40\n";
    let p = Running::start(&files.config(check, &[(probed.addr, "")]));
    wait_for("probes", SOON, || (probed.accepted() >= 3).then_some(()));
    // Over the unix socket (no token there).
    let body = format!(r#"{{"service":"svc","backend":"{}","state":"maint"}}"#, probed.addr);
    let (code, v) = api_unix(&files.socket(), "POST", "/v1/backend/state", &body);
    assert_eq!(code, 200, "{v}");
    thread::sleep(Duration::from_millis(300)); // a check already running ends
    let before = probed.accepted();
    thread::sleep(Duration::from_millis(1000));
    let during = probed.accepted() - before;
    assert_eq!(
        during, 0,
        "{during} probe connections in maintenance (20 expected without)"
    );
    let st = backend(&status(&p), probed.addr);
    assert_eq!(
        (st["state"].as_str(), st["admin_state"].as_str()),
        (Some("maint"), Some("maint"))
    );
    set_state(&p, probed.addr, "ready");
    let after = probed.accepted();
    wait_for("probes again", SOON, || (probed.accepted() >= after + 3).then_some(()));
    wait_backend(&p, probed.addr, "up and ready", |b| {
        b["state"] == "up" && b["admin_state"] == "ready"
    });
}

#[test]
fn weight_three_to_one_gives_three_to_one_and_reset_returns_to_the_file() {
    let (a, b) = (Backend::tagged("A"), Backend::tagged("B"));
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, ""), (b.addr, "")]));
    let svc = p.addr("svc");
    assert_eq!(sequence(svc, 4), "ABAB");
    let v = set_weight(&p, a.addr, "3");
    assert_eq!((v["weight"].as_u64(), v["weight_config"].as_u64()), (Some(3), Some(1)));
    // Smooth weighted round robin: 3 of every 4, interleaved.
    assert_eq!(sequence(svc, 8), "AABAAABA");
    let st = backend(&status(&p), a.addr);
    assert_eq!(
        (st["weight"].as_u64(), st["weight_config"].as_u64()),
        (Some(3), Some(1))
    );
    set_weight(&p, a.addr, "null");
    assert_eq!(sequence(svc, 4), "ABAB");
    assert_eq!(backend(&status(&p), a.addr)["weight"], 1);
    let (code, _, v) = api_tcp(
        admin_addr(&p),
        "POST",
        "/v1/backend/weight",
        Some(TOKEN),
        &format!(r#"{{"service":"svc","backend":"{}","weight":257}}"#, a.addr),
    );
    assert_eq!(code, 400, "{v}");
}

#[test]
fn close_ends_exactly_that_backends_sessions_and_counts_them() {
    let (a, b) = (Backend::tagged("A"), Backend::tagged("B"));
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, ""), (b.addr, "")]));
    let svc = p.addr("svc");
    let mut conns: Vec<_> = (0..3).map(|_| connect(svc)).collect();
    let tags: Vec<u8> = conns.iter_mut().map(|c| read_n(c, 1)[0]).collect();
    assert_eq!(tags, b"ABA");
    let body = format!(r#"{{"service":"svc","backend":"{}"}}"#, a.addr);
    let (code, _, v) = api_tcp(admin_addr(&p), "POST", "/v1/backend/close", Some(TOKEN), &body);
    assert_eq!((code, v["closed"].as_u64()), (200, Some(2)), "{v}");
    assert!(closes_within(&mut conns[0], SOON) && closes_within(&mut conns[2], SOON));
    assert_eq!(roundtrip(&mut conns[1], b"B lives"), b"B lives");
    assert_eq!(backend(&status(&p), a.addr)["active"], 0);
    p.wait_log("end=admin_close", SOON);
    assert!(p.log_text().contains(&format!("close svc/{}: 2 connections", a.addr)));
    let (code, _, v) = api_tcp(admin_addr(&p), "POST", "/v1/backend/close", Some(TOKEN), &body);
    assert_eq!((code, v["closed"].as_u64()), (200, Some(0)));
    let unknown = r#"{"service":"svc","backend":"10.9.9.9:1"}"#;
    let (code, _, v) = api_tcp(admin_addr(&p), "POST", "/v1/backend/close", Some(TOKEN), unknown);
    assert_eq!(code, 404, "{v}");
    assert!(v["error"].as_str().unwrap().contains("has no backend"), "{v}");
}

/// Drain, maint and a weight, then SIGHUP, then a restart on the same
/// state file: all three hold, and traffic follows them.
#[test]
fn admin_changes_survive_a_sighup_and_a_restart() {
    let (a, b, c) = (Backend::tagged("A"), Backend::tagged("B"), Backend::tagged("C"));
    let files = AdminFiles::new();
    let text = files.config("", &[(a.addr, ""), (b.addr, ""), (c.addr, "")]);
    let mut p = Running::start(&text);
    set_state(&p, a.addr, "drain");
    set_state(&p, c.addr, "maint");
    set_weight(&p, b.addr, "5");
    let expect = |p: &Running| {
        let st = status(p);
        assert_eq!(backend(&st, a.addr)["admin_state"], "drain", "{st}");
        assert_eq!(backend(&st, c.addr)["admin_state"], "maint");
        assert_eq!(backend(&st, b.addr)["weight"], 5);
        assert_eq!(sequence(p.addr("svc"), 3), "BBB");
    };
    p.reload(&text);
    p.wait_log("reload done", SOON);
    expect(&p);
    wait_for("the state file", SOON, || {
        let s = std::fs::read_to_string(files.state_file()).unwrap_or_default();
        (s.contains("\"drain\"") && s.contains("\"weight\": 5")).then_some(())
    });
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(SOON).success());
    assert!(!files.socket().exists(), "the socket file goes with the proxy");
    let p = Running::start(&text);
    p.wait_log("state file", SOON);
    expect(&p);
    // A backend removed from the file forgets what it was told.
    let without_a = files.config("", &[(b.addr, ""), (c.addr, "")]);
    p.reload(&without_a);
    p.wait_log_count("reload done", 1, SOON);
    p.reload(&text);
    p.wait_log_count("reload done", 2, SOON);
    assert_eq!(backend(&status(&p), a.addr)["admin_state"], "ready");
    wait_for("the state file without A", SOON, || {
        let s = std::fs::read_to_string(files.state_file()).unwrap_or_default();
        (!s.contains(&a.addr.to_string()) && s.contains("maint")).then_some(())
    });
}

#[test]
fn the_unix_socket_is_0600_and_needs_no_token() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let _p = Running::start(&files.config("", &[(a.addr, "")]));
    let meta = std::fs::symlink_metadata(files.socket()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let (code, v) = api_unix(&files.socket(), "GET", "/v1/status", "");
    assert_eq!(code, 200);
    assert_eq!(v["services"][0]["name"], "svc");
}

#[test]
fn reload_through_the_api_answers_how_it_went() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let text = files.config("", &[(a.addr, "")]);
    let p = Running::start(&text);
    std::fs::write(&p.config, format!("{text}\n[[service]]\nnmae = \"x\"\n")).unwrap();
    let (code, v) = api_unix(&files.socket(), "POST", "/v1/reload", "");
    assert_eq!((code, &v["ok"]), (200, &Value::Bool(false)), "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(error.contains("nmae"), "{error}");
    assert_eq!(status(&p)["reloads_failed"], 1);
    let b = Backend::echo();
    std::fs::write(&p.config, files.config("", &[(a.addr, ""), (b.addr, "")])).unwrap();
    let (code, _, v) = api_tcp(admin_addr(&p), "POST", "/v1/reload", Some(TOKEN), "");
    assert_eq!((code, &v["ok"]), (200, &Value::Bool(true)), "{v}");
    assert!(
        v["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("backends added=svc/{}", b.addr)),
        "{v}"
    );
    assert!(backend(&status(&p), b.addr).is_object());
    let (code, _, _) = api_tcp(admin_addr(&p), "GET", "/v1/reload", Some(TOKEN), "");
    assert_eq!(code, 405);
}
