//! `easyproxy ctl`, transport: one HTTP request to the admin API over TCP
//! or the unix socket, with blocking sockets (this is not the event loop)
//! and one deadline for the whole exchange.
//!
//! Every connect, write and read is given the time left until the
//! deadline, recomputed before each call, so a server that sends a byte
//! now and then cannot make the exchange last longer. The answer ends at
//! its `Content-Length` (the server need not close), and is bounded.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::AdminToken;

/// Largest response head read.
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a response head.
const MAX_HEADERS: usize = 32;
/// Largest body read (`/v1/status` of a large configuration is large).
pub const MAX_BODY: u64 = 16 * 1024 * 1024;
/// Most addresses a host name is tried at.
const MAX_ADDRS: usize = 8;

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

/// A complete answer: status code and body (raw bytes, not yet trusted).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The step of the exchange, for the message when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Resolving,
    Connecting,
    Sending,
    Waiting,
    Reading,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Resolving => "resolving the address",
            Step::Connecting => "connecting",
            Step::Sending => "sending the request",
            Step::Waiting => "waiting for the answer",
            Step::Reading => "reading the answer",
        })
    }
}

/// Why there is no complete answer (every one is exit status 2).
#[derive(Debug)]
pub enum Failure {
    /// The address cannot be resolved or connected to.
    Connect(String),
    /// The deadline passed during that step.
    Timeout { step: Step, after: Duration },
    /// The connection failed during that step.
    Broken(Step, io::Error),
    /// The server closed before the answer was complete.
    Incomplete(String),
    /// What came is not an HTTP/1 answer.
    Malformed(String),
    /// The body is larger than [`MAX_BODY`].
    TooLarge,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => f.write_str(e),
            Failure::Timeout { step, after } => write!(f, "--timeout {after:?} passed while {step}"),
            Failure::Broken(step, e) => write!(f, "connection failed while {step}: {e}"),
            Failure::Incomplete(e) => write!(f, "incomplete answer: {e}"),
            Failure::Malformed(e) => write!(f, "not an HTTP answer: {e}"),
            Failure::TooLarge => write!(f, "the answer is larger than {} MiB", MAX_BODY >> 20),
        }
    }
}

/// The one deadline of an exchange.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    total: Duration,
}

impl Deadline {
    /// `total` from now.
    pub fn after(total: Duration) -> Deadline {
        let now = Instant::now();
        // `--timeout` is at most a day; an overflow still gives a deadline.
        let at = now.checked_add(total).unwrap_or(now + Duration::from_secs(86_400));
        Deadline { at, total }
    }

    /// The time left, never zero; the deadline passed is a [`Failure`].
    fn left(&self, step: Step) -> Result<Duration, Failure> {
        let left = self.at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Timeout {
                step,
                after: self.total,
            });
        }
        Ok(left)
    }
}

/// A connected stream whose every call is bounded by the time given.
trait Conn {
    fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize>;
    fn write_within(&mut self, buf: &[u8], limit: Duration) -> io::Result<usize>;
}

impl Conn for Socket {
    fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
        self.set_read_timeout(Some(limit))?;
        Read::read(self, buf)
    }
    fn write_within(&mut self, buf: &[u8], limit: Duration) -> io::Result<usize> {
        self.set_write_timeout(Some(limit))?;
        Write::write(self, buf)
    }
}

/// Sends one request and reads its whole answer before `deadline`.
pub fn request(
    to: &Endpoint,
    method: &str,
    path: &str,
    token: Option<&AdminToken>,
    body: Option<&str>,
    deadline: &Deadline,
) -> Result<Answer, Failure> {
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
    let mut conn = connect(to, deadline)?;
    send(&mut conn, &req, deadline)?;
    read_answer(&mut conn, deadline)
}

