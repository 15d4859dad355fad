//! EasyProxy's own JSON file through the binary: `--check` prints the
//! equivalent TOML (which checks the same), the proxy runs and reloads
//! from the JSON file, and the stats page answers on `webport`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use common::*;

/// The original EasyProxy `conf/default.json`.
const DEFAULT_JSON: &str = r#"{"service": "mysql service", "host": "127.0.0.1", "port": 9527, "webport": 7259,
 "strategy": "poll", "heartbeat": 60, "maxprocessor": 1,
 "backends": [{"host": "11.239.169.230", "port": 3306}]}"#;

/// `easyproxy --check -c PATH`: (status, stdout, stderr).
fn check(path: &Path) -> (i32, String, String) {
    let out = Command::new(bin()).arg("--check").arg("-c").arg(path).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// A port nothing listens on now: EasyProxy's file cannot say "any port".
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An EasyProxy file on 127.0.0.1 in front of `backends`.
fn easy_json(port: u16, webport: u16, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|b| format!("{{\"host\": \"{}\", \"port\": {}}}", b.ip(), b.port()))
        .collect();
    format!(
        "{{\"service\": \"mysql service\", \"host\": \"127.0.0.1\", \"port\": {port}, \"webport\": {webport},\n \
         \"strategy\": \"poll\", \"heartbeat\": 60, \"maxprocessor\": 2,\n \"backends\": [{}]}}\n",
        list.join(", ")
    )
}

#[test]
fn check_on_default_json_prints_the_equivalent_toml() {
    let dir = TempDir::new();
    let json = dir.path("default.json");
    std::fs::write(&json, DEFAULT_JSON).unwrap();
    let (code, out, err) = check(&json);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: service: \"mysql service\" is named \"mysql-service\""),
        "{err}"
    );
    let (summary, toml) = out
        .split_once("\n# equivalent easyproxy.toml\n")
        .expect("the TOML follows");
    assert!(summary.contains("configuration is valid"), "{summary}");
    assert!(
        summary.contains("service \"mysql-service\": listen 127.0.0.1:9527"),
        "{summary}"
    );
    assert!(summary.contains("health_check on"), "{summary}");
    assert!(summary.contains("stats: listen 127.0.0.1:7259"), "{summary}");
    assert!(summary.contains("backend 11.239.169.230:3306 weight 1"), "{summary}");
    // The TOML, copied to a file, is the same configuration.
    let native = dir.path("easyproxy.toml");
    std::fs::write(&native, toml).unwrap();
    let (code, again, err) = check(&native);
    assert_eq!(code, 0, "{err}\n{toml}");
    assert!(err.is_empty(), "no warnings left: {err}");
    let body = |s: &str| s.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap();
    assert_eq!(body(summary), body(&again), "{toml}");
    assert!(!again.contains("# equivalent"), "{again}");
}

#[test]
fn check_on_a_bad_json_file_lists_every_problem() {
    let dir = TempDir::new();
    let json = dir.path("default.json");
    let bad = DEFAULT_JSON
        .replace("\"port\": 9527", "\"port\": \"9527\"")
        .replace("\"heartbeat\": 60", "\"heartbeat\": 60, \"hearbeat\": 1")
        .replace("3306", "70000");
    std::fs::write(&json, bad).unwrap();
    let (code, _, err) = check(&json);
    assert_eq!(code, 1, "{err}");
    for needle in [
        "default.json: port: expected a whole number, found a string",
        "default.json: hearbeat: unknown key",
        "default.json: backends[0].port: 70000 is out of range (1..=65535)",
    ] {
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    std::fs::write(&json, "{\"host\": \"127.0.0.1\",,}").unwrap();
    let (code, _, err) = check(&json);
    assert_eq!(code, 1);
    assert!(
        err.contains("default.json: line 1, column 22: key must be a string"),
        "{err}"
    );
}

/// Sends `GET path` and returns the whole answer.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    String::from_utf8_lossy(&raw).to_string()
}

#[test]
fn runs_relays_serves_statistic_and_reloads_from_a_json_file() {
    let first = Backend::tagged("first:");
    let second = Backend::tagged("second:");
    let (port, webport) = (free_port(), free_port());
    let dir = TempDir::new();
    let json = dir.path("default.json");
    std::fs::write(&json, easy_json(port, webport, &[first.addr])).unwrap();
    let path = json.clone();
    let p = Running::start_with("", move |_| {
        let mut cmd = Command::new(bin());
        cmd.arg("-c").arg(&path);
        cmd
    });
    let addr = p.addr("mysql-service");
    assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], port)));
    p.wait_log("configuration: maxprocessor: 2 accepted", SOON);
    let mut c = connect(addr);
    assert_eq!(read_n(&mut c, 6), b"first:");
    assert_eq!(roundtrip(&mut c, b"ping"), b"ping");

    let page = http_get(SocketAddr::from(([127, 0, 0, 1], webport)), "/statistic");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("mysql-service"), "{page}");

    // SIGHUP reads the JSON file again.
    std::fs::write(&json, easy_json(port, webport, &[second.addr])).unwrap();
    p.signal(libc::SIGHUP);
    p.wait_log("reload done", SOON);
    p.wait_log_count("configuration: maxprocessor: 2 accepted", 2, SOON);
    let mut c = connect(addr);
    assert_eq!(read_n(&mut c, 7), b"second:");
}

#[test]
fn a_file_starting_with_a_brace_is_json_whatever_its_name() {
    let b = Backend::echo();
    let p = Running::start(&easy_json(free_port(), free_port(), &[b.addr]));
    let mut c = connect(p.addr("mysql-service"));
    assert_eq!(roundtrip(&mut c, b"hello"), b"hello");
}
