//! `easyproxy ctl`: the admin API's command-line client. Finds the API
//! (`--admin`, else `[admin]` of the configuration file, the unix socket
//! first), sends one request, prints the answer (a table, a line, or the
//! JSON with `--json`) and exits 0 when done, 1 when refused, 2 when there
//! is no complete answer (cannot connect, `--timeout` passed, incomplete).
//!
//! `client` sends the request within one deadline, `table` renders the
//! status table, `clean` makes what the server sent safe to print.

mod clean;
mod client;
mod table;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{read_token, AdminToken};
pub use client::Endpoint;

/// Exit status: done.
pub const DONE: u8 = 0;
/// Exit status: the proxy (or this command) refused; the error is printed.
pub const REFUSED: u8 = 1;
/// Exit status: no complete answer (cannot connect, `--timeout` passed,
/// an incomplete or malformed answer).
pub const UNREACHABLE: u8 = 2;

/// Most bytes of a body that is not JSON shown in an error.
const MAX_SHOWN: usize = 4096;
/// Longest `--timeout`.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

/// `easyproxy ctl` options.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The admin API: HOST:PORT, or the path of its unix socket [default: [admin] of --config, its socket first]
    #[arg(long, value_name = "ADDR|PATH", global = true)]
    pub admin: Option<String>,
    /// The file holding the bearer token (TCP only) [default: [admin] token_file of --config]
    #[arg(long, value_name = "FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// The configuration file to read [admin] from [default: ./easyproxy.toml, else /etc/easyproxy/easyproxy.toml]
    #[arg(short = 'c', long, value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Print the proxy's JSON answer (control characters escaped)
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this long, connecting, sending and reading together (fractions allowed)
    #[arg(long, value_name = "SECONDS", global = true, default_value = "10", value_parser = parse_timeout, allow_negative_numbers = true)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// What to ask the running proxy.
#[derive(clap::Subcommand, Debug)]
pub enum CtlCommand {
    /// Every backend: state, admin state, weight, active connections, role
    Status,
    /// No new clients for a backend; its open connections go on
    Drain { service: String, backend: String },
    /// No new clients and no health checks for a backend
    Maint { service: String, backend: String },
    /// Back to what health checks say
    Ready { service: String, backend: String },
    /// Runtime weight 1..=256, or `reset` for the file's
    Weight {
        service: String,
        backend: String,
        #[arg(value_name = "N|reset")]
        weight: String,
    },
    /// Close a backend's open connections
    Close { service: String, backend: String },
    /// Reload the configuration file (as SIGHUP) and say how it went
    Reload,
}

/// The configuration ctl reads `[admin]` from without `--config`:
/// `./easyproxy.toml` when there is one, else the packaged
/// `/etc/easyproxy/easyproxy.toml`.
fn default_config() -> &'static Path {
    let here = Path::new("easyproxy.toml");
    let system = Path::new("/etc/easyproxy/easyproxy.toml");
    if here.exists() || !system.exists() {
        here
    } else {
        system
    }
}

