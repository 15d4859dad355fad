//! `easyproxy ctl`, transport: one HTTP request to the admin API over TCP or the unix socket, with blocking sockets and timeouts (this is not the event loop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::AdminToken;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the answer may take (a reload waits for its outcome, and a
/// slow file read is given up after 10 s).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest answer read.
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT`.
    Tcp(String),
    /// A unix socket path.
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => f.write_str(a),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// An answer: status code and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request and reads the whole answer; `Err` means the proxy
/// could not be reached (or did not answer like one).
pub fn request(
    to: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&AdminToken>,
    body: Option<&str>,
) -> Result<Answer, String> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: easyproxy\r\nConnection: close\r\n").into_bytes();
    if let Some(t) = token {
        req.extend_from_slice(b"Authorization: Bearer ");
        req.extend_from_slice(t.expose());
        req.extend_from_slice(b"\r\n");
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        req.extend_from_slice(
            format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()).as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.as_bytes());
    let raw = match to {
        Endpoint::Tcp(addr) => exchange(connect_tcp(addr)?, &req),
        Endpoint::Unix(path) => {
            let s = UnixStream::connect(path).map_err(|e| format!("cannot connect to {}: {e}", path.display()))?;
            s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
            exchange(s, &req)
        }
    }
    .map_err(|e| format!("no answer from {to}: {e}"))?;
    parse(&raw).ok_or_else(|| format!("{to} did not answer with HTTP"))
}

/// Connects to the first address of `addr` that answers.
fn connect_tcp(addr: &str) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    let mut last = format!("cannot resolve {addr}");
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(ANSWER_TIMEOUT)).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {a}: {e}"),
        }
    }
    Err(last)
}

fn exchange(mut s: impl Read + Write, req: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(req)?;
    let mut raw = Vec::new();
    s.take(MAX_ANSWER).read_to_end(&mut raw)?;
    Ok(raw)
}

/// Status code and body of a response (`Connection: close`, so the body
/// is the rest).
fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut status_line = head.lines().next()?.split_whitespace();
    if !status_line.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = status_line.next()?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse() {
        let a = parse(b"HTTP/1.1 404 Not Found\r\nX: y\r\n\r\n{\"error\":\"e\"}\n").unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.body, "{\"error\":\"e\"}\n");
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        assert!(parse(b"").is_none());
    }
}
