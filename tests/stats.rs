//! The stats endpoint through real sockets: exact counters, JSON fields,
//! Prometheus lines, the HTML page, error statuses and hostile clients.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Sends raw request bytes and returns (status, head, body).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(request).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    split_response(&raw)
}

fn split_response(raw: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
}

fn stats_json(addr: SocketAddr) -> Value {
    let (status, head, body) = get(addr, "/stats");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"), "{head}");
    serde_json::from_str(&body).unwrap()
}

fn config_with_stats(backends: &[SocketAddr], extra_service: &str) -> String {
    service_config(extra_service, backends).replace("[[service]]", "[stats]\nlisten = \"127.0.0.1:0\"\n\n[[service]]")
}

#[test]
fn json_counts_are_exact_after_known_traffic() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let addr = p.addr("svc");
    let stats = p.stats_addr();
    for i in 0..3 {
        let mut c = connect(addr);
        let msg = vec![b'x'; 1000 * (i + 1)];
        assert_eq!(roundtrip(&mut c, &msg), msg);
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
    }
    p.wait_log_count("end=done", 3, SOON);
    let mut open = connect(addr);
    assert_eq!(roundtrip(&mut open, b"12345"), b"12345");

    let j = stats_json(stats);
    assert!(j["uptime_ms"].as_u64().is_some());
    assert_eq!(j["connections"]["active"], 1);
    assert_eq!(j["connections"]["total"], 4);
    assert_eq!(j["connections"]["rejected"], 0);
    assert_eq!(j["reloads"], 0);
    assert_eq!(j["reloads_failed"], 0);
    let s = &j["services"][0];
    assert_eq!(s["name"], "svc");
    assert_eq!(s["listen"], addr.to_string());
    assert_eq!(s["strategy"], "round_robin");
    assert_eq!(s["active"], 1);
    assert_eq!(s["total"], 4);
    assert_eq!(s["rejected"], 0);
    let be = &s["backends"][0];
    assert_eq!(be["address"], b.addr.to_string());
    assert_eq!(be["state"], "up");
    assert_eq!(be["weight"], 1);
    assert_eq!(be["backup"], false);
    assert_eq!(be["active"], 1);
    assert_eq!(be["total"], 4);
    assert_eq!(be["failures"], 0);
    assert_eq!(be["bytes_out"], 6005);
    assert_eq!(be["bytes_in"], 6005);
    assert!(be["last_check"].is_string());
    assert_eq!(s["clients"], serde_json::json!([{"ip": "127.0.0.1", "active": 1}]));
    drop(open);
    wait_for("the last connection to close", SOON, || {
        (stats_json(stats)["connections"]["active"] == 0).then_some(())
    });
    assert_eq!(stats_json(stats)["services"][0]["clients"], serde_json::json!([]));
}

#[test]
fn rejected_and_failures_are_counted() {
    let dead = refused_addr();
    let p = Running::start(&config_with_stats(&[dead], "retries = 0\n"));
    let mut c = connect(p.addr("svc"));
    assert!(closes_within(&mut c, SOON));
    p.wait_log("end=connect_failed", SOON);
    let j = stats_json(p.stats_addr());
    assert_eq!(j["services"][0]["backends"][0]["failures"], 1);
    assert_eq!(j["services"][0]["backends"][0]["total"], 0);

    // A backend at its max_connections: the next client is rejected.
    let b = Backend::echo();
    let cfg = format!(
        "[stats]\nlisten = \"127.0.0.1:0\"\n[[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n\
         [[service.backend]]\naddress = \"{}\"\nmax_connections = 1\n",
        b.addr
    );
    let p = Running::start(&cfg);
    let mut c1 = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c1, b"x"), b"x");
    let mut c2 = connect(p.addr("svc"));
    assert!(closes_within(&mut c2, SOON));
    let j = stats_json(p.stats_addr());
    assert_eq!(j["connections"]["rejected"], 1);
    assert_eq!(j["services"][0]["rejected"], 1);
}

#[test]
fn metrics_parse_line_by_line() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"abc"), b"abc");
    let (status, head, body) = get(p.stats_addr(), "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let mut seen = std::collections::HashMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(rest.split_once(' ').is_some(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (_, kind) = rest.split_once(' ').unwrap();
            assert!(kind == "gauge" || kind == "counter", "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'), "{line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        seen.insert(series.to_string(), value);
    }
    let svc = "{service=\"svc\"}";
    let be = format!("{{service=\"svc\",backend=\"{}\"}}", b.addr);
    assert_eq!(seen[&format!("easyproxy_connections_active{svc}")], 1.0);
    assert_eq!(seen[&format!("easyproxy_connections_total{svc}")], 1.0);
    assert_eq!(seen[&format!("easyproxy_backend_up{be}")], 1.0);
    assert_eq!(seen[&format!("easyproxy_backend_connections_active{be}")], 1.0);
    assert_eq!(seen[&format!("easyproxy_backend_connections_total{be}")], 1.0);
    assert_eq!(seen[&format!("easyproxy_backend_failures_total{be}")], 0.0);
    assert_eq!(seen[&format!("easyproxy_backend_bytes_in_total{be}")], 3.0);
    assert_eq!(seen[&format!("easyproxy_backend_bytes_out_total{be}")], 3.0);
}

#[test]
fn html_page_has_the_tables_and_refreshes() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"abc"), b"abc");
    for path in ["/", "/statistic"] {
        let (status, head, body) = get(p.stats_addr(), path);
        assert_eq!(status, 200);
        assert!(head.contains("text/html"));
        assert!(body.contains("http-equiv=\"refresh\""));
        assert!(body.contains("<table class=\"backends\">"));
        assert!(body.contains("<table class=\"clients\">"));
        assert!(body.contains(&b.addr.to_string()));
        assert!(body.contains("<td>127.0.0.1</td><td>1</td>"), "client row");
        assert!(body.contains("state up"), "state coloured");
    }
}

