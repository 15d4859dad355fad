//! `global.state_file` against the real binary: a change answered 200 is
//! on disk (SIGKILL right after loses none), a change that cannot be
//! written is answered 503 and not made, a file that is not a state file
//! is never written over, and FIFOs never hang the start or the writer.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::admin::*;
use common::*;
use serde_json::Value;

/// `POST /v1/backend/state` over TCP: (status, body).
fn try_state(p: &Running, backend: SocketAddr, state: &str) -> (u16, Value) {
    let body = format!(r#"{{"service":"svc","backend":"{backend}","state":"{state}"}}"#);
    let (code, _, v) = api_tcp(admin_addr(p), "POST", "/v1/backend/state", Some(TOKEN), &body);
    (code, v)
}

/// `POST /v1/backend/weight` over TCP: (status, body).
fn try_weight(p: &Running, backend: SocketAddr, weight: &str) -> (u16, Value) {
    let body = format!(r#"{{"service":"svc","backend":"{backend}","weight":{weight}}}"#);
    let (code, _, v) = api_tcp(admin_addr(p), "POST", "/v1/backend/weight", Some(TOKEN), &body);
    (code, v)
}

/// Backend `addr` of service `svc` in `/stats`.
fn stats_backend(p: &Running, addr: SocketAddr) -> Value {
    backend(&stats_json(p.stats_addr()), addr)
}

/// Distinct backend addresses nothing needs to listen on (no checks).
fn addrs(n: u16) -> Vec<SocketAddr> {
    (1..=n).map(|i| SocketAddr::from(([127, 0, 0, 1], i))).collect()
}

/// [`AdminFiles::config`] with `state_file` pointing at `state`.
fn config_with_state(files: &AdminFiles, state: &Path, backends: &[SocketAddr]) -> String {
    let list: Vec<(SocketAddr, &str)> = backends.iter().map(|&a| (a, "")).collect();
    let text = files.config("", &list);
    let default = format!("state_file = {:?}", files.state_file());
    assert!(text.contains(&default));
    text.replace(&default, &format!("state_file = {state:?}"))
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Runs the binary on `config` (a file already written) with `args`; its
/// exit code and stderr, or a panic if it runs past `limit`.
fn run_until_exit(config: &Path, args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = Command::new(bin())
        .args(args)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("easyproxy {args:?} still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// `--check`, then a start, on `text` written to `path`: both must exit 1
/// within seconds saying `needle`.
fn refused_by_check_and_start(path: &Path, text: &str, needle: &str) {
    std::fs::write(path, text).unwrap();
    for args in [&["--check"][..], &[][..]] {
        let (code, err) = run_until_exit(path, args, SOON);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// The entries of a state file: (backend, admin state, weight).
fn settings(text: &str) -> Vec<(String, String, Option<u64>)> {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    v["backends"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["backend"].as_str().unwrap_or("").to_string(),
                        e["admin_state"].as_str().unwrap_or("").to_string(),
                        e["weight"].as_u64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The state file's text; empty when missing.
fn state_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn twenty_drains_answered_200_all_survive_a_sigkill_right_after() {
    let files = AdminFiles::new();
    let backends = addrs(20);
    let list: Vec<(SocketAddr, &str)> = backends.iter().map(|&a| (a, "")).collect();
    let mut p = Running::start(&files.config("", &list));
    let admin = admin_addr(&p);
    for &b in &backends {
        let body = format!(r#"{{"service":"svc","backend":"{b}","state":"drain"}}"#);
        let (code, _, v) = api_tcp(admin, "POST", "/v1/backend/state", Some(TOKEN), &body);
        assert_eq!(code, 200, "{v}");
    }
    p.signal(libc::SIGKILL);
    p.wait_exit(SOON);
    let text = state_text(&files.state_file());
    let kept = settings(&text)
        .iter()
        .filter(|(b, state, _)| state == "drain" && backends.iter().any(|a| a.to_string() == *b))
        .count();
    eprintln!("kept {kept} of {} changes answered 200 after SIGKILL", backends.len());
    assert_eq!(kept, backends.len(), "{text}");
}

#[test]
fn concurrent_changes_are_written_in_order_each_with_the_ones_before() {
    let files = AdminFiles::new();
    let backends = addrs(12);
    let list: Vec<(SocketAddr, &str)> = backends.iter().map(|&a| (a, "")).collect();
    let mut p = Running::start(&files.config("", &list));
    let admin = admin_addr(&p);
    let state = files.state_file();
    let threads: Vec<_> = backends
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            let state = state.clone();
            thread::spawn(move || {
                let (path, body) = if i % 2 == 0 {
                    (
                        "/v1/backend/state",
                        format!(r#"{{"service":"svc","backend":"{b}","state":"maint"}}"#),
                    )
                } else {
                    (
                        "/v1/backend/weight",
                        format!(r#"{{"service":"svc","backend":"{b}","weight":7}}"#),
                    )
                };
                // Each from an address of its own: one address holds at
                // most 4 admin connections at once.
                let code = api_tcp_from(10 + i as u8, admin, "POST", path, Some(TOKEN), &body).0;
                // Answered 200: on disk already.
                let on_disk = settings(&state_text(&state))
                    .into_iter()
                    .any(|(a, s, w)| a == b.to_string() && if i % 2 == 0 { s == "maint" } else { w == Some(7) });
                (code, on_disk)
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), (200, true));
    }
    p.signal(libc::SIGKILL);
    p.wait_exit(SOON);
    let text = state_text(&files.state_file());
    let all = settings(&text);
    assert_eq!(
        all.iter().filter(|(_, s, w)| s == "maint" && w.is_none()).count(),
        6,
        "{text}"
    );
    assert_eq!(
        all.iter().filter(|(_, s, w)| s == "ready" && *w == Some(7)).count(),
        6,
        "{text}"
    );
}

#[test]
fn a_foreign_file_as_state_file_is_never_written_over_and_changes_answer_503() {
    let files = AdminFiles::new();
    let backends = addrs(2);
    // Another instance's configuration, and another instance's token file.
    let other_config = files.dir.path("other.toml");
    let other_token = files.dir.path("other.token");
    std::fs::write(&other_config, config_with_state(&files, &files.state_file(), &backends)).unwrap();
    std::fs::write(&other_token, "another-token-0123456789abcdef\n").unwrap();
    for foreign in [&other_config, &other_token] {
        let before = std::fs::read(foreign).unwrap();
        let p = Running::start(&config_with_state(&files, foreign, &backends));
        let warned = p.wait_log("not an easyproxy state file", SOON);
        assert!(warned.contains("[WARN]"), "{warned}");
        let (code, v) = try_state(&p, backends[0], "drain");
        assert_eq!(code, 503, "{v}");
        let why = v["error"].as_str().unwrap();
        assert!(
            why.contains("not an easyproxy state file") && why.contains("nothing changed"),
            "{v}"
        );
        let (code, v) = try_weight(&p, backends[1], "9");
        assert_eq!(code, 503, "{v}");
        assert_eq!(
            std::fs::read(foreign).unwrap(),
            before,
            "{} written over",
            foreign.display()
        );
        let b = stats_backend(&p, backends[0]);
        assert_eq!(b["admin_state"], "ready", "{b}");
        assert_eq!(stats_backend(&p, backends[1])["weight"], 1);
        // Close and status are not changes of the file: answered.
        let body = format!(r#"{{"service":"svc","backend":"{}"}}"#, backends[0]);
        let (code, _, _) = api_tcp(admin_addr(&p), "POST", "/v1/backend/close", Some(TOKEN), &body);
        assert_eq!(code, 200);
        status(&p);
    }
}

#[test]
fn once_the_foreign_file_is_gone_or_a_reload_names_another_changes_are_written_again() {
    let files = AdminFiles::new();
    let backends = addrs(2);
    let foreign = files.dir.path("notes.txt");
    std::fs::write(&foreign, "my notes\n").unwrap();
    let text = config_with_state(&files, &foreign, &backends);
    let p = Running::start(&text);
    assert_eq!(try_state(&p, backends[0], "drain").0, 503);
    // A reload naming a fresh state file: written there.
    let fresh = files.dir.path("fresh.state");
    p.reload(&config_with_state(&files, &fresh, &backends));
    p.wait_log("reload done", SOON);
    let (code, v) = try_state(&p, backends[0], "drain");
    assert_eq!(code, 200, "{v}");
    assert!(state_text(&fresh).contains("drain"));
    // Back to the foreign file: refused; removed: written.
    p.reload(&text);
    p.wait_log_count("reload done", 2, SOON);
    assert_eq!(try_state(&p, backends[1], "maint").0, 503);
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "my notes\n");
    assert_eq!(stats_backend(&p, backends[1])["admin_state"], "ready");
    std::fs::remove_file(&foreign).unwrap();
    let (code, v) = try_state(&p, backends[1], "maint");
    assert_eq!(code, 200, "{v}");
    let written = state_text(&foreign);
    assert!(written.contains("maint") && written.contains("drain"), "{written}");
}

#[test]
fn a_change_that_cannot_be_written_answers_503_and_changes_nothing() {
    let files = AdminFiles::new();
    let backends = addrs(2);
    // Fails even for root: the parent is a regular file.
    let not_dir = files.dir.path("plain");
    std::fs::write(&not_dir, "x").unwrap();
    let served = Backend::tagged("A");
    let backends = [served.addr, backends[1]];
    let p = Running::start(&config_with_state(&files, &not_dir.join("state"), &backends));
    // Unreadable at start: a warning, and the proxy serves.
    let line = p.wait_log("state file", SOON);
    assert!(line.contains("[WARN]") && line.contains("cannot read it"), "{line}");
    let mut c = connect(p.addr("svc"));
    assert_eq!(read_n(&mut c, 1), b"A");
    let (code, v) = try_state(&p, backends[0], "maint");
    assert_eq!(code, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Not a directory"), "{v}");
    let (code, v) = try_weight(&p, backends[0], "4");
    assert_eq!(code, 503, "{v}");
    let b = stats_backend(&p, backends[0]);
    assert_eq!(
        (b["admin_state"].as_str(), b["weight"].as_u64()),
        (Some("ready"), Some(1)),
        "{b}"
    );
    assert_eq!(std::fs::read_to_string(&not_dir).unwrap(), "x");
    drop(p);

    // A directory removed under a running proxy.
    let sub = files.dir.path("sub");
    std::fs::create_dir(&sub).unwrap();
    let state = sub.join("state");
    let p = Running::start(&config_with_state(&files, &state, &backends));
    assert_eq!(try_state(&p, backends[0], "drain").0, 200);
    std::fs::remove_dir_all(&sub).unwrap();
    let (code, v) = try_state(&p, backends[1], "drain");
    assert_eq!(code, 503, "{v}");
    assert_eq!(stats_backend(&p, backends[1])["admin_state"], "ready");
    assert_eq!(stats_backend(&p, backends[0])["admin_state"], "drain");
    p.wait_log("cannot write it", SOON);
}

#[test]
fn check_and_start_refuse_a_state_file_that_is_another_file_of_the_config() {
    let files = AdminFiles::new();
    let backends = addrs(1);
    let config = files.dir.path("easyproxy.toml");
    let token = files.dir.path("token");
    let log = files.dir.path("easyproxy.log");
    let pid = files.dir.path("easyproxy.pid");
    let with_files = |state: &Path| {
        config_with_state(&files, state, &backends).replace(
            "[global]\n",
            &format!("[global]\nlog_file = {log:?}\npid_file = {pid:?}\n"),
        )
    };
    for (state, what) in [
        (config.clone(), "is the configuration file"),
        (token.clone(), "is admin.token_file"),
        (log.clone(), "is global.log_file"),
        (pid.clone(), "is global.pid_file"),
    ] {
        refused_by_check_and_start(&config, &with_files(&state), what);
        assert!(!pid.exists(), "a refused start writes no pid file");
    }
    // The same file under another name: a relative path, a symbolic link.
    let link = files.dir.path("link.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    std::fs::write(&config, with_files(&link)).unwrap();
    let (code, err) = run_until_exit(&config, &["--check"], SOON);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is the configuration file"), "{err}");
    let dotted = files.dir.0.join(".").join("x").join("..").join("easyproxy.log");
    refused_by_check_and_start(&config, &with_files(&dotted), "is global.log_file");
    // The password file of a mysql check.
    let pw = files.dir.path("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mysql = config_with_state(&files, &pw, &backends).replace(
        "[[service.backend]]",
        &format!("[service.health_check]\nmysql_user = \"u\"\nmysql_password_file = {pw:?}\n\n[[service.backend]]"),
    );
    refused_by_check_and_start(&config, &mysql, "mysql_password_file");
    // And a reload to such a file fails, keeping the running one.
    let good = files.dir.path("good.state");
    let p = Running::start(&config_with_state(&files, &good, &backends));
    p.reload(&config_with_state(&files, &token, &backends));
    let line = p.wait_log("reload failed", SOON);
    assert!(line.contains("is admin.token_file"), "{line}");
    let (code, v) = try_state(&p, backends[0], "drain");
    assert_eq!(code, 200, "{v}");
    assert!(state_text(&good).contains("drain"));
    assert_eq!(std::fs::read_to_string(&token).unwrap(), format!("{TOKEN}\n"));
}

#[test]
fn fifos_as_state_token_or_password_file_are_errors_within_seconds() {
    let files = AdminFiles::new();
    let backends = addrs(1);
    let config = files.dir.path("c.toml");
    let fifo = files.dir.path("fifo");
    mkfifo(&fifo);
    let started = Instant::now();
    refused_by_check_and_start(
        &config,
        &config_with_state(&files, &fifo, &backends),
        "global.state_file: ",
    );
    let (_, err) = run_until_exit(&config, &["--check"], SOON);
    assert!(err.contains("is a FIFO, not a regular file"), "{err}");
    let as_token = config_with_state(&files, &files.state_file(), &backends)
        .replace(&format!("{:?}", files.dir.path("token")), &format!("{fifo:?}"));
    refused_by_check_and_start(&config, &as_token, "is a FIFO");
    let as_password = config_with_state(&files, &files.state_file(), &backends).replace(
        "[[service.backend]]",
        &format!("[service.health_check]\nmysql_user = \"u\"\nmysql_password_file = {fifo:?}\n\n[[service.backend]]"),
    );
    refused_by_check_and_start(&config, &as_password, "is a FIFO");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
}

#[test]
fn a_fifo_at_the_temporary_name_is_replaced_not_waited_on() {
    let files = AdminFiles::new();
    let backends = addrs(2);
    let state = files.state_file();
    let tmp: PathBuf = files.dir.path(".easyproxy.state.tmp");
    let p = Running::start(&config_with_state(&files, &state, &backends));
    mkfifo(&tmp);
    let started = Instant::now();
    let (code, v) = try_state(&p, backends[0], "drain");
    assert!(started.elapsed() < SOON);
    assert_eq!(code, 200, "{v}");
    assert!(state_text(&state).contains("drain"), "written on the answer");
    assert!(!tmp.exists(), "the stale FIFO is gone");
    // Later changes are written too.
    mkfifo(&tmp);
    assert_eq!(try_weight(&p, backends[1], "3").0, 200);
    let text = state_text(&state);
    assert!(text.contains("drain") && text.contains("\"weight\": 3"), "{text}");
}
