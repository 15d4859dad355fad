//! The admin API cannot be used without its token and cannot hurt the
//! proxy: a wrong or missing token changes nothing (401, logged with the
//! peer, never the token; summed up per address), repeated failures are slowed (429), and 200
//! slow or garbage clients leave relayed traffic, the stats page and the
//! operator's own requests working.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::admin::*;
use common::*;

#[test]
fn a_wrong_or_missing_token_changes_nothing_and_gets_401() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, "")]));
    let admin = admin_addr(&p);
    let body = format!(r#"{{"service":"svc","backend":"{}","state":"maint"}}"#, a.addr);
    for token in [
        None,
        Some("wrong-token-0123456789abcdef"),
        Some(&TOKEN[..TOKEN.len() - 1]),
    ] {
        let (code, head, v) = api_tcp(admin, "POST", "/v1/backend/state", token, &body);
        assert_eq!(code, 401, "{token:?}: {v}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    }
    let (code, _, _) = api_tcp(admin, "GET", "/v1/status", Some("nope"), "");
    assert_eq!(code, 401, "status needs the token too");
    assert_eq!(backend(&status(&p), a.addr)["admin_state"], "ready");
    // The first at once, with the peer; all four in the summary.
    let first = p.wait_log("unauthorized (no bearer token) POST /v1/backend/state", SOON);
    assert!(first.contains("[WARN] admin: peer=127.0.0.1:"), "{first}");
    let summary = "admin: 4 failed attempts from 127.0.0.1 in the last 10 s (3 wrong token, 1 no bearer token)";
    p.wait_log(summary, Duration::from_secs(25));
    assert_eq!(p.count_log("unauthorized"), 1, "{}", p.log_text());
    assert_eq!(p.count_log("failed attempts from 127.0.0.1"), 1, "{}", p.log_text());
    let log = p.log_text();
    assert!(
        !log.contains("wrong-token") && !log.contains(TOKEN),
        "a token in the log"
    );
    assert!(!p.log_text().contains(" maint svc/"));
}

/// Ten failures in a second from one address, then even the right token
/// is told to wait; a second later it works.
#[test]
fn repeated_failures_are_slowed() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, "")]));
    let admin = admin_addr(&p);
    let mut slowed = false;
    for _ in 0..3 {
        let mut failures = 0;
        while api_tcp(admin, "GET", "/v1/status", Some("guess-guess-guess"), "").0 == 401 {
            failures += 1;
            assert!(failures <= 10, "more than 10 failures answered in a second");
        }
        if api_tcp(admin, "GET", "/v1/status", Some(TOKEN), "").0 == 429 {
            slowed = true;
            break;
        }
        thread::sleep(Duration::from_millis(1100));
    }
    assert!(slowed, "the right token was let through right after 10 failures");
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(api_tcp(admin, "GET", "/v1/status", Some(TOKEN), "").0, 200);
}

/// A TCP connection to `to` from 127.0.0.`last`.
fn connect_from(last: u8, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from(([127, 0, 0, last], 0)).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}

/// What hostile clients do to the admin listeners, reconnecting whenever
/// they are closed, until `stop`. Over TCP they come from 20 addresses
/// other than the operator's (127.0.0.2 to .21): one address holds at most
/// 4 slots, so an operator sharing the attackers' address would share
/// their 4 slots (tests/admin_limits.rs covers one hostile address).
fn hostile(kind: usize, tcp: SocketAddr, socket: &std::path::Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let s: Box<dyn Write> = match kind % 4 {
            3 => match UnixStream::connect(socket) {
                Ok(s) => Box::new(s),
                Err(_) => return,
            },
            _ => match connect_from(2 + (kind % 20) as u8, tcp) {
                Ok(s) => Box::new(s),
                Err(_) => return,
            },
        };
        pester(kind, s, stop);
    }
}

/// One hostile connection, until it is closed or `stop`.
fn pester(kind: usize, mut s: Box<dyn Write>, stop: &AtomicBool) {
    let head = b"POST /v1/backend/state HTTP/1.1\r\nAuthorization: Bearer x\r\nContent-Length: 4000\r\n\r\n{";
    let garbage = pattern(kind as u64, 64 * 1024);
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let r = match kind % 4 {
            // Slow: a byte of a request now and then.
            0 | 3 => s.write_all(&head[i % head.len()..=i % head.len()]),
            // Garbage, as fast as it is taken.
            1 => s.write_all(&garbage),
            // A huge header.
            _ => s
                .write_all(b"GET /v1/status HTTP/1.1\r\nX: ")
                .and_then(|()| s.write_all(&[b'a'; 16384])),
        };
        i += 1;
        if r.is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(if kind % 4 == 1 { 1 } else { 50 }));
    }
}