/// A connected socket to `to`.
fn connect(to: &Endpoint, deadline: &Deadline) -> Result<Socket, Failure> {
    match to {
        Endpoint::Tcp(addr) => {
            let mut last = Failure::Connect(format!("cannot resolve {addr}"));
            for a in resolve(addr, deadline)? {
                let s = Socket::new(Domain::for_address(a), Type::STREAM, Some(Protocol::TCP))
                    .map_err(|e| Failure::Connect(format!("cannot open a socket: {e}")))?;
                match s.connect_timeout(&a.into(), deadline.left(Step::Connecting)?) {
                    Ok(()) => return Ok(s),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        deadline.left(Step::Connecting)?;
                        last = Failure::Connect(format!("cannot connect to {a}: {e}"));
                    }
                    Err(e) => last = Failure::Connect(format!("cannot connect to {a}: {e}")),
                }
            }
            Err(last)
        }
        Endpoint::Unix(path) => {
            let cannot = |e: io::Error| Failure::Connect(format!("cannot connect to {}: {e}", path.display()));
            let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(cannot)?;
            s.connect_timeout(&SockAddr::unix(path).map_err(cannot)?, deadline.left(Step::Connecting)?)
                .map_err(|e| match deadline.left(Step::Connecting) {
                    Err(timeout) => timeout,
                    Ok(_) => cannot(e),
                })?;
            Ok(s)
        }
    }
}

/// The addresses of `HOST:PORT`; a name is resolved on a thread of its
/// own so that a stuck resolver cannot outlast the deadline (the thread
/// is left behind; the process is about to exit).
fn resolve(addr: &str, deadline: &Deadline) -> Result<Vec<SocketAddr>, Failure> {
    if let Ok(a) = addr.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let name = addr.to_string();
    std::thread::Builder::new()
        .name("ctl-resolve".into())
        .spawn(move || {
            let found = name.to_socket_addrs().map(|i| i.take(MAX_ADDRS).collect::<Vec<_>>());
            let _ = tx.send(found);
        })
        .map_err(|e| Failure::Connect(format!("cannot resolve {addr}: {e}")))?;
    match rx.recv_timeout(deadline.left(Step::Resolving)?) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(Failure::Connect(format!("cannot resolve {addr}: {e}"))),
        Err(_) => Err(deadline
            .left(Step::Resolving)
            .err()
            .unwrap_or_else(|| Failure::Connect(format!("cannot resolve {addr}")))),
    }
}

/// Writes all of `req`.
fn send(conn: &mut impl Conn, req: &[u8], deadline: &Deadline) -> Result<(), Failure> {
    let mut sent = 0;
    while let Some(rest) = req.get(sent..).filter(|r| !r.is_empty()) {
        match conn.write_within(rest, deadline.left(Step::Sending)?) {
            Ok(0) => return Err(Failure::Broken(Step::Sending, io::ErrorKind::WriteZero.into())),
            Ok(n) => sent += n,
            Err(e) if retry(&e) => {}
            Err(e) => return Err(Failure::Broken(Step::Sending, e)),
        }
    }
    Ok(())
}

/// Interrupted, or a timeout that [`Deadline::left`] will judge.
fn retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    /// After this many bytes (`Content-Length`).
    Exact(u64),
    /// When the server closes (no `Content-Length`).
    ToClose,
}

/// A response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    /// Where the body starts in the bytes read.
    body_start: usize,
    length: Length,
}

/// Reads until the answer is complete: its head, then `Content-Length`
/// bytes (without waiting for the close), or everything up to the close.
fn read_answer(conn: &mut impl Conn, deadline: &Deadline) -> Result<Answer, Failure> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut head: Option<Head> = None;
    loop {
        if let Some(answer) = head.and_then(|h| complete(h, &buf)) {
            return Ok(answer);
        }
        let step = if head.is_some() { Step::Reading } else { Step::Waiting };
        let n = match conn.read_within(&mut chunk, deadline.left(step)?) {
            Ok(0) => return closed(head, buf),
            Ok(n) => n,
            Err(e) if retry(&e) => continue,
            Err(e) => return Err(Failure::Broken(step, e)),
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if head.is_none() {
            head = parse_head(&buf)?;
        }
        if let Some(h) = head {
            if buf.len().saturating_sub(h.body_start) as u64 > MAX_BODY {
                return Err(Failure::TooLarge);
            }
        }
    }
}

