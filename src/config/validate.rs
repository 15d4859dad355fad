//! Configuration, step 2: validation — raw tables checked and typed, every problem reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;

use super::raw::{RawConfig, RawGlobal, RawService, RawStats};
use super::resolve::{listens_overlap, parse_listen};
use super::{Cidr, Config, Global, ServiceConfig, StatsConfig, MAX_BUFFER_SIZE, MIN_BUFFER_SIZE};

/// Longest duration accepted for any `*_ms` key: one year.
const MAX_DURATION_MS: u64 = 365 * 24 * 3600 * 1000;

/// Validates a deserialised file; the error lists every problem, in file order.
pub(super) fn config(raw: RawConfig) -> Result<Config, Vec<String>> {
    let backends: usize = raw.service.iter().map(|s| s.backend.len()).sum();
    if backends > super::MAX_BACKENDS {
        return Err(vec![too_many_backends(backends)]);
    }
    let mut v = Validator::default();
    let cfg = v.config(raw);
    if v.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(v.problems)
    }
}

/// The error for a file with more than [`super::MAX_BACKENDS`] backends.
pub(super) fn too_many_backends(n: usize) -> String {
    format!("too many backends: {n} (at most {} per file)", super::MAX_BACKENDS)
}

/// Collects problems while building the typed configuration; a value with a
/// problem is replaced by its default so checking goes on.
#[derive(Default)]
pub(super) struct Validator {
    problems: Vec<String>,
    warnings: Vec<String>,
}

impl Validator {
    /// Records a problem with the key it belongs to.
    pub(super) fn err(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    /// Records something valid but probably not meant, with its key.
    pub(super) fn warn(&mut self, key: &str, msg: impl fmt::Display) {
        self.warnings.push(format!("{key}: {msg}"));
    }

    /// Keeps an `Ok` value, or records the error under `key`.
    pub(super) fn check<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.err(key, e)).ok()
    }

    /// A duration in milliseconds, at most [`MAX_DURATION_MS`].
    pub(super) fn ms(&mut self, key: &str, v: Option<u64>, default: u64, allow_zero: bool) -> Duration {
        let v = v.unwrap_or(default);
        if v == 0 && !allow_zero {
            self.err(key, "must be greater than 0");
        } else if v > MAX_DURATION_MS {
            self.err(key, format!("{v} is too large (at most {MAX_DURATION_MS})"));
        }
        Duration::from_millis(v.min(MAX_DURATION_MS))
    }

    /// A count in `min..=max`; out of range is a problem and gives `default`.
    pub(super) fn count(&mut self, key: &str, v: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        let v = v.unwrap_or(default);
        if v < min || v > max {
            self.err(key, format!("{v} is out of range ({min}..={max})"));
            return default;
        }
        v
    }

    /// A listen address (`IP:PORT`).
    pub(super) fn listen(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        self.check(key, parse_listen(s))
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let global = self.global(raw.global);
        let stats = raw.stats.and_then(|s| self.stats(s));
        let admin = raw.admin.and_then(|a| self.admin(a));
        let services = self.services(raw.service, stats.as_ref());
        if let Some(a) = &admin {
            self.admin_clashes(a, stats.as_ref(), &services);
        }
        Config {
            global,
            stats,
            admin,
            services,
            warnings: std::mem::take(&mut self.warnings),
        }
    }

    fn global(&mut self, g: RawGlobal) -> Global {
        let log_level = self.log_level(g.log_level.as_deref());
        Global {
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
            state_file: g.state_file,
        }
    }

    fn log_level(&mut self, level: Option<&str>) -> LevelFilter {
        match level.unwrap_or("info") {
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
        }
    }

    fn stats(&mut self, s: RawStats) -> Option<StatsConfig> {
        let timeout = self.ms("stats.timeout_ms", s.timeout_ms, 10_000, false);
        let cache = self.ms("stats.cache_ms", s.cache_ms, 1000, true);
        let allow = self.allow(s.allow);
        let listen = self.listen("stats.listen", &s.listen)?;
        Some(StatsConfig {
            listen,
            timeout,
            allow: allow?,
            cache,
        })
    }

    /// `stats.allow`: every entry a CIDR block or an IP; absent means
    /// everyone, an empty list is a mistake (it would let nobody in).
    fn allow(&mut self, allow: Option<Vec<String>>) -> Option<Vec<Cidr>> {
        let Some(list) = allow else {
            return Some(Vec::new());
        };
        if list.is_empty() {
            self.err(
                "stats.allow",
                "an empty list lets nobody in; list CIDRs (e.g. \"127.0.0.0/8\") or leave the key out to allow everyone",
            );
            return None;
        }
        let blocks: Vec<Option<Cidr>> = list
            .iter()
            .enumerate()
            .map(|(i, s)| self.check(&format!("stats.allow[{i}]"), Cidr::parse(s)))
            .collect();
        blocks.into_iter().collect()
    }

    /// Every `[[service]]`, then what they must not share with each other
    /// and with `[stats]`. A service with a problem is left out.
    fn services(&mut self, raw: Vec<RawService>, stats: Option<&StatsConfig>) -> Vec<ServiceConfig> {
        if raw.is_empty() {
            self.err("service", "no [[service]] is defined");
        }
        let mut services: Vec<ServiceConfig> = Vec::new();
        for (i, s) in raw.into_iter().enumerate() {
            if let Some(svc) = self.service(i, s) {
                self.clashes(i, &svc, &services, stats);
                services.push(svc);
            }
        }
        services
    }

    /// A service's name or listen address already taken by an earlier
    /// service, or its listen address by the stats listener.
    fn clashes(&mut self, i: usize, svc: &ServiceConfig, earlier: &[ServiceConfig], stats: Option<&StatsConfig>) {
        if earlier.iter().any(|o| o.name == svc.name) {
            self.err(
                &format!("service[{i}].name"),
                format!("duplicate service name {:?}", svc.name),
            );
        }
        if let Some(o) = earlier.iter().find(|o| listens_overlap(o.listen, svc.listen)) {
            self.err(
                &format!("service[{i}].listen"),
                format!("{} is already used by service {:?} ({})", svc.listen, o.name, o.listen),
            );
        }
        if let Some(st) = stats.filter(|st| listens_overlap(st.listen, svc.listen)) {
            self.err(
                &format!("service[{i}].listen"),
                format!("{} is already used by [stats] ({})", svc.listen, st.listen),
            );
        }
    }
}

