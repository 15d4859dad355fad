//! The stats port cannot hurt the proxy: a scrape flood against 1000
//! backends leaves relayed traffic fast, `stats.allow` closes strangers at
//! accept, and answers come from a shared snapshot that state changes renew.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// One request on a fresh connection: the whole answer (status, body), or
/// `None` when the connection closed without a byte.
fn fetch(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(SOON)).ok()?;
    // The request may meet a closed connection (a peer outside `allow`).
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading {path}: {e}"),
    }
    if raw.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Some((status, body.to_string()))
}

fn stats_json(addr: SocketAddr) -> Value {
    let (status, body) = fetch(addr, "/stats").expect("no answer from /stats");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// `[stats]` with `extra` lines, service `svc` in front of `echo`, and
/// service `big` with `n` backends (closed ports; no health check, so up).
fn config(stats_extra: &str, echo: SocketAddr, n: usize, svc_extra: &str) -> String {
    let mut c = format!(
        "[global]\nlog_level = \"info\"\n\n[stats]\nlisten = \"127.0.0.1:0\"\n{stats_extra}\n\
         [[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n{svc_extra}\n\
         [[service.backend]]\naddress = \"{echo}\"\n"
    );
    if n > 0 {
        c.push_str("[[service]]\nname = \"big\"\nlisten = \"127.0.0.1:0\"\n");
    }
    for i in 0..n {
        c.push_str(&format!("[[service.backend]]\naddress = \"127.0.0.1:{}\"\n", 1 + i));
    }
    c
}

/// One `/metrics` scrape: whether the whole answer came (its last line is
/// the last of the 1000 backends of `big`).
fn scrape(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(SOON));
    let mut raw = Vec::new();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").is_ok()
        && s.read_to_end(&mut raw).is_ok()
        && raw.starts_with(b"HTTP/1.1 200 OK\r\n")
        && raw.ends_with(b"{service=\"big\",backend=\"127.0.0.1:1000\"} 0\n")
}

/// Echo round trips through `addr` until `stop`, each one timed.
fn echo_timings(addr: SocketAddr, stop: &AtomicBool) -> Vec<Duration> {
    let mut c = connect(addr);
    c.set_nodelay(true).unwrap();
    let mut times = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        assert_eq!(roundtrip(&mut c, b"ping"), b"ping");
        times.push(t.elapsed());
        thread::sleep(Duration::from_millis(2));
    }
    times
}