#[test]
fn error_statuses() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let s = p.stats_addr();
    assert_eq!(get(s, "/nope").0, 404);
    let (status, head, _) = http(s, b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(http(s, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").0, 400);
    assert_eq!(http(s, b"GET /stats HTTP/9\r\n\r\n").0, 400);
    let (status, head, body) = http(s, b"HEAD /stats HTTP/1.1\r\n\r\n");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Length:") && body.is_empty());
    assert_eq!(get(s, "/stats?pretty=1").0, 200);
}

#[test]
fn huge_request_line_gets_431() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let mut s = TcpStream::connect(p.stats_addr()).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut line = b"GET /".to_vec();
        line.extend(std::iter::repeat_n(b'a', 4 << 20));
        let _ = w.write_all(&line); // may fail once the proxy has answered
    });
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let (status, _, _) = split_response(&raw);
    assert_eq!(status, 431);
    writer.join().unwrap();
    // Still serving.
    assert_eq!(get(p.stats_addr(), "/stats").0, 200);
}

#[test]
fn idle_stats_connections_time_out() {
    let b = Backend::echo();
    let cfg = config_with_stats(&[b.addr], "").replace(
        "listen = \"127.0.0.1:0\"\n\n[[service]]",
        "listen = \"127.0.0.1:0\"\ntimeout_ms = 300\n\n[[service]]",
    );
    let p = Running::start(&cfg);
    let mut s = TcpStream::connect(p.stats_addr()).unwrap();
    s.write_all(b"GET /sta").unwrap();
    let t = Instant::now();
    assert!(closes_within(&mut s, SOON));
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[test]
fn many_slow_clients_do_not_block_stats_or_traffic() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let stats = p.stats_addr();
    // 200 clients that send half a request and then nothing.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(stats).unwrap();
            let _ = s.write_all(b"GET /stats HTTP/1.1\r\nHost: sl");
            s
        })
        .collect();
    let t = Instant::now();
    let j = stats_json(stats);
    assert!(j["connections"].is_object());
    assert!(t.elapsed() < SOON);
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"traffic flows"), b"traffic flows");
    drop(slow);
}

#[test]
fn more_waiting_stats_clients_than_one_accept_batch_are_all_served() {
    let b = Backend::echo();
    let cfg = config_with_stats(&[b.addr], "").replace(
        "listen = \"127.0.0.1:0\"\n\n[[service]]",
        "listen = \"127.0.0.1:0\"\ntimeout_ms = 60000\n\n[[service]]",
    );
    let p = Running::start(&cfg);
    let stats = p.stats_addr();
    // Freeze the proxy so that all clients queue in the backlog at once.
    p.signal(libc::SIGSTOP);
    let idle: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(stats).unwrap()).collect();
    let mut last = TcpStream::connect(stats).unwrap();
    last.write_all(b"GET /stats HTTP/1.1\r\n\r\n").unwrap();
    p.signal(libc::SIGCONT);
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut raw = Vec::new();
    last.read_to_end(&mut raw).expect("the 101st client was not served");
    assert_eq!(split_response(&raw).0, 200);
    drop(idle);
}

/// More clients at once than stats slots, each asking again as soon as it
/// is answered (what `wrk -c100` does): every request is answered. Before,
/// each new connection evicted one accepted a moment earlier whose request
/// had not been read yet, and most requests failed.
#[test]
fn more_concurrent_clients_than_slots_are_all_answered() {
    let b = Backend::echo();
    let p = Running::start(&config_with_stats(&[b.addr], ""));
    let stats = p.stats_addr();
    let clients: Vec<_> = (0..150)
        .map(|_| {
            thread::spawn(move || {
                (0..4)
                    .filter(|_| {
                        let Ok(mut s) = TcpStream::connect(stats) else {
                            return false;
                        };
                        let _ = s.set_read_timeout(Some(SOON));
                        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").is_err() {
                            return false;
                        }
                        let mut raw = Vec::new();
                        s.read_to_end(&mut raw).is_ok() && split_response(&raw).0 == 200
                    })
                    .count()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(answered, 600, "every request answered");
}