/// Runs `easyproxy ctl` (`config`: the top-level `--config`, used when
/// the command has none).
pub fn run(args: CtlArgs, config: Option<&Path>) -> ExitCode {
    let (method, path, body) = match request_of(&args.command) {
        Ok(r) => r,
        Err(e) => return fail(REFUSED, &e),
    };
    let config: &Path = match args.config.as_deref().or(config) {
        Some(p) => p,
        None => default_config(),
    };
    let (to, token) = match endpoint(&args, config) {
        Ok(t) => t,
        Err(e) => return fail(REFUSED, &e),
    };
    let body = body.map(|b| b.to_string());
    let deadline = client::Deadline::after(args.timeout);
    let answer = match client::request(&to, method, path, token.as_ref(), body.as_deref(), &deadline) {
        Ok(a) => a,
        Err(e @ client::Failure::Connect(_)) => return fail(UNREACHABLE, &format!("cannot reach the proxy: {e}")),
        Err(e) => return fail(UNREACHABLE, &format!("no complete answer from {to}: {e}")),
    };
    // Not trusted: JSON only when it parses, and printed only cleaned.
    let text = std::str::from_utf8(&answer.body).ok();
    let value: Option<Value> = text.and_then(|t| serde_json::from_str(t).ok());
    if args.json {
        if let (Some(text), Some(_)) = (text, &value) {
            out(&clean::json(text));
        }
    }
    if !(200..300).contains(&answer.status) {
        let msg = match &value {
            Some(v) => v.get("error").and_then(Value::as_str).map(clean::message),
            None => Some(clean::snippet(&answer.body, MAX_SHOWN)).filter(|s| !s.is_empty()),
        };
        let msg = msg.unwrap_or_else(|| "no reason given".into());
        let hint = if answer.status == 401 {
            " (check --token-file)"
        } else {
            ""
        };
        return fail(REFUSED, &format!("refused ({}): {msg}{hint}", answer.status));
    }
    let Some(value) = value else {
        return fail(UNREACHABLE, &format!("{to} did not answer with JSON"));
    };
    if value.get("ok") == Some(&Value::Bool(false)) {
        let msg = value
            .get("error")
            .and_then(Value::as_str)
            .map_or("no reason given".into(), clean::message);
        return fail(REFUSED, &format!("reload failed: {msg}"));
    }
    if !args.json {
        match done(&args.command, &value) {
            Some(text) => out(&text),
            None => return fail(UNREACHABLE, &format!("{to} did not answer like easyproxy")),
        }
    }
    ExitCode::from(DONE)
}

/// Prints `text` on stdout, through the filter whatever it is (the one
/// way out for what the server sent); a closed stdout ends quietly.
fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(clean::text(text).as_bytes());
    let _ = stdout.flush();
}

/// Says `msg` on stderr, on one line, filtered, and exits with `code`.
fn fail(code: u8, msg: &str) -> ExitCode {
    let _ = writeln!(std::io::stderr().lock(), "easyproxy ctl: {}", clean::line(msg));
    ExitCode::from(code)
}

/// `--timeout`: seconds, more than 0 and at most a day, fractions allowed.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a number of seconds".to_string())?;
    if !(secs > 0.0 && secs <= MAX_TIMEOUT_SECS) {
        return Err(format!(
            "{s:?}: expected more than 0 and at most {MAX_TIMEOUT_SECS} seconds"
        ));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())
}

/// Method, path and body of a command.
fn request_of(cmd: &CtlCommand) -> Result<(&'static str, &'static str, Option<Value>), String> {
    let state = |s: &str, b: &str, st: &str| json!({ "service": s, "backend": b, "state": st });
    Ok(match cmd {
        CtlCommand::Status => ("GET", "/v1/status", None),
        CtlCommand::Drain { service, backend } => ("POST", "/v1/backend/state", Some(state(service, backend, "drain"))),
        CtlCommand::Maint { service, backend } => ("POST", "/v1/backend/state", Some(state(service, backend, "maint"))),
        CtlCommand::Ready { service, backend } => ("POST", "/v1/backend/state", Some(state(service, backend, "ready"))),
        CtlCommand::Weight {
            service,
            backend,
            weight,
        } => {
            let w = match weight.as_str() {
                "reset" => Value::Null,
                n => match n.parse::<u32>() {
                    Ok(n) if (1..=256).contains(&n) => json!(n),
                    _ => return Err(format!("weight {n:?}: expected 1..=256 or reset")),
                },
            };
            let body = json!({ "service": service, "backend": backend, "weight": w });
            ("POST", "/v1/backend/weight", Some(body))
        }
        CtlCommand::Close { service, backend } => (
            "POST",
            "/v1/backend/close",
            Some(json!({ "service": service, "backend": backend })),
        ),
        CtlCommand::Reload => ("POST", "/v1/reload", None),
    })
}