/// 16 threads scrape `/metrics` (1000 backends) as fast as they are
/// answered for 5 s; meanwhile echo round trips on another service keep a
/// median under 5 ms. Before the cache and the per-turn budget every scrape
/// was rendered inline, 64 per loop turn.
#[test]
fn a_metrics_flood_over_1000_backends_leaves_relayed_traffic_fast() {
    let echo = Backend::echo();
    let p = Running::start(&config("", echo.addr, 1000, ""));
    let (stats, svc) = (p.stats_addr(), p.addr("svc"));
    p.addr("big");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let scrapers: Vec<_> = (0..16)
        .map(|_| {
            let (stop, answered) = (stop.clone(), answered.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if scrape(stats) {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    let stopper = {
        let stop = stop.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_secs(5));
            stop.store(true, Ordering::SeqCst);
        })
    };
    let mut times = echo_timings(svc, &stop);
    stopper.join().unwrap();
    for s in scrapers {
        s.join().unwrap();
    }
    times.sort();
    let median = times[times.len() / 2];
    let p90 = times[times.len() * 9 / 10];
    let answered = answered.load(Ordering::SeqCst);
    eprintln!(
        "echo round trips: {} median {median:?} p90 {p90:?} max {:?}; /metrics answered {answered}",
        times.len(),
        times[times.len() - 1]
    );
    assert!(answered >= 16, "the scrapers were answered only {answered} times");
    assert!(median < Duration::from_millis(5), "median echo round trip {median:?}");
}

/// A peer outside `stats.allow` is closed at accept without a byte; the
/// proxy logs nothing for it but a debug line, and one inside is answered.
#[test]
fn a_stats_client_outside_allow_gets_no_answer() {
    let echo = Backend::echo();
    let text = config("allow = [\"10.0.0.0/8\"]", echo.addr, 0, "");
    let p = Running::start(&text.replace("\"info\"", "\"debug\""));
    for path in ["/stats", "/metrics", "/"] {
        assert_eq!(fetch(p.stats_addr(), path), None, "{path} answered outside allow");
    }
    p.wait_log("is not in stats.allow; closed", SOON);
    let inside = config("allow = [\"10.0.0.0/8\", \"127.0.0.1\"]", echo.addr, 0, "");
    let p = Running::start(&inside);
    let j = stats_json(p.stats_addr());
    assert_eq!(j["services"][0]["name"], "svc");
    assert_eq!(p.count_log("without stats.allow"), 0, "loopback: no warning");
}

/// `allow` follows a reload: the same listener starts closing 127.0.0.1.
#[test]
fn a_reload_applies_allow() {
    let echo = Backend::echo();
    let text = config("", echo.addr, 0, "");
    let p = Running::start(&text);
    let stats = p.stats_addr();
    assert!(fetch(stats, "/stats").is_some());
    p.reload(&text.replace("[stats]\n", "[stats]\nallow = [\"::1/128\"]\n"));
    p.wait_log("reload done", SOON);
    assert_eq!(fetch(stats, "/stats"), None);
}

/// `[stats]` beyond loopback without `allow` is warned about at start and
/// at each reload; with `allow` it is not.
#[test]
fn an_open_stats_listener_is_warned_about() {
    let echo = Backend::echo();
    let open = config("", echo.addr, 0, "").replacen("127.0.0.1:0", "0.0.0.0:0", 1);
    let p = Running::start(&open);
    let line = p.wait_log("without stats.allow", SOON);
    assert!(line.contains("[WARN] [stats] listens on 0.0.0.0:0"), "{line}");
    p.reload(&open);
    p.wait_log("reload done", SOON);
    assert_eq!(p.count_log("without stats.allow"), 2, "warned again at reload");
    p.reload(&open.replace("[stats]\n", "[stats]\nallow = [\"127.0.0.0/8\"]\n"));
    p.wait_log_count("reload done", 2, SOON);
    assert_eq!(p.count_log("without stats.allow"), 2, "no warning with allow");
}

/// Two requests inside `cache_ms` get the same body although counters
/// moved in between; a backend going DOWN and a reload show at once, not
/// after 60 s.
#[test]
fn answers_are_shared_within_cache_ms_but_state_changes_show_at_once() {
    let echo = Backend::echo();
    let victim = Backend::echo();
    let hc = "[service.health_check]\ninterval_ms = 100\ntimeout_ms = 500\nfall = 1\nrise = 1\n";
    let text = config("cache_ms = 60000", echo.addr, 0, hc).replacen(
        "[[service.backend]]",
        &format!(
            "[[service.backend]]\naddress = \"{}\"\n[[service.backend]]",
            victim.addr
        ),
        1,
    );
    let p = Running::start(&text);
    let stats = p.stats_addr();
    let first = fetch(stats, "/stats").unwrap().1;
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"moves the counters"), b"moves the counters");
    let second = fetch(stats, "/stats").unwrap().1;
    assert_eq!(first, second, "the second request is answered from the first render");
    let j: Value = serde_json::from_str(&second).unwrap();
    assert_eq!(j["connections"]["total"], 0);
    assert_eq!(j["services"][0]["backends"][0]["state"], "up");

    victim.stop();
    p.wait_log(&format!("backend={} is DOWN", victim.addr), SOON);
    let j = stats_json(stats);
    assert_eq!(j["services"][0]["backends"][0]["state"], "down", "DOWN shows at once");
    assert_eq!(j["connections"]["total"], 1, "rendered afresh");
    let up = format!(
        "easyproxy_backend_up{{service=\"svc\",backend=\"{}\"}} 0\n",
        victim.addr
    );
    assert!(fetch(stats, "/metrics").unwrap().1.contains(&up), "metrics show it too");

    p.reload(&text);
    p.wait_log("reload done", SOON);
    assert_eq!(stats_json(stats)["reloads"], 1, "a reload shows at once");
}