/// The answer, when `buf` holds all of a `Content-Length` body.
fn complete(head: Head, buf: &[u8]) -> Option<Answer> {
    let Length::Exact(len) = head.length else {
        return None;
    };
    let end = head.body_start.checked_add(usize::try_from(len).ok()?)?;
    Some(Answer {
        status: head.status,
        body: buf.get(head.body_start..end)?.to_vec(),
    })
}

/// The server closed: complete only for a body that ends with the close.
fn closed(head: Option<Head>, buf: Vec<u8>) -> Result<Answer, Failure> {
    let got = |h: &Head| buf.len().saturating_sub(h.body_start);
    match head {
        None if buf.is_empty() => Err(Failure::Incomplete("closed without answering".into())),
        None => Err(Failure::Incomplete(format!(
            "closed after {} bytes, in the head",
            buf.len()
        ))),
        Some(
            h @ Head {
                length: Length::Exact(len),
                ..
            },
        ) => Err(Failure::Incomplete(format!(
            "closed after {} of {len} body bytes",
            got(&h)
        ))),
        Some(h) => Ok(Answer {
            status: h.status,
            body: buf.get(h.body_start..).unwrap_or_default().to_vec(),
        }),
    }
}

/// The head at the start of `buf`, `None` while it is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let body_start = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(Failure::Malformed(format!("a head longer than {MAX_HEAD} bytes"))),
        Err(e) => return Err(Failure::Malformed(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    if status < 200 {
        return Err(Failure::Malformed(format!("status {status}")));
    }
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Failure::Malformed(
                "a Transfer-Encoding (easyproxy sends Content-Length)".into(),
            ));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or_else(|| Failure::Malformed("a bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Failure::Malformed("two different Content-Length".into()));
            }
            length = Some(n);
        }
    }
    let length = match length {
        _ if status == 204 || status == 304 => Length::Exact(0),
        Some(n) if n > MAX_BODY => return Err(Failure::TooLarge),
        Some(n) => Length::Exact(n),
        None => Length::ToClose,
    };
    Ok(Some(Head {
        status,
        body_start,
        length,
    }))
}