/// What to print for a command that was done; `None` when the answer is
/// not what easyproxy sends.
fn done(cmd: &CtlCommand, v: &Value) -> Option<String> {
    let target = || -> Option<String> {
        Some(format!(
            "{}/{}",
            clean::line(v.get("service")?.as_str()?),
            clean::line(v.get("backend")?.as_str()?)
        ))
    };
    Some(match cmd {
        CtlCommand::Status => table::render(v)?,
        CtlCommand::Drain { .. } | CtlCommand::Maint { .. } | CtlCommand::Ready { .. } => format!(
            "{}: {} (was {}), {} active connections\n",
            target()?,
            clean::line(v.get("admin_state")?.as_str()?),
            clean::line(v.get("was")?.as_str()?),
            v.get("active")?.as_u64()?
        ),
        CtlCommand::Weight { .. } => {
            let (w, f) = (v.get("weight")?.as_u64()?, v.get("weight_config")?.as_u64()?);
            format!("{}: weight {w} (file {f})\n", target()?)
        }
        CtlCommand::Close { service, backend } => {
            format!(
                "{service}/{backend}: closed {} connections\n",
                v.get("closed")?.as_u64()?
            )
        }
        CtlCommand::Reload => format!("reload done: {}\n", clean::message(v.get("summary")?.as_str()?)),
    })
}

/// Where to send the request and the token to send: `--admin`, else
/// `[admin]` of the configuration file (its socket first).
fn endpoint(args: &CtlArgs, config: &Path) -> Result<(Endpoint, Option<AdminToken>), String> {
    let admin = args.admin.as_deref().map(parse_admin).transpose()?;
    // The file is read for [admin] only when something is missing.
    let needs_file = admin.is_none() || (matches!(admin, Some(Endpoint::Tcp(_))) && args.token_file.is_none());
    let section = if needs_file {
        admin_section(config, admin.is_none())?
    } else {
        None
    };
    let to = match admin {
        Some(a) => a,
        None => from_section(section.as_ref(), config)?,
    };
    let token = match (&to, &args.token_file) {
        (Endpoint::Unix(_), _) => None,
        (Endpoint::Tcp(_), Some(f)) => Some(read_token(f)?),
        (Endpoint::Tcp(_), None) => match section.as_ref().and_then(|s| s.get("token_file")?.as_str()) {
            Some(f) => Some(read_token(Path::new(f))?),
            None => return Err("the TCP admin API needs its token: --token-file FILE".into()),
        },
    };
    Ok((to, token))
}

/// `--admin`: a socket path (has a `/`, or names a file), else `HOST:PORT`.
fn parse_admin(a: &str) -> Result<Endpoint, String> {
    if a.contains('/') || Path::new(a).exists() {
        Ok(Endpoint::Unix(PathBuf::from(a)))
    } else if a
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        Ok(Endpoint::Tcp(a.to_string()))
    } else {
        Err(format!(
            "--admin {a:?}: expected HOST:PORT or the path of a unix socket"
        ))
    }
}

/// The `[admin]` table of the configuration file (read as plain TOML: the
/// rest of the file need not be valid here). `required`: a missing file
/// or table is an error.
fn admin_section(config: &Path, required: bool) -> Result<Option<toml::Table>, String> {
    // A regular file only (a FIFO is an error, never a hang), bounded.
    let read = crate::io::file::read_bounded(config, crate::config::MAX_FILE_SIZE).and_then(|b| {
        String::from_utf8(b).map_err(|_| {
            crate::io::file::ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
        })
    });
    let text = match read {
        Ok(t) => t,
        Err(_) if !required => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read {} for [admin]: {e} (or give --admin)",
                config.display()
            ))
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", config.display()).replace('\n', " "))?;
    match table.get("admin").and_then(toml::Value::as_table) {
        Some(a) => Ok(Some(a.clone())),
        None if required => Err(format!("{} has no [admin] section (or give --admin)", config.display())),
        None => Ok(None),
    }
}

/// The endpoint `[admin]` names: the socket when it has one, else its
/// listen address (a wildcard address is reached on loopback).
fn from_section(section: Option<&toml::Table>, config: &Path) -> Result<Endpoint, String> {
    let s = section.ok_or_else(|| format!("{} has no [admin] section", config.display()))?;
    if let Some(p) = s.get("socket").and_then(toml::Value::as_str) {
        return Ok(Endpoint::Unix(PathBuf::from(p)));
    }
    let listen = s
        .get("listen")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("[admin] of {} has neither socket nor listen", config.display()))?;
    Ok(Endpoint::Tcp(match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip = if a.is_ipv4() { "127.0.0.1" } else { "[::1]" };
            format!("{ip}:{}", a.port())
        }
        _ => listen.to_string(),
    }))
}
