//! Step 0 of the data flow: `easyproxy.toml` read, validated and turned into
//! the typed [`Config`] that every other module runs from.
//!
//! Parsing is strict (unknown keys are errors) and validation collects every
//! problem it finds, each naming its key, so an operator fixes a file in one go.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde::Deserialize;

/// Raw `[global]` table, exactly as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    max_connections: Option<u64>,
    buffer_size: Option<u64>,
    shutdown_timeout_ms: Option<u64>,
    log_level: Option<String>,
    log_file: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    splice: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStats {
    listen: String,
    timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
    rise: Option<u64>,
    fall: Option<u64>,
    send: Option<String>,
    expect: Option<String>,
    mysql_user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: String,
    weight: Option<i64>,
    backup: Option<bool>,
    max_connections: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    listen: String,
    strategy: Option<String>,
    connect_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    retries: Option<u64>,
    max_connections: Option<u64>,
    backlog: Option<u64>,
    send_proxy: Option<String>,
    health_check: Option<RawHealthCheck>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: RawGlobal,
    stats: Option<RawStats>,
    #[serde(default)]
    service: Vec<RawService>,
}

/// How a service chooses a backend for a new client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    RoundRobin,
    Random,
    LeastConn,
    PowerOfTwo,
    IpHash,
}

impl Strategy {
    /// Parses a strategy name, accepting the original EasyProxy aliases.
    pub fn parse(s: &str) -> Option<Strategy> {
        Some(match s {
            "round_robin" | "poll" => Strategy::RoundRobin,
            "random" => Strategy::Random,
            "least_conn" => Strategy::LeastConn,
            "power_of_two" => Strategy::PowerOfTwo,
            "ip_hash" | "iphash" => Strategy::IpHash,
            _ => return None,
        })
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::Random => "random",
            Strategy::LeastConn => "least_conn",
            Strategy::PowerOfTwo => "power_of_two",
            Strategy::IpHash => "ip_hash",
        })
    }
}

/// Which PROXY protocol header, if any, starts each backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendProxy {
    None,
    V1,
    V2,
}

impl fmt::Display for SendProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendProxy::None => "none",
            SendProxy::V1 => "v1",
            SendProxy::V2 => "v2",
        })
    }
}

/// Settings that apply to the whole process.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    pub max_connections: usize,
    pub buffer_size: usize,
    pub shutdown_timeout: Duration,
    pub log_level: LevelFilter,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// Move bulk transfers with splice(2) instead of copying (Linux).
    pub splice: bool,
}

/// The optional stats listener.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    pub listen: SocketAddr,
    /// Time a stats client has to send its request and read the answer.
    pub timeout: Duration,
}

/// Active health checking of one service's backends.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
    /// Log in as this (passwordless) MySQL/MariaDB user and quit, instead
    /// of a bare connect that the server would count as an aborted one.
    pub mysql_user: Option<String>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            interval: Duration::from_millis(2000),
            timeout: Duration::from_millis(1000),
            rise: 2,
            fall: 3,
            send: Vec::new(),
            expect: Vec::new(),
            mysql_user: None,
        }
    }
}

/// One backend server; `address` is the text as written (the key backends are
/// matched by on reload), `addr` what it resolved to.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    pub address: String,
    pub addr: SocketAddr,
    pub weight: u32,
    pub backup: bool,
    pub max_connections: usize,
}

/// One listening service and its backends.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub strategy: Strategy,
    pub connect_timeout: Duration,
    /// `None` means never.
    pub idle_timeout: Option<Duration>,
    pub retries: u32,
    /// 0 means only the global limit applies.
    pub max_connections: usize,
    /// Listen backlog: clients past the connection limits wait here (the
    /// kernel caps it at net.core.somaxconn).
    pub backlog: u32,
    pub send_proxy: SendProxy,
    pub health_check: Option<HealthCheck>,
    pub backends: Vec<BackendConfig>,
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub stats: Option<StatsConfig>,
    pub services: Vec<ServiceConfig>,
}

