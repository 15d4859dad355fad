//! Command line, logging set-up, then `Proxy::new(config)?.run()`; or
//! `easyproxy ctl ...`, the admin API's client.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use easyproxy::ctl::{self, CtlArgs};
use easyproxy::{Config, Proxy};
use simplelog::{ConfigBuilder, WriteLogger};

/// A single-binary TCP load balancer: one event loop, health checks, stats,
/// reload on SIGHUP, graceful stop on SIGTERM.
#[derive(Parser)]
#[command(name = "easyproxy", version, about)]
struct Args {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "easyproxy.toml")]
    config: PathBuf,
    /// Validate the configuration, print a summary and exit (0 valid, 1 not).
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Talk to a running easyproxy's admin API (exit 0 done, 1 refused, 2 cannot reach it)
    Ctl(CtlArgs),
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            // For `ctl`, 2 means "cannot reach the proxy": a usage error is 1.
            let ctl_usage = e.use_stderr() && std::env::args().skip(1).any(|a| a == "ctl");
            return ExitCode::from(if ctl_usage { ctl::REFUSED } else { e.exit_code() as u8 });
        }
    };
    if let Some(Command::Ctl(ctl_args)) = args.command {
        let config = std::env::args_os()
            .any(|a| a == "-c" || a == "--config" || a.to_string_lossy().starts_with("--config="))
            .then_some(args.config.as_path());
        return ctl::run(ctl_args, config);
    }
    let (config, toml) = match Config::load_with_toml(&args.config) {
        Ok(c) => c,
        Err(e) if args.check => {
            // --check lists every problem, one per line.
            eprintln!("easyproxy: invalid configuration:\n{e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            // Starting: one line, every problem in it.
            eprintln!(
                "easyproxy: invalid configuration: {}",
                e.to_string().replace('\n', "; ")
            );
            return ExitCode::from(1);
        }
    };
    let config = match check_files(config, &args.config) {
        Ok(c) => c,
        Err(e) => {
            let sep = if args.check { "\n" } else { " " };
            eprintln!("easyproxy: invalid configuration:{sep}{}: {e}", args.config.display());
            return ExitCode::from(1);
        }
    };
    if args.check {
        return check(&args.config, &config, toml.as_deref());
    }
    match run(config, args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("easyproxy: {e}");
            ExitCode::from(1)
        }
    }
}

/// How long checking `state_file` against the other files may take (a
/// `stat` on a hung mount does not return).
const FILE_CHECK_WAIT: Duration = Duration::from_secs(5);

/// [`Config::check_state_file`] on a thread, waited for at most
/// [`FILE_CHECK_WAIT`]; the configuration comes back when it passes.
fn check_files(config: Config, path: &Path) -> Result<Config, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let theirs = path.to_path_buf();
    std::thread::Builder::new()
        .name("easyproxy-check".into())
        .spawn(move || {
            let checked = config.check_state_file(&theirs);
            let _ = tx.send((config, checked));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    match rx.recv_timeout(FILE_CHECK_WAIT) {
        Ok((config, Ok(()))) => Ok(config),
        Ok((_, Err(e))) => Err(e),
        Err(_) => Err(format!(
            "global.state_file: checking it took longer than {} s (a hung mount?)",
            FILE_CHECK_WAIT.as_secs()
        )),
    }
}

/// `--check` on a valid file: the summary on stdout, then for EasyProxy's
/// JSON file the equivalent TOML. A closed stdout (`easyproxy --check |
/// head -1`) ends the output quietly, not in a panic.
fn check(path: &Path, config: &Config, toml: Option<&str>) -> ExitCode {
    for w in &config.warnings {
        eprintln!("easyproxy: warning: {w}");
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}: configuration is valid\n{config}", path.display());
    if let Some(toml) = toml {
        let _ = write!(out, "\n{toml}");
    }
    let _ = out.flush();
    ExitCode::SUCCESS
}

/// Starts the proxy on `config` and runs it until it stops; the error is
/// what to say on stderr.
fn run(config: Config, path: PathBuf) -> Result<(), String> {
    init_logging(&config)?;
    for w in &config.warnings {
        log::warn!("configuration: {w}");
    }
    easyproxy::control::limits::raise_fd_limit(config.global.max_connections);
    let pid_file = config.global.pid_file.clone();
    let started = Proxy::new(config, Some(path)).and_then(|proxy| {
        if let Some(path) = &pid_file {
            easyproxy::control::limits::write_pid_file(path)
                .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        }
        Ok(proxy)
    });
    let mut proxy = started.inspect_err(|_| {
        easyproxy::logsink::finish();
    })?;
    log::info!(
        "easyproxy {} started (pid {})",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let result = proxy.run();
    if let Err(e) = &result {
        log::error!("event loop failed: {e}");
    }
    easyproxy::logsink::finish();
    // A reload may have moved the pid file (or failed to, keeping the first).
    for path in [&pid_file, &proxy.config.global.pid_file].into_iter().flatten() {
        remove_pid_file(path);
    }
    result.map_err(|e| format!("event loop failed: {e}"))
}

fn remove_pid_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}

fn init_logging(config: &Config) -> Result<(), String> {
    let cfg = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(log::LevelFilter::Off)
        .set_thread_level(log::LevelFilter::Off)
        .build();
    // The level is set on the log facade too so a reload can change it.
    // The loop's lines are handed to the log writer thread once per turn
    // (the loop calls `log::logger().flush()`); the writer does the writes.
    let path = config.global.log_file.as_deref();
    let sink = easyproxy::logsink::Sink::new(path).map_err(|e| {
        format!(
            "cannot open log file {}: {e}",
            path.map_or("-".into(), |p| p.display().to_string())
        )
    })?;
    WriteLogger::init(log::LevelFilter::Trace, cfg, sink).map_err(|e| e.to_string())?;
    log::set_max_level(config.global.log_level);
    Ok(())
}
