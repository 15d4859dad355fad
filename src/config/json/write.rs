//! Configuration, step 1 for EasyProxy's JSON file: its keys written as the equivalent easyproxy.toml, which the TOML front-end then reads, so the text `--check` prints is exactly what runs.

use std::fmt::Write as _;
use std::net::{Ipv6Addr, SocketAddr};

use super::read::EasyFile;
use crate::config::service::MAX_NAME;
use crate::config::Strategy;

/// Health-check timeout: a connect to a live backend takes far less than
/// a second; never more than the interval.
const HEALTH_TIMEOUT_MS: u64 = 1000;

/// EasyProxy's file as native configuration.
pub(super) struct Converted {
    /// The service name, made valid.
    pub(super) name: String,
    /// The equivalent easyproxy.toml, starting with a comment line.
    pub(super) toml: String,
    /// What was changed or cannot be honoured, `key: why`.
    pub(super) warnings: Vec<String>,
}

/// Characters of a given service name quoted in a warning at most.
const MAX_SHOWN: usize = 80;

/// Converts the typed keys; nothing here can fail.
pub(super) fn convert(f: &EasyFile) -> Converted {
    let mut warnings = Vec::new();
    let given = f.service.as_deref().unwrap_or("");
    let name = service_name(given);
    if f.service.is_some() && name != given {
        // The given name is quoted cut short: an 800 KB name must not make
        // an 800 KB warning line.
        let shown: String = given.chars().take(MAX_SHOWN).collect();
        let more = if given.chars().count() > MAX_SHOWN {
            format!(" ({} bytes in all)", given.len())
        } else {
            String::new()
        };
        warnings.push(format!(
            "service: {shown:?}{more} is named {name:?} (service names hold up to {MAX_NAME} letters, digits, '.', '_' and '-')"
        ));
    }
    let workers = f.maxprocessor.filter(|&n| n != 1);
    if let Some(n) = workers {
        warnings.push(format!(
            "maxprocessor: {n} accepted, but one event loop serves every connection (workers are planned)"
        ));
    }
    Converted {
        toml: toml_text(f, &name, workers),
        name,
        warnings,
    }
}

/// A valid service name: whitespace becomes `-`, other characters outside
/// `[A-Za-z0-9._-]` are dropped, at most [`MAX_NAME`] kept; `service` when
/// nothing is left.
pub(super) fn service_name(given: &str) -> String {
    let name: String = given
        .chars()
        .filter_map(|c| match c {
            c if c.is_whitespace() => Some('-'),
            c if c.is_ascii_alphanumeric() || "._-".contains(c) => Some(c),
            _ => None,
        })
        .take(MAX_NAME)
        .collect();
    if name.is_empty() {
        "service".to_string()
    } else {
        name
    }
}

/// The TOML text, one table per EasyProxy key group, canonical strategy
/// names, and comments for what has no TOML key.
fn toml_text(f: &EasyFile, name: &str, workers: Option<u64>) -> String {
    let mut t = String::from("# equivalent easyproxy.toml\n");
    // Writing to a String cannot fail.
    if let Some(n) = workers {
        let _ = writeln!(
            t,
            "# maxprocessor = {n}: one event loop serves (global.workers is planned)"
        );
    }
    if let Some(webport) = f.webport {
        let listen = SocketAddr::new(f.host, webport).to_string();
        let _ = write!(t, "\n[stats]\nlisten = {}\n", quote(&listen));
    }
    let listen = SocketAddr::new(f.host, f.port).to_string();
    let _ = write!(
        t,
        "\n[[service]]\nname = {}\nlisten = {}\n",
        quote(name),
        quote(&listen)
    );
    if let Some(s) = &f.strategy {
        let canonical = Strategy::parse(s).map_or_else(|| s.clone(), |st| st.to_string());
        let _ = writeln!(t, "strategy = {}", quote(&canonical));
    }
    match f.heartbeat {
        Some(0) => t.push_str("# heartbeat = 0: no health checks\n"),
        Some(secs) => {
            let interval = secs.saturating_mul(1000);
            let _ = write!(
                t,
                "\n[service.health_check]\ninterval_ms = {interval}\ntimeout_ms = {}\n",
                interval.min(HEALTH_TIMEOUT_MS)
            );
        }
        None => {}
    }
    for b in &f.backends {
        let address = if b.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", b.host, b.port)
        } else {
            format!("{}:{}", b.host, b.port)
        };
        let _ = write!(t, "\n[[service.backend]]\naddress = {}\n", quote(&address));
    }
    t
}

/// A TOML string literal, escaped by the `toml` crate.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}
