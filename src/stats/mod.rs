//! Side flow: the stats HTTP endpoint, served from the same event loop.
//!
//! `GET /` (and `/statistic`) is a self-refreshing HTML page, `/stats` JSON,
//! `/metrics` Prometheus text. Requests are parsed with httparse; every
//! connection answers one request and closes. Hostile clients are bounded:
//! the request head is capped, each connection has a deadline, and when all
//! slots are taken a new client takes the slot of one that is done (answer
//! sent, waiting for the client to close), else of the oldest one that has
//! sat on its slot for a while without a complete request, else of the
//! oldest one not reading its answer; with none of these, new clients wait
//! in the listen backlog. A request that arrived with its
//! connection is answered at once, in the turn that accepts it.

use std::fmt::Write as _;
use std::io::{self, ErrorKind, Read};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::Interest;
use serde::Serialize;
use slab::Slab;

use crate::config::StatsConfig;
use crate::event_loop::Proxy;
use crate::io::pump::{self, Flush};
use crate::io::socket;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// Largest request head accepted; larger gets 431.
pub const MAX_HEAD: usize = 8 * 1024;
/// Stats connections open at once.
pub const MAX_CONNS: usize = 64;
/// After answering, how long and how much unread input is drained before
/// closing (so the client sees the answer rather than a reset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_LIMIT: usize = 8 * 1024 * 1024;
/// Accepts per loop turn.
const ACCEPT_BATCH: usize = 64;
/// How long a connection keeps its slot, at least, while its request is
/// still incomplete (slow, not yet hostile).
const EVICT_MIN_AGE: Duration = Duration::from_millis(200);

enum Stage {
    Reading,
    Writing,
    Draining(usize),
}

struct Conn {
    id: u64,
    stream: TcpStream,
    stage: Stage,
    head: Vec<u8>,
    out: Vec<u8>,
    written: usize,
    accepted: Instant,
    deadline: Instant,
}

/// The stats listener and its connections.
pub struct StatsServer {
    listener: TcpListener,
    pub accept_ready: bool,
    /// Every slot is taken and none can be given up yet: accepting waits
    /// until a connection ends or grows old enough to evict.
    blocked: bool,
    conns: Slab<Conn>,
    next_id: u64,
    /// Time a client has to send its request and read the answer.
    timeout: Duration,
}

impl StatsServer {
    pub fn bind(cfg: &StatsConfig) -> io::Result<StatsServer> {
        Ok(StatsServer {
            listener: socket::bind(cfg.listen, socket::BACKLOG)?,
            accept_ready: true,
            blocked: false,
            conns: Slab::new(),
            next_id: 1,
            timeout: cfg.timeout,
        })
    }

    /// A reload may change the timeout for new connections.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    pub fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.register(&mut self.listener, Target::StatsListener.token(), Interest::READABLE)
    }

    /// Stops listening and drops every stats connection.
    pub fn close(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.listener);
        self.conns.clear();
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Whether there are clients to accept and room (or a slot to free).
    pub fn wants_accept(&self) -> bool {
        self.accept_ready && !self.blocked
    }

    /// Accepts waiting clients and answers the ones whose request is already
    /// there; when every slot is taken, frees one if it can (see the module
    /// documentation) or leaves the rest in the backlog.
    pub fn accept(&mut self, proxy: &Proxy, timers: &mut Timers, now: Instant) -> io::Result<()> {
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= MAX_CONNS && !self.evict_one(now) {
                self.blocked = true;
                return Ok(());
            }
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return Ok(());
                }
                Err(e) if socket::is_transient_accept_error(&e) => continue,
                Err(e) => return Err(e),
            };
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if proxy
                .registry()
                .register(
                    &mut stream,
                    Target::StatsClient(key).token(),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let deadline = now + self.timeout;
            let conn = entry.insert(Conn {
                id,
                stream,
                stage: Stage::Reading,
                head: Vec::new(),
                out: Vec::new(),
                written: 0,
                accepted: now,
                deadline,
            });
            // First wake-up when the slot becomes evictable; the timer then
            // moves on to the deadline.
            timers.add(deadline.min(now + EVICT_MIN_AGE), TimerKind::StatsConn(key, id));
            if conn.step(proxy, timers, key, now).is_err() {
                self.conns.remove(key);
            }
        }
        Ok(())
    }

    /// Frees a slot: a connection already answered, else the oldest one
    /// that has waited EVICT_MIN_AGE without a complete request, else the
    /// oldest that has not taken its answer in that time.
    fn evict_one(&mut self, now: Instant) -> bool {
        let victim = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Draining(_)))
            .min_by_key(|(_, c)| c.accepted)
            .or_else(|| self.oldest_stale(now, |st| matches!(st, Stage::Reading)))
            // A client that does not read its answer holds the slot no
            // longer than one that does not send its request.
            .or_else(|| self.oldest_stale(now, |st| matches!(st, Stage::Writing)))
            .map(|(k, _)| k);
        match victim {
            Some(k) => {
                log::debug!("stats: {} connections open, closing one to make room", self.conns.len());
                self.conns.remove(k);
                true
            }
            None => false,
        }
    }

    /// The oldest connection in a matching stage that has had its slot for
    /// EVICT_MIN_AGE.
    fn oldest_stale(&self, now: Instant, stage: impl Fn(&Stage) -> bool) -> Option<(usize, &Conn)> {
        self.conns
            .iter()
            .filter(|(_, c)| stage(&c.stage) && now.saturating_duration_since(c.accepted) >= EVICT_MIN_AGE)
            .min_by_key(|(_, c)| c.accepted)
    }

    /// Readiness on a stats connection: read the request, answer, drain, close.
    pub fn on_event(&mut self, key: usize, proxy: &Proxy, timers: &mut Timers, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        if conn.step(proxy, timers, key, now).is_err() {
            self.conns.remove(key);
            self.blocked = false;
        }
    }

    pub fn on_timer(&mut self, key: usize, id: u64, now: Instant, timers: &mut Timers) {
        // A slot may have become evictable, or frees up now.
        self.blocked = false;
        let Some(conn) = self.conns.get(key) else { return };
        if conn.id != id {
            return;
        }
        if conn.deadline <= now {
            self.conns.remove(key);
        } else {
            timers.add(conn.deadline, TimerKind::StatsConn(key, id));
        }
    }
}