#[test]
fn two_hundred_slow_or_garbage_admin_clients_leave_traffic_stats_and_operators_working() {
    let echo = Backend::echo();
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(echo.addr, "")]));
    let (admin, svc, stats) = (admin_addr(&p), p.addr("svc"), p.stats_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..200)
        .map(|kind| {
            let (stop, socket) = (stop.clone(), files.socket());
            thread::spawn(move || hostile(kind, admin, &socket, &stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut c = connect(svc);
    let mut times = Vec::new();
    let start = Instant::now();
    let mut stats_ok = 0;
    // Three seconds of traffic, and at least three stats answers (a loaded
    // machine makes fewer round trips in that time).
    while (start.elapsed() < Duration::from_secs(3) || stats_ok < 3) && start.elapsed() < Duration::from_secs(30) {
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, b"ping"), b"ping");
        times.push(t.elapsed());
        if times.len() % 50 == 0 {
            let mut s = TcpStream::connect(stats).unwrap();
            s.set_read_timeout(Some(SOON)).unwrap();
            s.write_all(b"GET /stats HTTP/1.1\r\n\r\n").unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).unwrap();
            assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
            stats_ok += 1;
        }
        thread::sleep(Duration::from_millis(2));
    }
    // The operator gets in over the socket and over TCP while it goes on.
    // 50 local clients churn through the socket's 32 slots, each given up
    // 200 ms after accept without a complete request: on a loaded machine
    // the operator's own request may come later than that and its slot be
    // given up (an empty answer), so, as ctl's user would, it tries again.
    let code = (0..5)
        .map(|_| api_unix(&files.socket(), "GET", "/v1/status", "").0)
        .find(|&c| c != 0)
        .unwrap_or(0);
    assert_eq!(code, 200);
    set_state(&p, echo.addr, "drain");
    stop.store(true, Ordering::SeqCst);
    for t in clients {
        t.join().unwrap();
    }
    times.sort();
    let median = times[times.len() / 2];
    eprintln!(
        "echo round trips: {} median {median:?} p90 {:?} max {:?}; stats answers {stats_ok}",
        times.len(),
        times[times.len() * 9 / 10],
        times[times.len() - 1]
    );
    assert!(stats_ok >= 3);
    assert!(median < Duration::from_millis(50), "median echo round trip {median:?}");
    assert!(p.log_text().contains(&format!(" drain svc/{}", echo.addr)));
}

/// The token is read at start and at each reload; a reload can also move
/// the socket (the old file goes).
#[test]
fn a_reload_takes_a_new_token_and_moves_the_socket() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let text = files.config("", &[(a.addr, "")]);
    let p = Running::start(&text);
    let admin = admin_addr(&p);
    let fresh = "a-brand-new-token-9876543210";
    std::fs::write(files.dir.path("token"), format!("{fresh}\n")).unwrap();
    assert_eq!(
        api_tcp(admin, "GET", "/v1/status", Some(TOKEN), "").0,
        200,
        "not before the reload"
    );
    let (_, v) = api_unix(&files.socket(), "POST", "/v1/reload", "");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(api_tcp(admin, "GET", "/v1/status", Some(TOKEN), "").0, 401);
    assert_eq!(api_tcp(admin, "GET", "/v1/status", Some(fresh), "").0, 200);
    // A token too short: the reload is refused and the token in force stays.
    std::fs::write(files.dir.path("token"), "tiny-secret\n").unwrap();
    let (_, v) = api_unix(&files.socket(), "POST", "/v1/reload", "");
    assert_eq!(v["ok"], false, "{v}");
    let error = v["error"].as_str().unwrap();
    assert!(
        error.contains("11 characters long") && !error.contains("tiny-secret"),
        "{error}"
    );
    assert_eq!(api_tcp(admin, "GET", "/v1/status", Some(fresh), "").0, 200);
    std::fs::write(files.dir.path("token"), format!("{fresh}\n")).unwrap();
    std::fs::write(&p.config, text.replace("admin.sock", "moved.sock")).unwrap();
    let (code, _, v) = api_tcp(admin, "POST", "/v1/reload", Some(fresh), "");
    assert_eq!((code, &v["ok"]), (200, &serde_json::Value::Bool(true)), "{v}");
    assert!(!files.socket().exists(), "the old socket file is removed");
    let (code, _) = api_unix(&files.dir.path("moved.sock"), "GET", "/v1/status", "");
    assert_eq!(code, 200);
}
