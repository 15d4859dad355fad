//! Configuration, step 3: the `--check` summary — a validated [`Config`] printed on one screen.

use std::fmt;

use super::{AdminConfig, BackendConfig, Config, HealthCheck, MysqlServerKey, ServiceConfig, StatsConfig};

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
        if let Some(p) = &g.state_file {
            writeln!(f, "state_file: {}", p.display())?;
        }
        match &self.stats {
            Some(s) => stats_line(f, s)?,
            None => writeln!(f, "stats: off")?,
        }
        if let Some(a) = &self.admin {
            admin_line(f, a)?;
        }
        for s in &self.services {
            service_line(f, s)?;
            if let Some(hc) = &s.health_check {
                health_line(f, hc)?;
            }
            for b in &s.backends {
                backend_line(f, b)?;
            }
        }
        Ok(())
    }
}

/// `stats: listen ADDR allow CIDR,CIDR|any cache_ms N timeout_ms N`.
fn stats_line(f: &mut fmt::Formatter<'_>, s: &StatsConfig) -> fmt::Result {
    let allow = if s.allow.is_empty() {
        "any".to_string()
    } else {
        s.allow.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
    };
    writeln!(
        f,
        "stats: listen {} allow {allow} cache_ms {} timeout_ms {}",
        s.listen,
        s.cache.as_millis(),
        s.timeout.as_millis()
    )
}

/// `admin: listen ADDR (token from FILE) socket PATH`; never the token.
fn admin_line(f: &mut fmt::Formatter<'_>, a: &AdminConfig) -> fmt::Result {
    write!(f, "admin:")?;
    if let Some(l) = a.listen {
        write!(f, " listen {l}")?;
    }
    if let Some(t) = &a.token_file {
        write!(f, " (token from {})", t.display())?;
    }
    if let Some(s) = &a.socket {
        write!(f, " socket {}", s.display())?;
    }
    writeln!(f)
}

/// `service "name": listen ... health_check on|off`.
fn service_line(f: &mut fmt::Formatter<'_>, s: &ServiceConfig) -> fmt::Result {
    write!(
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
    for (key, n) in [
        ("max_connections", s.max_connections),
        ("max_connections_per_ip", s.max_connections_per_ip),
    ] {
        if n > 0 {
            write!(f, " {key} {n}")?;
        }
    }
    if s.close_on_down {
        write!(f, " close_on_down")?;
    }
    writeln!(f)
}

/// `  health_check interval_ms N timeout_ms N rise N fall N [mysql ...]`:
/// the password only as `password: set` (or `none`); a pinned server key
/// as its file and size, never the key.
fn health_line(f: &mut fmt::Formatter<'_>, hc: &HealthCheck) -> fmt::Result {
    write!(
        f,
        "  health_check interval_ms {} timeout_ms {} rise {} fall {}",
        hc.interval.as_millis(),
        hc.timeout.as_millis(),
        hc.rise,
        hc.fall
    )?;
    if !hc.send.is_empty() || !hc.expect.is_empty() {
        write!(f, " send {} bytes expect {} bytes", hc.send.len(), hc.expect.len())?;
    }
    let Some(user) = &hc.mysql_user else {
        return writeln!(f);
    };
    let password = if hc.mysql_password.is_empty() { "none" } else { "set" };
    write!(f, " mysql_user {user:?} password: {password}")?;
    if let Some(file) = &hc.mysql_password_file {
        write!(f, " (from {})", file.display())?;
    }
    match hc.role {
        Some(role) => write!(f, " role {role}")?,
        None => write!(f, " role any")?,
    }
    if let Some(lag) = hc.max_replication_lag {
        write!(f, " max_replication_lag_ms {}", lag.as_millis())?;
    }
    if let Some(q) = &hc.mysql_query {
        write!(f, " mysql_query {q:?}")?;
    }
    match &hc.mysql_server_key {
        MysqlServerKey::Refuse => {}
        MysqlServerKey::Pinned(p) => write!(
            f,
            " server_public_key: pinned ({}, {} bits)",
            p.path.display(),
            p.key.bits()
        )?,
        MysqlServerKey::FromServer => write!(f, " server_public_key: the server's (not pinned)")?,
    }
    writeln!(f)
}

/// `  backend ADDRESS (RESOLVED) weight W [backup] [max_connections N]`.
fn backend_line(f: &mut fmt::Formatter<'_>, b: &BackendConfig) -> fmt::Result {
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
    writeln!(f)
}