/// `Err` means: close this connection now.
type Step = Result<(), ()>;

impl Conn {
    fn step(&mut self, proxy: &Proxy, timers: &mut Timers, key: usize, now: Instant) -> Step {
        loop {
            match self.stage {
                Stage::Reading => {
                    let mut buf = [0u8; 4096];
                    let eof = loop {
                        match self.stream.read(&mut buf) {
                            Ok(0) => break true,
                            Ok(n) => {
                                let room = (MAX_HEAD + 1).saturating_sub(self.head.len());
                                self.head.extend_from_slice(&buf[..n.min(room)]);
                                if self.head.len() > MAX_HEAD {
                                    break false;
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => return Err(()),
                        }
                    };
                    match parse(&self.head) {
                        Parsed::Partial if self.head.len() > MAX_HEAD => {
                            self.out = response(431, "text/plain", b"request header too large\n".to_vec(), false);
                        }
                        Parsed::Partial if eof => return Err(()),
                        Parsed::Partial => return Ok(()),
                        Parsed::Bad => self.out = response(400, "text/plain", b"bad request\n".to_vec(), false),
                        Parsed::Request { method, path } => self.out = answer(&method, &path, proxy, now),
                    }
                    self.stage = Stage::Writing;
                }
                Stage::Writing => {
                    let (n, r) = pump::write_all_nb(&self.out[self.written..], &mut self.stream);
                    self.written += n;
                    match r {
                        Ok(Flush::Drained) => {
                            let _ = self.stream.shutdown(Shutdown::Write);
                            self.stage = Stage::Draining(0);
                            self.deadline = now + DRAIN_TIMEOUT;
                            timers.add(self.deadline, TimerKind::StatsConn(key, self.id));
                        }
                        Ok(Flush::WouldBlock) => return Ok(()),
                        Err(_) => return Err(()),
                    }
                }
                Stage::Draining(ref mut drained) => {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match self.stream.read(&mut buf) {
                            Ok(0) => return Err(()),
                            Ok(n) => {
                                *drained += n;
                                if *drained > DRAIN_LIMIT {
                                    return Err(());
                                }
                            }
                            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(_) => return Err(()),
                        }
                    }
                }
            }
        }
    }
}

enum Parsed {
    Partial,
    Bad,
    Request { method: String, path: String },
}

fn parse(head: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => Parsed::Request {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("").to_string(),
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Bad,
        Err(_) => Parsed::Bad,
    }
}

fn answer(method: &str, path: &str, proxy: &Proxy, now: Instant) -> Vec<u8> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let mut r = response(405, "text/plain", b"method not allowed\n".to_vec(), false);
        // Allow header goes before the blank line.
        let at = r.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
        r.splice(at..at, b"\r\nAllow: GET, HEAD".iter().copied());
        return r;
    }
    let path = path.split('?').next().unwrap_or("");
    match path {
        "/" | "/statistic" => response(
            200,
            "text/html; charset=utf-8",
            html(proxy, now).into_bytes(),
            head_only,
        ),
        "/stats" => response(200, "application/json", json(proxy, now), head_only),
        "/metrics" => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(proxy, now).into_bytes(),
            head_only,
        ),
        _ => response(404, "text/plain", b"not found\n".to_vec(), head_only),
    }
}