impl Config {
    /// `global.state_file` must not be a file easyproxy reads or writes as
    /// something else (the configuration at `config_path`, a secret, the
    /// log, the pid file, the admin socket), nor, where it exists, anything
    /// but a regular file. The same file is found by device and inode where
    /// both exist, else by path (absolute, `.` and `..` resolved, the
    /// directory's symbolic links followed). It stats files: callers off
    /// the loop, with a deadline (a hung mount).
    pub fn check_state_file(&self, config_path: &Path) -> Result<(), String> {
        let Some(state) = self.global.state_file.as_deref() else {
            return Ok(());
        };
        let key = "global.state_file";
        if state.file_name().is_none() {
            return Err(format!("{key}: {} names no file", state.display()));
        }
        if let Ok(meta) = std::fs::metadata(state) {
            if !meta.file_type().is_file() {
                let what = kind_of(&meta.file_type());
                return Err(format!("{key}: {} is {what}, not a regular file", state.display()));
            }
        }
        let mut others: Vec<(String, &Path)> = vec![("the configuration file".into(), config_path)];
        let g = &self.global;
        others.extend(g.log_file.as_deref().map(|p| ("global.log_file".into(), p)));
        others.extend(g.pid_file.as_deref().map(|p| ("global.pid_file".into(), p)));
        if let Some(a) = &self.admin {
            others.extend(a.token_file.as_deref().map(|p| ("admin.token_file".into(), p)));
            others.extend(a.socket.as_deref().map(|p| ("admin.socket".into(), p)));
        }
        for (i, s) in self.services.iter().enumerate() {
            let file = s.health_check.as_ref().and_then(|h| h.mysql_password_file.as_deref());
            others.extend(file.map(|p| (format!("service[{i}].health_check.mysql_password_file"), p)));
        }
        match others.into_iter().find(|(_, other)| same_file(state, other)) {
            Some((what, _)) => Err(format!(
                "{key}: {} is {what}; the state file must be a file of its own (easyproxy replaces it)",
                state.display()
            )),
            None => Ok(()),
        }
    }
}

/// Whether `a` and `b` name the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
        return x.dev() == y.dev() && x.ino() == y.ino();
    }
    normalized(a) == normalized(b)
}

/// `path` absolute, `.` and `..` resolved, its directory canonical where
/// it exists.
fn normalized(path: &Path) -> PathBuf {
    let absolute = match std::env::current_dir() {
        Ok(cwd) if path.is_relative() => cwd.join(path),
        _ => path.to_path_buf(),
    };
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            c => clean.push(c),
        }
    }
    let canonical = clean
        .parent()
        .and_then(|d| std::fs::canonicalize(d).ok())
        .zip(clean.file_name());
    match canonical {
        Some((dir, name)) => dir.join(name),
        None => clean,
    }
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}