/// Every problem found in a configuration file, ready to print.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", self.path.display(), p)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub const MAX_BUFFER_SIZE: u64 = 16 * 1024 * 1024;
/// Largest configuration file read.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
pub const MIN_BUFFER_SIZE: u64 = 512;
const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |msg: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![msg],
        };
        // Bounded read: a configuration is small; a huge file is a mistake.
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot read file: {e}")))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_FILE_SIZE + 1), &mut bytes)
            .map_err(|e| err(format!("cannot read file: {e}")))?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(err(format!("file is larger than {} MiB", MAX_FILE_SIZE >> 20)));
        }
        let text = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
        Config::parse(&text).map_err(|problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates configuration text; the error lists every problem.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| vec![toml_error(text, &e)])?;
        let mut v = Validator::default();
        let cfg = v.config(raw);
        if v.problems.is_empty() {
            Ok(cfg)
        } else {
            Err(v.problems)
        }
    }
}

/// Formats a TOML error as `line L, column C: message`.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e
        .message()
        .trim()
        .replace("expected u64", "expected a whole number (0 or more)");
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            // Name the table the error is in: TOML's message often does not.
            let table = text
                .lines()
                .take(line)
                .filter(|l| l.trim_start().starts_with('['))
                .last()
                .map(|l| format!(" (in {})", l.trim()))
                .unwrap_or_default();
            // A bad value on a `key = value` line: say which key.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| {
                    let (k, _) = l.split_once('=')?;
                    (col > k.chars().count() + 1 && !k.trim().is_empty() && !k.contains('[')).then(|| k.trim())
                })
                .filter(|k| !msg.contains(&format!("`{k}`")))
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            format!("line {line}, column {col}{table}: {key}{msg}")
        }
        None => msg,
    }
}

/// Two listen addresses that cannot both be bound: the same port on the
/// same address, or with a wildcard address of the same family (0.0.0.0:80
/// takes 127.0.0.1:80 too). Port 0 never clashes.
fn listens_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = text.get(..offset.min(text.len())).unwrap_or("");
    let line = upto.matches('\n').count() + 1;
    let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[derive(Default)]
struct Validator {
    problems: Vec<String>,
}

impl Validator {
    fn err(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    fn ms(&mut self, key: &str, v: Option<u64>, default: u64, allow_zero: bool) -> Duration {
        let v = v.unwrap_or(default);
        if v == 0 && !allow_zero {
            self.err(key, "must be greater than 0");
        } else if v > MAX_DURATION_MS {
            self.err(key, format!("{v} is too large (at most {MAX_DURATION_MS})"));
        }
        Duration::from_millis(v.min(MAX_DURATION_MS))
    }

    fn count(&mut self, key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            self.err(key, format!("{v} is out of range ({min}..={max})"));
            return default;
        }
        v
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let g = raw.global;
        let log_level = match g.log_level.as_deref().unwrap_or("info") {
            "error" => LevelFilter::Error,
            "warn" => LevelFilter::Warn,
            "info" => LevelFilter::Info,
            "debug" => LevelFilter::Debug,
            "trace" => LevelFilter::Trace,
            other => {
                self.err(
                    "global.log_level",
                    format!("unknown level {other:?} (error | warn | info | debug | trace)"),
                );
                LevelFilter::Info
            }
        };
        let global = Global {
            max_connections: self.count("global.max_connections", g.max_connections, 10000, 1, 10_000_000) as usize,
            buffer_size: self.count(
                "global.buffer_size",
                g.buffer_size,
                16384,
                MIN_BUFFER_SIZE,
                MAX_BUFFER_SIZE,
            ) as usize,
            shutdown_timeout: self.ms("global.shutdown_timeout_ms", g.shutdown_timeout_ms, 10000, true),
            log_level,
            log_file: g.log_file,
            pid_file: g.pid_file,
            splice: g.splice.unwrap_or(true),
        };
        let stats = raw.stats.and_then(|s| {
            let timeout = self.ms("stats.timeout_ms", s.timeout_ms, 10_000, false);
            match parse_listen(&s.listen) {
                Ok(listen) => Some(StatsConfig { listen, timeout }),
                Err(e) => {
                    self.err("stats.listen", e);
                    None
                }
            }
        });
        if raw.service.is_empty() {
            self.err("service", "no [[service]] is defined");
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, s) in raw.service.into_iter().enumerate() {
            if let Some(svc) = self.service(i, s) {
                if services.iter().any(|o| o.name == svc.name) {
                    self.err(
                        &format!("service[{i}].name"),
                        format!("duplicate service name {:?}", svc.name),
                    );
                }
                if let Some(o) = services.iter().find(|o| listens_overlap(o.listen, svc.listen)) {
                    self.err(
                        &format!("service[{i}].listen"),
                        format!("{} is already used by service {:?} ({})", svc.listen, o.name, o.listen),
                    );
                }
                if let Some(st) = stats.as_ref().filter(|st| listens_overlap(st.listen, svc.listen)) {
                    self.err(
                        &format!("service[{i}].listen"),
                        format!("{} is already used by [stats] ({})", svc.listen, st.listen),
                    );
                }
                services.push(svc);
            }
        }
        Config {
            global,
            stats,
            services,
        }
    }