/// A `Content-Length` value: decimal digits only.
fn content_length(value: &[u8]) -> Option<u64> {
    let v = std::str::from_utf8(value).ok()?.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// What a scripted server does on each read.
    enum Act {
        Send(Vec<u8>),
        /// Sends nothing for the whole time the read is given.
        Silent,
        Close,
    }

    /// A scripted server; a read past the script is an error.
    struct Script {
        acts: VecDeque<Act>,
        written: Vec<u8>,
        /// Every time limit a read or write was given.
        limits: Vec<Duration>,
    }

    fn script(acts: Vec<Act>) -> Script {
        Script {
            acts: acts.into(),
            written: Vec::new(),
            limits: Vec::new(),
        }
    }

    impl Conn for Script {
        fn read_within(&mut self, buf: &mut [u8], limit: Duration) -> io::Result<usize> {
            self.limits.push(limit);
            match self.acts.pop_front() {
                Some(Act::Send(mut bytes)) => {
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    if n < bytes.len() {
                        self.acts.push_front(Act::Send(bytes.split_off(n)));
                    }
                    Ok(n)
                }
                Some(Act::Silent) => {
                    std::thread::sleep(limit);
                    Err(io::ErrorKind::WouldBlock.into())
                }
                Some(Act::Close) => Ok(0),
                None => Err(io::Error::other("read past the script")),
            }
        }
        fn write_within(&mut self, buf: &[u8], limit: Duration) -> io::Result<usize> {
            self.limits.push(limit);
            // A peer that takes two bytes at a time.
            let n = buf.len().min(2);
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    fn data(bytes: impl AsRef<[u8]>) -> Act {
        Act::Send(bytes.as_ref().to_vec())
    }

    fn run(acts: Vec<Act>) -> Result<Answer, Failure> {
        read_answer(&mut script(acts), &Deadline::after(Duration::from_secs(10)))
    }

    #[test]
    fn a_content_length_answer_ends_without_waiting_for_the_close() {
        // Nothing is read after the body: a further read would fail.
        let a = run(vec![
            data(b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n"),
            data(b"X: y\r\n\r\n{\"error\":"),
            data(b"\"e\"}extra"),
        ])
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"{\"error\":\"e\"}"[..]));
        let a = run(vec![data(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")]).unwrap();
        assert!(a.body.is_empty());
        // Without Content-Length the body ends with the close.
        let a = run(vec![data(b"HTTP/1.0 200 OK\r\n\r\n{}"), data(b"\n"), Act::Close]).unwrap();
        assert_eq!(a.body, b"{}\n");
    }

    #[test]
    fn a_close_before_the_end_is_an_incomplete_answer() {
        for acts in [
            vec![Act::Close],
            vec![data(b"HTTP/1.1 200 OK\r\nContent-"), Act::Close],
            vec![
                data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ok\""),
                Act::Close,
            ],
        ] {
            assert!(matches!(run(acts), Err(Failure::Incomplete(_))));
        }
    }

    #[test]
    fn what_is_not_an_http_answer_is_malformed() {
        let big_head = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD)).into_bytes();
        for raw in [
            &b"SSH-2.0-OpenSSH_9.6\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &big_head,
        ] {
            let r = run(vec![data(raw)]);
            assert!(
                matches!(r, Err(Failure::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X{i}: y\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(run(vec![data(raw)]), Err(Failure::Malformed(_))));
    }

    #[test]
    fn a_body_past_the_limit_is_refused_unread() {
        let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(matches!(run(vec![data(raw)]), Err(Failure::TooLarge)));
        // Without Content-Length: refused once it grows past the limit.
        let chunk = vec![b'x'; 1 << 20];
        let mut acts = vec![data(b"HTTP/1.1 200 OK\r\n\r\n")];
        acts.extend((0..=(MAX_BODY >> 20)).map(|_| data(&chunk)));
        assert!(matches!(run(acts), Err(Failure::TooLarge)));
    }

    #[test]
    fn one_deadline_for_the_whole_exchange_however_the_bytes_drip() {
        let total = Duration::from_millis(200);
        let deadline = Deadline::after(total);
        // One byte, then silence for the rest of each read's time: every
        // read is given only what is left, and the deadline ends it.
        let mut s = script(vec![
            data(b"H"),
            Act::Silent,
            data(b"T"),
            Act::Silent,
            Act::Silent,
            Act::Silent,
        ]);
        let start = Instant::now();
        let r = read_answer(&mut s, &deadline);
        assert!(
            matches!(
                r,
                Err(Failure::Timeout {
                    step: Step::Waiting,
                    ..
                })
            ),
            "{r:?}"
        );
        assert!(
            start.elapsed() < total + Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
        assert!(s.limits.iter().all(|l| *l <= total));
        assert!(s.limits.windows(2).all(|w| w[1] <= w[0]), "{:?}", s.limits);
        // Sending is bounded the same way, and writes all of it.
        let mut s = script(vec![]);
        send(
            &mut s,
            b"GET / HTTP/1.1\r\n\r\n",
            &Deadline::after(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(s.written, b"GET / HTTP/1.1\r\n\r\n");
        let r = send(&mut s, b"x", &Deadline::after(Duration::ZERO));
        assert!(
            matches!(
                r,
                Err(Failure::Timeout {
                    step: Step::Sending,
                    ..
                })
            ),
            "{r:?}"
        );
    }
}
