//! Admin API helpers: a config with `[admin]` (TCP with a token file, and a
//! unix socket), requests over either, and the status of one backend.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{wait_for, Running, TempDir, SOON};

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Files next to a running proxy that outlive it (token, socket, state).
pub struct AdminFiles {
    pub dir: TempDir,
}

impl AdminFiles {
    pub fn new() -> AdminFiles {
        let dir = TempDir::new();
        let token = dir.path("token");
        std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        AdminFiles { dir }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path("admin.sock")
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.path("easyproxy.state")
    }

    /// `[global]` (with the state file) and `[admin]` on 127.0.0.1:0 and
    /// the socket, `[stats]`, then service `svc` (round robin) with
    /// `service_extra` lines and the backends (address, extra lines).
    pub fn config(&self, service_extra: &str, backends: &[(SocketAddr, &str)]) -> String {
        let mut c = format!(
            "[global]\nlog_level = \"debug\"\nshutdown_timeout_ms = 1000\nstate_file = {:?}\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\nsocket = {:?}\n\n\
             [stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\n\
             [[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n{service_extra}\n",
            self.state_file(),
            self.dir.path("token"),
            self.socket()
        );
        for (a, extra) in backends {
            c.push_str(&format!("[[service.backend]]\naddress = \"{a}\"\n{extra}\n"));
        }
        c
    }
}

/// The admin API's TCP address, from the start-up log.
pub fn admin_addr(p: &Running) -> SocketAddr {
    let needle = "admin API on http://";
    let line = p.wait_log(needle, SOON);
    let at = line.find(needle).unwrap() + needle.len();
    line[at..].split('/').next().unwrap().parse().unwrap()
}

/// A raw request and the whole answer, over any stream.
fn exchange(mut s: impl Read + Write, raw: &[u8]) -> (u16, String, Value) {
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let value = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, head.to_string(), value)
}

fn raw_request(method: &str, path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request over TCP with `token`: (status, head, JSON body).
pub fn api_tcp(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String, Value) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    exchange(s, &raw_request(method, path, token, body))
}

/// A request over the unix socket: (status, JSON body).
pub fn api_unix(socket: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    let (status, _, v) = exchange(s, &raw_request(method, path, None, body));
    (status, v)
}

/// `POST /v1/backend/state` over TCP with the token.
pub fn set_state(p: &Running, backend: SocketAddr, state: &str) -> Value {
    let body = format!(r#"{{"service":"svc","backend":"{backend}","state":"{state}"}}"#);
    let (status, _, v) = api_tcp(admin_addr(p), "POST", "/v1/backend/state", Some(TOKEN), &body);
    assert_eq!(status, 200, "{v}");
    v
}

/// `POST /v1/backend/weight` over TCP with the token (`null` resets).
pub fn set_weight(p: &Running, backend: SocketAddr, weight: &str) -> Value {
    let body = format!(r#"{{"service":"svc","backend":"{backend}","weight":{weight}}}"#);
    let (status, _, v) = api_tcp(admin_addr(p), "POST", "/v1/backend/weight", Some(TOKEN), &body);
    assert_eq!(status, 200, "{v}");
    v
}

/// `GET /v1/status` over TCP.
pub fn status(p: &Running) -> Value {
    let (code, _, v) = api_tcp(admin_addr(p), "GET", "/v1/status", Some(TOKEN), "");
    assert_eq!(code, 200);
    v
}

/// Backend `addr` of service `svc` in a status document.
pub fn backend(status: &Value, addr: SocketAddr) -> Value {
    status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "svc")
        .and_then(|s| {
            s["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["address"] == addr.to_string())
        })
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until `f` holds for backend `addr`'s status.
pub fn wait_backend(p: &Running, addr: SocketAddr, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, SOON, || {
        let b = backend(&status(p), addr);
        f(&b).then_some(b)
    })
}

/// Like [`api_tcp`], from source address 127.0.0.`last` (one address
/// holds at most 4 admin connections at once).
pub fn api_tcp_from(
    last: u8,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, Value) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, last], 0)).into()).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(SOON)).unwrap();
    exchange(s, &raw_request(method, path, token, body))
}
