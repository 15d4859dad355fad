//! Configuration, step 1: the serde front-end — the file deserialised as written, TOML errors given a position.

use std::path::PathBuf;

use serde::Deserialize;

/// Raw `[global]` table, exactly as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub(super) max_connections: Option<u64>,
    pub(super) buffer_size: Option<u64>,
    pub(super) shutdown_timeout_ms: Option<u64>,
    pub(super) log_level: Option<String>,
    pub(super) log_file: Option<PathBuf>,
    pub(super) pid_file: Option<PathBuf>,
    pub(super) splice: Option<bool>,
    pub(super) state_file: Option<PathBuf>,
}

/// Raw `[stats]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStats {
    pub(super) listen: String,
    pub(super) timeout_ms: Option<u64>,
    pub(super) allow: Option<Vec<String>>,
    pub(super) cache_ms: Option<u64>,
}

/// Raw `[admin]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) listen: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) socket: Option<PathBuf>,
}

/// Raw `[service.health_check]` table (its password's `Debug` is `***`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    pub(super) interval_ms: Option<u64>,
    pub(super) timeout_ms: Option<u64>,
    pub(super) rise: Option<u64>,
    pub(super) fall: Option<u64>,
    pub(super) send: Option<String>,
    pub(super) expect: Option<String>,
    pub(super) mysql_user: Option<String>,
    pub(super) mysql_password: Option<super::Secret>,
    pub(super) mysql_password_file: Option<PathBuf>,
    pub(super) role: Option<String>,
    pub(super) max_replication_lag_ms: Option<u64>,
    pub(super) mysql_query: Option<String>,
    pub(super) mysql_server_public_key_file: Option<PathBuf>,
    pub(super) mysql_get_server_public_key: Option<bool>,
}

/// Raw `[[service.backend]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) address: String,
    pub(super) weight: Option<i64>,
    pub(super) backup: Option<bool>,
    pub(super) max_connections: Option<u64>,
}

/// Raw `[[service]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) name: String,
    pub(super) listen: String,
    pub(super) strategy: Option<String>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) idle_timeout_ms: Option<u64>,
    pub(super) retries: Option<u64>,
    pub(super) max_connections: Option<u64>,
    pub(super) max_connections_per_ip: Option<u64>,
    pub(super) close_on_down: Option<bool>,
    pub(super) backlog: Option<u64>,
    pub(super) send_proxy: Option<String>,
    pub(super) health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub(super) backend: Vec<RawBackend>,
}

/// The whole file, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) global: RawGlobal,
    pub(super) stats: Option<RawStats>,
    pub(super) admin: Option<RawAdmin>,
    #[serde(default)]
    pub(super) service: Vec<RawService>,
}

/// Deserialises configuration text; the error is one positioned message.
pub(super) fn parse(text: &str) -> Result<RawConfig, String> {
    toml::from_str(text).map_err(|e| toml_error(text, &e))
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
            let table = enclosing_table(text, line);
            let key = key_at(text, line, col)
                .filter(|k| !msg.contains(&format!("`{k}`")))
                .map(|k| format!("{k}: "))
                .unwrap_or_default();
            format!("line {line}, column {col}{table}: {key}{msg}")
        }
        None => msg,
    }
}

/// Names the table the error is in (` (in [stats])`): TOML's message often does not.
fn enclosing_table(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .filter(|l| l.trim_start().starts_with('['))
        .last()
        .map(|l| format!(" (in {})", l.trim()))
        .unwrap_or_default()
}

/// A bad value on a `key = value` line: the key, when the column is past the `=`.
fn key_at(text: &str, line: usize, col: usize) -> Option<&str> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let (k, _) = l.split_once('=')?;
    (col > k.chars().count() + 1 && !k.trim().is_empty() && !k.contains('[')).then(|| k.trim())
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = text.get(..offset.min(text.len())).unwrap_or("");
    let line = upto.matches('\n').count() + 1;
    let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
