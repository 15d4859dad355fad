//! Before the flow: `easyproxy.toml` read, validated and turned into
//! the typed [`Config`] that every other module runs from.
//!
//! Parsing is strict (unknown keys are errors) and validation collects every
//! problem it finds, each naming its key, so an operator fixes a file in one go.
//!
//! One file per step: `raw` deserialises the TOML, `validate` checks it
//! (`service`, `health` and `mysql` for the per-service tables, `resolve` for
//! addresses, `cidr` for `stats.allow`, `admin` for `[admin]` and its
//! token) and `summary` prints the `--check` summary. `json` is a second
//! front-end, for EasyProxy's own JSON file.

mod admin;
mod cidr;
mod health;
mod json;
mod mysql;
mod raw;
mod resolve;
mod service;
mod summary;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

pub use admin::{read_token, AdminConfig, AdminToken, MIN_TOKEN_LEN};
pub use cidr::Cidr;
pub use health::unescape;
pub use mysql::{
    read_key_file, read_password_file, KeyError, MysqlServerKey, PinnedKey, Role, RsaKey, Secret, MAX_PASSWORD,
    MAX_QUERY, MAX_RSA_BITS,
};

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
    /// Where admin states and runtime weights are kept across restarts.
    pub state_file: Option<PathBuf>,
}

/// The optional stats listener.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    pub listen: SocketAddr,
    /// Time a stats client has to send its request and read the answer.
    pub timeout: Duration,
    /// Peers allowed to connect; empty: everyone. Others are closed at accept.
    pub allow: Vec<Cidr>,
    /// How old the counters in an answer may be: a rendered answer is
    /// shared for this long (zero: rendered for every request).
    pub cache: Duration,
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
    /// Log in as this MySQL/MariaDB user, run the queries the role needs
    /// and quit, instead of a bare connect that the server would count as
    /// an aborted one.
    pub mysql_user: Option<String>,
    /// The user's password (`mysql_password`, or the first line of
    /// `mysql_password_file` as read at load); empty: none.
    pub mysql_password: Secret,
    /// Where the password was read from, if from a file.
    pub mysql_password_file: Option<PathBuf>,
    /// The role the server must be in to be up; `None` (`any`): logging in
    /// is enough.
    pub role: Option<Role>,
    /// `role = "replica"`: down when replication lags more; `None`: no limit.
    pub max_replication_lag: Option<Duration>,
    /// Up only if the first column of this query's first row is true.
    pub mysql_query: Option<String>,
    /// caching_sha2 full authentication: the RSA key the password may be
    /// encrypted to (pinned, the server's, or none: no password sent).
    pub mysql_server_key: MysqlServerKey,
}

impl HealthCheck {
    /// Backends checked for a role start down: they take traffic only once
    /// a check has seen the role, so a fresh start never sends a write to a
    /// replica.
    pub fn starts_down(&self) -> bool {
        self.role.is_some()
    }
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
            mysql_password: Secret::default(),
            mysql_password_file: None,
            role: None,
            max_replication_lag: None,
            mysql_query: None,
            mysql_server_key: MysqlServerKey::Refuse,
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
    /// Open connections one client IP may hold; 0 = no limit. A client past
    /// it is accepted and closed at once.
    pub max_connections_per_ip: usize,
    /// When a backend goes down (health, role, admin maint), close its open
    /// connections, so clients of a demoted primary reconnect elsewhere.
    pub close_on_down: bool,
    /// Listen backlog: clients past the connection limits wait here (the
    /// kernel caps it at net.core.somaxconn).
    pub backlog: u32,
    pub send_proxy: SendProxy,
    pub health_check: Option<HealthCheck>,
    pub backends: Vec<BackendConfig>,
}

impl ServiceConfig {
    /// The settings without the backend list (which the running service
    /// keeps in its balancer): copying them costs nothing per backend.
    pub fn settings(&self) -> ServiceConfig {
        let ServiceConfig {
            name,
            listen,
            strategy,
            connect_timeout,
            idle_timeout,
            retries,
            max_connections,
            max_connections_per_ip,
            close_on_down,
            backlog,
            send_proxy,
            health_check,
            backends: _,
        } = self;
        ServiceConfig {
            name: name.clone(),
            listen: *listen,
            strategy: *strategy,
            connect_timeout: *connect_timeout,
            idle_timeout: *idle_timeout,
            retries: *retries,
            max_connections: *max_connections,
            max_connections_per_ip: *max_connections_per_ip,
            close_on_down: *close_on_down,
            backlog: *backlog,
            send_proxy: *send_proxy,
            health_check: health_check.clone(),
            backends: Vec::new(),
        }
    }
}

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub global: Global,
    pub stats: Option<StatsConfig>,
    /// The optional admin API (`[admin]`).
    pub admin: Option<AdminConfig>,
    pub services: Vec<ServiceConfig>,
    /// Settings that are valid but probably not what was meant (`--check`
    /// prints them, start and reload log them).
    pub warnings: Vec<String>,
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

/// Largest `global.buffer_size`.
pub const MAX_BUFFER_SIZE: u64 = 16 * 1024 * 1024;
/// Largest configuration file read.
pub const MAX_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Backends one file may list, all services together: a reload of this
/// many is applied in tens of milliseconds (30,000 measured at 22-28 ms in
/// a debug build); past it a file is more likely a mistake than a fleet.
pub const MAX_BACKENDS: usize = 50_000;
/// Smallest `global.buffer_size`.
pub const MIN_BUFFER_SIZE: u64 = 512;

impl Config {
    /// Reads, parses and validates a configuration file: TOML, or
    /// EasyProxy's JSON (a `.json` name or a first non-blank `{`).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_toml(path).map(|(config, _)| config)
    }

    /// Like [`Config::load`], also giving the equivalent easyproxy.toml
    /// when the file is EasyProxy's JSON (`--check` prints it).
    pub fn load_with_toml(path: &Path) -> Result<(Config, Option<String>), ConfigError> {
        let err = |msg: String| ConfigError {
            path: path.to_path_buf(),
            problems: vec![msg],
        };
        // Bounded read: a configuration is small; a huge file is a mistake.
        let bytes = crate::io::file::read_bounded(path, MAX_FILE_SIZE).map_err(|e| match e {
            crate::io::file::ReadError::TooLarge(_) => err(format!("file is larger than {} MiB", MAX_FILE_SIZE >> 20)),
            e => err(format!("cannot read file: {e}")),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| err(format!("not UTF-8 text: {e}")))?;
        let parsed = if json::is_json(path, &text) {
            Config::parse_json(&text).map(|(config, toml)| (config, Some(toml)))
        } else {
            Config::parse(&text).map(|config| (config, None))
        };
        parsed.map_err(|problems| ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses and validates configuration text; the error lists every problem.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let raw = raw::parse(text).map_err(|e| vec![e])?;
        validate::config(raw)
    }
}

#[cfg(test)]
mod tests;
