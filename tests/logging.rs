//! A log destination that does not read (a stalled journald or log shipper)
//! must not stop traffic: lines are dropped and counted, a warning follows
//! once it reads again, and the proxy still exits in bounded time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CONNECTIONS: usize = 3000;
const WARNING: &str = "lines dropped: the log destination could not keep up";

/// The proxy with stderr a pipe: read up to the start-up lines, then left
/// unread until the test drains it.
struct Stalled {
    child: Child,
    stderr: Option<BufReader<ChildStderr>>,
    svc: SocketAddr,
    stats: SocketAddr,
    _dir: TempDir,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_stalled() -> Stalled {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr])
        .replace("log_level = \"debug\"", "log_level = \"info\"")
        .replace(
            "[[service]]",
            "[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\n[[service]]",
        );
    std::mem::forget(b); // serves until the test process ends
    let dir = TempDir::new();
    let path = dir.path("easyproxy.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut svc, mut stats) = (None, None);
    let mut line = String::new();
    while svc.is_none() || stats.is_none() {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "easyproxy exited at start");
        let after = |needle: &str| {
            line.split_once(needle)
                .map(|(_, a)| a.trim().trim_end_matches('/').to_string())
        };
        if let Some(a) = after("service svc listening on ") {
            svc = Some(a.parse().unwrap());
        }
        if let Some(a) = after("stats listening on http://") {
            stats = Some(a.parse().unwrap());
        }
    }
    Stalled {
        child,
        stderr: Some(stderr),
        svc: svc.unwrap(),
        stats: stats.unwrap(),
        _dir: dir,
    }
}

fn stats(addr: SocketAddr) -> Value {
    stats_json(addr)
}

fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let line = raw.lines().find(|l| l.starts_with(&format!("{name} ")))?;
    line.rsplit_once(' ')?.1.parse().ok()
}

/// One short round trip; false when it fails or does not answer in time.
fn round_trip(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(SOON));
    let mut got = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"ping"
}

/// `total` connections from 4 threads; how many were served. A thread stops
/// at its first failure (a stuck proxy costs one timeout, not thousands).
fn serve_many(addr: SocketAddr, total: usize) -> usize {
    let handles: Vec<_> = (0..4)
        .map(|t| thread::spawn(move || (t..total).step_by(4).take_while(|_| round_trip(addr)).count()))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

/// Reads the rest of the pipe in a thread, line by line.
fn drain(stderr: BufReader<ChildStderr>) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    thread::spawn(move || {
        for line in stderr.lines() {
            let Ok(line) = line else { return };
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

#[test]
fn an_unread_stderr_drops_lines_and_stops_no_traffic() {
    let mut p = start_stalled();
    let served = serve_many(p.svc, CONNECTIONS);
    assert_eq!(served, CONNECTIONS, "connections served with stderr unread");
    // Every pair closed (stats answers fresh: cache_ms = 0); the next
    // request comes in a later loop turn, after
    // the turn that closed the last pair handed its lines over.
    wait_for("every connection closed", SOON, || {
        let j = stats(p.stats);
        (j["connections"]["active"] == 0 && j["connections"]["total"] == CONNECTIONS).then_some(())
    });
    let dropped = stats(p.stats)["log_lines_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "no line dropped with stderr unread");
    assert!(p.is_running());
    assert_eq!(
        metric(p.stats, "easyproxy_log_lines_dropped_total"),
        Some(dropped as f64)
    );
    let lines = drain(p.stderr.take().unwrap());
    let warning = wait_for("the dropped-lines warning", SOON, || {
        lines.lock().unwrap().iter().find(|l| l.contains(WARNING)).cloned()
    });
    // simplelog's format: RFC 3339 time, level, message.
    let (time, rest) = warning.split_once(' ').unwrap();
    assert!(time.len() >= 20 && time.as_bytes()[10] == b'T', "{warning}");
    assert_eq!(
        rest,
        format!("[WARN] log: {dropped} lines dropped: the log destination could not keep up")
    );
    assert_eq!(stats(p.stats)["log_lines_dropped"].as_u64(), Some(dropped));
    // Every access-log line was either written or counted.
    let closes = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(" close client="))
        .count();
    assert_eq!(
        closes as u64 + dropped,
        CONNECTIONS as u64,
        "written {closes} + dropped {dropped}"
    );
    // Logging works again afterwards, warning only once.
    assert!(round_trip(p.svc));
    wait_for("an access-log line after recovery", SOON, || {
        let l = lines.lock().unwrap();
        (l.iter().filter(|l| l.contains(" close client=")).count() > closes).then_some(())
    });
    assert_eq!(lines.lock().unwrap().iter().filter(|l| l.contains(WARNING)).count(), 1);
}

#[test]
fn a_stop_with_stderr_unread_ends_in_bounded_time() {
    let mut p = start_stalled();
    // Enough lines to fill the pipe: the writer thread is stuck in write(2).
    assert_eq!(serve_many(p.svc, 1000), 1000);
    let start = Instant::now();
    unsafe {
        libc::kill(p.child.id() as i32, libc::SIGTERM);
    }
    let status = wait_for("easyproxy to exit", SOON, || p.child.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    // The exit waits for the log writer for about 2 s, then gives up.
    assert!(start.elapsed() < Duration::from_secs(8), "took {:?}", start.elapsed());
}

impl Stalled {
    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}