    fn service(&mut self, i: usize, s: RawService) -> Option<ServiceConfig> {
        let key = format!("service[{i}]");
        let mut ok = true;
        if s.name.trim().is_empty() {
            self.err(&format!("{key}.name"), "must not be empty");
            ok = false;
        } else if s.name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            self.err(
                &format!("{key}.name"),
                "must not contain quotes, backslashes or control characters",
            );
            ok = false;
        }
        let key = if s.name.is_empty() {
            key
        } else {
            format!("{key} ({})", s.name)
        };
        let listen = match parse_listen(&s.listen) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(&format!("{key}.listen"), e);
                None
            }
        };
        let strategy = match s.strategy.as_deref() {
            None => Some(Strategy::RoundRobin),
            Some(name) => {
                let st = Strategy::parse(name);
                if st.is_none() {
                    self.err(
                        &format!("{key}.strategy"),
                        format!(
                            "unknown strategy {name:?} (round_robin | random | least_conn | power_of_two | ip_hash; aliases poll, iphash)"
                        ),
                    );
                }
                st
            }
        };
        let send_proxy = match s.send_proxy.as_deref().unwrap_or("none") {
            "none" => SendProxy::None,
            "v1" => SendProxy::V1,
            "v2" => SendProxy::V2,
            other => {
                self.err(
                    &format!("{key}.send_proxy"),
                    format!("unknown value {other:?} (none | v1 | v2)"),
                );
                SendProxy::None
            }
        };
        let connect_timeout = self.ms(&format!("{key}.connect_timeout_ms"), s.connect_timeout_ms, 3000, false);
        let idle = self.ms(&format!("{key}.idle_timeout_ms"), s.idle_timeout_ms, 3_600_000, true);
        let retries = self.count(&format!("{key}.retries"), s.retries, 2, 0, 100) as u32;
        let max_connections =
            self.count(&format!("{key}.max_connections"), s.max_connections, 0, 0, 10_000_000) as usize;
        let backlog = self.count(&format!("{key}.backlog"), s.backlog, 1024, 1, 65535) as u32;
        let health_check = s.health_check.map(|h| self.health(&format!("{key}.health_check"), h));
        if s.backend.is_empty() {
            self.err(
                &format!("{key}.backend"),
                "a service needs at least one [[service.backend]]",
            );
            ok = false;
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        for (j, b) in s.backend.into_iter().enumerate() {
            let bkey = format!("{key}.backend[{j}]");
            match self.backend(&bkey, b) {
                Some(b) => {
                    if backends.iter().any(|o| o.address == b.address) {
                        self.err(&format!("{bkey}.address"), format!("duplicate backend {:?}", b.address));
                        ok = false;
                    }
                    backends.push(b);
                }
                None => ok = false,
            }
        }
        match (ok, listen, strategy) {
            (true, Some(listen), Some(strategy)) => Some(ServiceConfig {
                name: s.name,
                listen,
                strategy,
                connect_timeout,
                idle_timeout: (!idle.is_zero()).then_some(idle),
                retries,
                max_connections,
                backlog,
                send_proxy,
                health_check,
                backends,
            }),
            _ => None,
        }
    }

    fn health(&mut self, key: &str, h: RawHealthCheck) -> HealthCheck {
        let d = HealthCheck::default();
        let send = match h.send.as_deref().map(unescape).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                self.err(&format!("{key}.send"), e);
                Vec::new()
            }
        };
        let expect = match h.expect.as_deref().map(unescape).transpose() {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                self.err(&format!("{key}.expect"), e);
                Vec::new()
            }
        };
        if expect.len() > 4096 {
            self.err(&format!("{key}.expect"), "longer than 4096 bytes");
        }
        if send.len() > 65536 {
            self.err(&format!("{key}.send"), "longer than 65536 bytes");
        }
        let mysql_user = h.mysql_user.filter(|u| !u.is_empty());
        if mysql_user.is_some() && (!send.is_empty() || !expect.is_empty()) {
            self.err(&format!("{key}.mysql_user"), "cannot be combined with send/expect");
        }
        if mysql_user.as_ref().is_some_and(|u| u.len() > 64 || u.contains('\0')) {
            self.err(&format!("{key}.mysql_user"), "must be at most 64 bytes without NUL");
        }
        HealthCheck {
            mysql_user,
            interval: self.ms(
                &format!("{key}.interval_ms"),
                h.interval_ms,
                d.interval.as_millis() as u64,
                false,
            ),
            timeout: self.ms(
                &format!("{key}.timeout_ms"),
                h.timeout_ms,
                d.timeout.as_millis() as u64,
                false,
            ),
            rise: self.count(&format!("{key}.rise"), h.rise, d.rise as u64, 1, 1000) as u32,
            fall: self.count(&format!("{key}.fall"), h.fall, d.fall as u64, 1, 1000) as u32,
            send,
            expect,
        }
    }

    fn backend(&mut self, key: &str, b: RawBackend) -> Option<BackendConfig> {
        let weight = b.weight.unwrap_or(1);
        let mut ok = true;
        if !(1..=256).contains(&weight) {
            self.err(&format!("{key}.weight"), format!("{weight} is out of range (1..=256)"));
            ok = false;
        }
        let max_connections = self.count(&format!("{key}.max_connections"), b.max_connections, 0, 0, 10_000_000);
        let addr = match resolve(&b.address) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(&format!("{key}.address"), e);
                None
            }
        };
        match (ok, addr) {
            (true, Some(addr)) => Some(BackendConfig {
                address: b.address,
                addr,
                weight: weight as u32,
                backup: b.backup.unwrap_or(false),
                max_connections: max_connections as usize,
            }),
            _ => None,
        }
    }
}