fn response(status: u16, content_type: &str, body: Vec<u8>, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&body);
    }
    out
}

// ---- the data --------------------------------------------------------------

#[derive(Serialize)]
pub struct Snapshot {
    pub uptime_ms: u64,
    pub connections: Connections,
    pub reloads: u64,
    pub reloads_failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub buffers_in_use: usize,
    pub timers_pending: usize,
    pub services: Vec<ServiceSnap>,
}

#[derive(Serialize)]
pub struct Connections {
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
}

#[derive(Serialize)]
pub struct ServiceSnap {
    pub name: String,
    pub listen: String,
    pub strategy: String,
    pub active: usize,
    pub total: u64,
    pub rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub health_check: bool,
    pub backends: Vec<BackendSnap>,
    pub clients: Vec<ClientSnap>,
}

#[derive(Serialize)]
pub struct BackendSnap {
    pub address: String,
    pub resolved: String,
    pub state: &'static str,
    pub weight: u32,
    pub backup: bool,
    pub max_connections: usize,
    pub active: usize,
    pub total: u64,
    pub failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_check: String,
    pub last_check_ms: Option<f64>,
    pub state_since_ms: u64,
}

#[derive(Serialize)]
pub struct ClientSnap {
    pub ip: String,
    pub active: usize,
}

/// Everything the three views show, read from the proxy at `now`.
pub fn snapshot(proxy: &Proxy, now: Instant) -> Snapshot {
    let c = &proxy.state.counters;
    let services = proxy
        .state
        .services
        .iter()
        .filter(|(_, s)| !s.removed)
        .map(|(_, s)| {
            let mut clients: Vec<ClientSnap> = s
                .clients
                .iter()
                .map(|(ip, n)| ClientSnap {
                    ip: ip.to_string(),
                    active: *n,
                })
                .collect();
            clients.sort_by(|a, b| a.ip.cmp(&b.ip));
            ServiceSnap {
                name: s.cfg.name.clone(),
                listen: s
                    .listener
                    .as_ref()
                    .and_then(|l| l.local_addr().ok())
                    .unwrap_or(s.cfg.listen)
                    .to_string(),
                strategy: s.cfg.strategy.to_string(),
                active: s.active,
                total: s.total,
                rejected: s.rejected,
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                health_check: s.cfg.health_check.is_some(),
                backends: s
                    .balancer
                    .order()
                    .iter()
                    .filter_map(|&k| s.balancer.backends.get(k))
                    .map(|b| BackendSnap {
                        address: b.cfg.address.clone(),
                        resolved: b.cfg.addr.to_string(),
                        state: if b.is_up() { "up" } else { "down" },
                        weight: b.cfg.weight,
                        backup: b.cfg.backup,
                        max_connections: b.cfg.max_connections,
                        active: b.active,
                        total: b.total,
                        failures: b.failures,
                        bytes_in: b.bytes_in,
                        bytes_out: b.bytes_out,
                        last_check: b.health.last.to_string(),
                        last_check_ms: b.health.last_latency.map(|d| d.as_secs_f64() * 1000.0),
                        state_since_ms: now.saturating_duration_since(b.health.last_change).as_millis() as u64,
                    })
                    .collect(),
                clients,
            }
        })
        .collect();
    Snapshot {
        uptime_ms: now.saturating_duration_since(proxy.state.started).as_millis() as u64,
        connections: Connections {
            active: c.active,
            total: c.total,
            rejected: c.rejected,
        },
        reloads: c.reloads,
        reloads_failed: c.reloads_failed,
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        buffers_in_use: proxy.traffic.pools.buffers.in_use(),
        timers_pending: proxy.timers_pending(),
        services,
    }
}

fn json(proxy: &Proxy, now: Instant) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(&snapshot(proxy, now)).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}