/// A listen address must be a literal `IP:PORT` or `[IPv6]:PORT`.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an IP:PORT or [IPv6]:PORT address"))
}

/// Backends may also be `hostname:PORT`, resolved now (first address wins,
/// IPv4 preferred so `localhost` means what most people expect).
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolved to no address"))
}

/// Interprets `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` escapes in health-check
/// strings, so that literal TOML strings (`'PING\r\n'`) work too.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = bytes.get(i + 1) else {
            return Err("a lone backslash ends the string".into());
        };
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = s.get(i + 2..i + 4).ok_or("\\x needs two hex digits")?;
                let v = u8::from_str_radix(hex, 16).map_err(|_| format!("\\x{hex} is not a hex byte"))?;
                out.push(v);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
        i += 2;
    }
    Ok(out)
}

impl fmt::Display for Config {
    /// The one-screen summary printed by `--check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.global;
        writeln!(
            f,
            "global: max_connections={} buffer_size={} shutdown_timeout_ms={} log_level={} splice={}",
            g.max_connections,
            g.buffer_size,
            g.shutdown_timeout.as_millis(),
            g.log_level.to_string().to_lowercase(),
            g.splice
        )?;
        match &self.stats {
            Some(s) => writeln!(f, "stats: listen {}", s.listen)?,
            None => writeln!(f, "stats: off")?,
        }
        for s in &self.services {
            writeln!(
                f,
                "service {:?}: listen {} backlog {} strategy {} retries {} connect_timeout_ms {} send_proxy {} health_check {}",
                s.name,
                s.listen,
                s.backlog,
                s.strategy,
                s.retries,
                s.connect_timeout.as_millis(),
                s.send_proxy,
                if s.health_check.is_some() { "on" } else { "off" }
            )?;
            for b in &s.backends {
                write!(f, "  backend {}", b.address)?;
                if b.address != b.addr.to_string() {
                    write!(f, " ({})", b.addr)?;
                }
                write!(f, " weight {}", b.weight)?;
                if b.backup {
                    write!(f, " backup")?;
                }
                if b.max_connections > 0 {
                    write!(f, " max_connections {}", b.max_connections)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
[[service]]
name = "a"
listen = "127.0.0.1:0"
[[service.backend]]
address = "127.0.0.1:1"
"#;

    #[test]
    fn minimal_defaults() {
        let c = Config::parse(MIN).unwrap();
        assert_eq!(c.global.max_connections, 10000);
        assert_eq!(c.global.buffer_size, 16384);
        let s = &c.services[0];
        assert_eq!(s.strategy, Strategy::RoundRobin);
        assert_eq!(s.retries, 2);
        assert_eq!(s.backlog, 1024);
        assert_eq!(s.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(s.backends[0].weight, 1);
    }

    #[test]
    fn overlapping_listen_addresses_are_errors() {
        let two = |a: &str, b: &str| {
            format!(
                "[[service]]\nname = \"a\"\nlisten = \"{a}\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n\
                 [[service]]\nname = \"b\"\nlisten = \"{b}\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n"
            )
        };
        for (a, b) in [
            ("127.0.0.1:9000", "127.0.0.1:9000"),
            ("0.0.0.0:9000", "127.0.0.1:9000"),
            ("127.0.0.2:9000", "0.0.0.0:9000"),
            ("[::]:9000", "[::1]:9000"),
        ] {
            let e = Config::parse(&two(a, b)).unwrap_err().join("\n");
            assert!(e.contains("is already used by service \"a\""), "{a} {b}: {e}");
        }
        for (a, b) in [
            ("127.0.0.1:9000", "127.0.0.2:9000"),
            ("127.0.0.1:9000", "127.0.0.1:9001"),
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0.0.0.0:0", "127.0.0.1:0"),
        ] {
            assert!(Config::parse(&two(a, b)).is_ok(), "{a} {b}");
        }
        let stats = format!(
            "[stats]\nlisten = \"0.0.0.0:9000\"\n{}",
            two("127.0.0.1:9000", "127.0.0.1:9001")
        );
        let e = Config::parse(&stats).unwrap_err().join("\n");
        assert!(e.contains("is already used by [stats]"), "{e}");
    }

    #[test]
    fn backlog_is_bounded() {
        let with = |v: &str| {
            MIN.replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:0\"\nbacklog = {v}"),
            )
        };
        assert_eq!(Config::parse(&with("16")).unwrap().services[0].backlog, 16);
        for bad in ["0", "65536", "-1"] {
            let e = Config::parse(&with(bad)).unwrap_err().join("\n");
            assert!(e.contains("backlog"), "{bad}: {e}");
        }
    }

    #[test]
    fn aliases() {
        assert_eq!(Strategy::parse("poll"), Some(Strategy::RoundRobin));
        assert_eq!(Strategy::parse("iphash"), Some(Strategy::IpHash));
        assert_eq!(Strategy::parse("nope"), None);
    }

    #[test]
    fn unknown_key_has_position() {
        let e = Config::parse(&format!("{MIN}\nbogus = 1\n")).unwrap_err();
        assert!(e[0].contains("line"), "{e:?}");
        assert!(e[0].contains("bogus"), "{e:?}");
    }

    #[test]
    fn zero_weight_and_bad_strategy_are_named() {
        let text = MIN
            .replace("address = \"127.0.0.1:1\"", "address = \"127.0.0.1:1\"\nweight = 0")
            .replace(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:0\"\nstrategy = \"fastest\"",
            );
        let e = Config::parse(&text).unwrap_err();
        assert!(e.iter().any(|p| p.contains("weight")), "{e:?}");
        assert!(e.iter().any(|p| p.contains("strategy")), "{e:?}");
    }

    #[test]
    fn mysql_user_excludes_send_expect() {
        let with = |extra: &str| format!("{MIN}[service.health_check]\nmysql_user = \"check\"\n{extra}");
        let c = Config::parse(&with("")).unwrap();
        assert_eq!(
            c.services[0].health_check.as_ref().unwrap().mysql_user.as_deref(),
            Some("check")
        );
        let e = Config::parse(&with("expect = \"x\"\n")).unwrap_err();
        assert!(e.iter().any(|p| p.contains("mysql_user")), "{e:?}");
    }

    #[test]
    fn unescape_works() {
        assert_eq!(unescape(r"PING\r\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape(r"\x00\xff").unwrap(), vec![0, 255]);
        assert!(unescape(r"\q").is_err());
        assert!(unescape("\\").is_err());
        assert!(unescape(r"\x4").is_err());
    }

    /// Line-level mutations of a full configuration: every result must be a
    /// clean Ok or Err, never a panic. (Only literal IPs, so no DNS.)
    #[test]
    fn mutated_files_never_panic() {
        let base = r#"
[global]
max_connections = 100
buffer_size = 4096
shutdown_timeout_ms = 100
log_level = "warn"
splice = false
[stats]
listen = "127.0.0.1:0"
timeout_ms = 100
[[service]]
name = "a"
listen = "127.0.0.1:0"
strategy = "ip_hash"
connect_timeout_ms = 10
idle_timeout_ms = 0
retries = 3
max_connections = 2
send_proxy = "v2"
[service.health_check]
interval_ms = 5
timeout_ms = 5
rise = 1
fall = 1
send = 'PING\r\n'
expect = '\x00+PONG'
[[service.backend]]
address = "127.0.0.1:1"
weight = 256
backup = true
max_connections = 1
[[service.backend]]
address = "[::1]:2"
"#;
        let junk = [
            "-1",
            "0",
            "18446744073709551616",
            "99999999999999999999",
            "\"\"",
            "\"x\"",
            "[",
            "]",
            "{}",
            "[[service]]",
            "true",
            "1.5",
            r"'\x'",
            r"'\xZZ'",
            "= =",
            r#""\u0000""#,
            "nan",
            "inf",
            "\"127.0.0.1:99999\"",
            "\"[::1]\"",
            "\"::1:80\"",
            "\"127.0.0.1:-1\"",
        ];
        let lines: Vec<&str> = base.lines().collect();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as usize
        };
        let mut ok = 0;
        for _ in 0..3000 {
            let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            for _ in 0..1 + next() % 4 {
                let i = next() % l.len();
                match next() % 5 {
                    0 => {
                        l.remove(i);
                    }
                    1 => {
                        let dup = l[i].clone();
                        l.insert(i, dup);
                    }
                    2 => {
                        let j = next() % l.len();
                        l.swap(i, j);
                    }
                    _ => {
                        if let Some((k, _)) = l[i].split_once('=') {
                            l[i] = format!("{k}= {}", junk[next() % junk.len()]);
                        }
                    }
                }
            }
            if Config::parse(&l.join("\n")).is_ok() {
                ok += 1;
            }
        }
        assert!(ok > 0 && ok < 3000, "mutations should produce both outcomes ({ok} ok)");
    }

    #[test]
    fn line_col_counts() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