fn prom_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn metrics(proxy: &Proxy, now: Instant) -> String {
    let snap = snapshot(proxy, now);
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let svc_rows = |f: &dyn Fn(&ServiceSnap) -> String| {
        snap.services
            .iter()
            .map(|s| (format!("{{service=\"{}\"}}", prom_label(&s.name)), f(s)))
            .collect::<Vec<_>>()
    };
    let be_rows = |f: &dyn Fn(&BackendSnap) -> String| {
        snap.services
            .iter()
            .flat_map(|s| {
                s.backends.iter().map(move |b| {
                    (
                        format!(
                            "{{service=\"{}\",backend=\"{}\"}}",
                            prom_label(&s.name),
                            prom_label(&b.address)
                        ),
                        f(b),
                    )
                })
            })
            .collect::<Vec<_>>()
    };
    family(
        "easyproxy_uptime_seconds",
        "gauge",
        "Seconds since easyproxy started.",
        vec![(String::new(), format!("{:.3}", snap.uptime_ms as f64 / 1000.0))],
    );
    family(
        "easyproxy_reloads_total",
        "counter",
        "Successful configuration reloads.",
        vec![(String::new(), snap.reloads.to_string())],
    );
    family(
        "easyproxy_reloads_failed_total",
        "counter",
        "Rejected configuration reloads.",
        vec![(String::new(), snap.reloads_failed.to_string())],
    );
    family(
        "easyproxy_connections_active",
        "gauge",
        "Client connections open now.",
        svc_rows(&|s| s.active.to_string()),
    );
    family(
        "easyproxy_connections_total",
        "counter",
        "Client connections accepted.",
        svc_rows(&|s| s.total.to_string()),
    );
    family(
        "easyproxy_connections_rejected_total",
        "counter",
        "Client connections closed because no backend could be chosen.",
        svc_rows(&|s| s.rejected.to_string()),
    );
    family(
        "easyproxy_backend_up",
        "gauge",
        "1 when the backend is up, 0 when down.",
        be_rows(&|b| if b.state == "up" { "1".into() } else { "0".into() }),
    );
    family(
        "easyproxy_backend_connections_active",
        "gauge",
        "Connections open to the backend now.",
        be_rows(&|b| b.active.to_string()),
    );
    family(
        "easyproxy_backend_connections_total",
        "counter",
        "Connections established to the backend.",
        be_rows(&|b| b.total.to_string()),
    );
    family(
        "easyproxy_backend_failures_total",
        "counter",
        "Failed connects and failed health checks of the backend.",
        be_rows(&|b| b.failures.to_string()),
    );
    family(
        "easyproxy_backend_bytes_in_total",
        "counter",
        "Bytes received from the backend.",
        be_rows(&|b| b.bytes_in.to_string()),
    );
    family(
        "easyproxy_backend_bytes_out_total",
        "counter",
        "Bytes sent to the backend.",
        be_rows(&|b| b.bytes_out.to_string()),
    );
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

const CSS: &str = "body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.sub{color:#667;margin-bottom:16px}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:110px}\
.card b{display:block;font-size:20px}.card span{color:#667;font-size:12px}\
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7;margin:6px 0 4px;min-width:480px}\
th,td{padding:6px 12px;border-bottom:1px solid #eef0f3;text-align:right;white-space:nowrap}th{background:#eef1f5;font-weight:600}\
td:first-child,th:first-child{text-align:left}.up{background:#2e9d57;color:#fff}.down{background:#d23b3b;color:#fff}\
.state{border-radius:4px;padding:1px 8px;font-weight:600;font-size:12px}.muted{color:#889}\
.backends td:nth-child(2),.backends th:nth-child(2){text-align:center}";

fn html(proxy: &Proxy, now: Instant) -> String {
    let snap = snapshot(proxy, now);
    let mut h = String::with_capacity(8192);
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>easyproxy statistics</title><style>{CSS}</style></head><body>\
         <h1>easyproxy statistics</h1><div class=\"sub\">version {} &middot; refreshes every 5 s &middot; \
         also as <a href=\"/stats\">JSON</a> and <a href=\"/metrics\">Prometheus metrics</a></div>\
         <div class=\"cards\">\
         <div class=\"card\"><b>{}</b><span>uptime</span></div>\
         <div class=\"card\"><b>{}</b><span>active connections</span></div>\
         <div class=\"card\"><b>{}</b><span>total connections</span></div>\
         <div class=\"card\"><b>{}</b><span>rejected</span></div>\
         <div class=\"card\"><b>{}</b><span>from backends</span></div>\
         <div class=\"card\"><b>{}</b><span>to backends</span></div>\
         <div class=\"card\"><b>{} / {}</b><span>reloads ok / failed</span></div></div>",
        env!("CARGO_PKG_VERSION"),
        human_duration(snap.uptime_ms),
        snap.connections.active,
        snap.connections.total,
        snap.connections.rejected,
        human_bytes(snap.bytes_in),
        human_bytes(snap.bytes_out),
        snap.reloads,
        snap.reloads_failed,
    );
    for s in &snap.services {
        let _ = write!(
            h,
            "<h2>service {} <span class=\"muted\">&middot; {} &middot; {} &middot; {} active, {} total, {} rejected{}</span></h2>\
             <table class=\"backends\"><tr><th>backend</th><th>state</th><th>weight</th><th>backup</th><th>active</th>\
             <th>total</th><th>failures</th><th>bytes in</th><th>bytes out</th><th>last check</th><th>for</th></tr>",
            esc(&s.name),
            esc(&s.listen),
            esc(&s.strategy),
            s.active,
            s.total,
            s.rejected,
            if s.health_check { "" } else { " &middot; no health check" }
        );
        for b in &s.backends {
            let check = match b.last_check_ms {
                Some(ms) => format!("{} ({ms:.1} ms)", esc(&b.last_check)),
                None => esc(&b.last_check),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><span class=\"state {}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b.address),
                b.state,
                b.state.to_uppercase(),
                b.weight,
                if b.backup { "yes" } else { "no" },
                b.active,
                b.total,
                b.failures,
                human_bytes(b.bytes_in),
                human_bytes(b.bytes_out),
                check,
                human_duration(b.state_since_ms),
            );
        }
        h.push_str("</table><table class=\"clients\"><tr><th>client IP</th><th>active connections</th></tr>");
        if s.clients.is_empty() {
            h.push_str("<tr><td class=\"muted\">no clients connected</td><td></td></tr>");
        }
        for c in &s.clients {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&c.ip), c.active);
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server with one connection per given stage, accepted at the given
    /// offsets (ms) before `now`.
    fn server_with(stages: Vec<(Stage, u64)>, now: Instant) -> (StatsServer, Vec<std::net::TcpStream>) {
        let cfg = StatsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            timeout: Duration::from_secs(10),
        };
        let mut server = StatsServer::bind(&cfg).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for (stage, ago) in stages {
            clients.push(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
            let (accepted, _) = l.accept().unwrap();
            let since = now - Duration::from_millis(ago);
            let id = server.next_id;
            server.next_id += 1;
            server.conns.insert(Conn {
                id,
                stream: TcpStream::from_std(accepted),
                stage,
                head: Vec::new(),
                out: Vec::new(),
                written: 0,
                accepted: since,
                deadline: since + cfg.timeout,
            });
        }
        (server, clients)
    }

    fn stages_left(server: &StatsServer) -> Vec<&'static str> {
        server
            .conns
            .iter()
            .map(|(_, c)| match c.stage {
                Stage::Reading => "reading",
                Stage::Writing => "writing",
                Stage::Draining(_) => "draining",
            })
            .collect()
    }

    #[test]
    fn eviction_order_answered_then_stale_senders_then_stale_readers() {
        let now = Instant::now() + Duration::from_secs(5);
        let (mut s, _c) = server_with(
            vec![
                (Stage::Writing, 1000),
                (Stage::Reading, 1000),
                (Stage::Reading, 50),
                (Stage::Draining(0), 10),
            ],
            now,
        );
        assert!(s.evict_one(now));
        assert_eq!(
            stages_left(&s),
            ["writing", "reading", "reading"],
            "the answered one goes first"
        );
        assert!(s.evict_one(now));
        assert_eq!(stages_left(&s), ["writing", "reading"], "then the stale sender");
        assert_eq!(
            s.conns.iter().nth(1).map(|(_, c)| c.accepted),
            Some(now - Duration::from_millis(50))
        );
        assert!(s.evict_one(now));
        assert_eq!(
            stages_left(&s),
            ["reading"],
            "then one not reading its answer for 200 ms"
        );
        assert!(!s.evict_one(now), "a young connection keeps its slot");
        assert!(s.evict_one(now + EVICT_MIN_AGE), "until it has had it for 200 ms");
    }

    #[test]
    fn parse_classes() {
        assert!(matches!(
            parse(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Request { .. }
        ));
        assert!(matches!(parse(b"GET /stats HTTP/1.1\r\nHost"), Parsed::Partial));
        assert!(matches!(parse(b"\x00\x01garbage\r\n\r\n"), Parsed::Bad));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(prom_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_duration(61_000), "1m 1s");
    }
}
