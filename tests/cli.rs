//! The command line: --check on good and bad files, --version, --help, and
//! start-up failures that must not half-start.

mod common;

use std::process::Command;

use common::*;

fn check(config: &str) -> (i32, String, String) {
    check_text(config)
}

const GOOD: &str = r#"
[global]
max_connections = 100
log_level = "warn"

[stats]
listen = "127.0.0.1:0"

[[service]]
name = "mysql"
listen = "127.0.0.1:0"
strategy = "poll"
send_proxy = "v2"

[service.health_check]
interval_ms = 500
send = 'PING\r\n'
expect = "+PONG"

[[service.backend]]
address = "127.0.0.1:3306"
weight = 3

[[service.backend]]
address = "localhost:3307"
backup = true
"#;

#[test]
fn check_accepts_a_good_file_and_summarises_it() {
    let (code, out, err) = check(GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");
    assert!(out.contains("service \"mysql\""), "{out}");
    assert!(out.contains("round_robin"), "alias resolved: {out}");
    assert!(out.contains("backlog 1024"), "{out}");
    assert!(out.contains("backend 127.0.0.1:3306 weight 3"), "{out}");
    assert!(
        out.contains("backend localhost:3307 (127.0.0.1:3307) weight 1 backup"),
        "{out}"
    );
}

#[test]
fn check_rejects_each_class_of_bad_file() {
    let cases: &[(&str, &str, &str)] = &[
        ("unknown key", "bogus = 1\n[[service]]", "bogus"),
        ("toml syntax", "[[service]\nname = ", "line 1"),
        ("zero weight", "", "weight"),
        ("duplicate name", "", "duplicate service name"),
        ("no backends", "", "at least one"),
        ("bad strategy", "", "strategy"),
        ("bad address", "", "address"),
        ("bad listen", "", "listen"),
        ("bad log level", "", "log_level"),
        ("bad send_proxy", "", "send_proxy"),
        ("unknown health key", "", "health_check"),
        ("negative number", "", "retries: invalid value"),
        ("wrong type", "", "buffer_size: invalid type"),
        ("zero backlog", "", "backlog"),
    ];
    for (what, _, needle) in cases {
        let text = match *what {
            "unknown key" => GOOD.replace("[global]", "[global]\nbogus = 1"),
            "toml syntax" => "[[service]\nname = ".to_string(),
            "zero weight" => GOOD.replace("weight = 3", "weight = 0"),
            "duplicate name" => format!(
                "{GOOD}\n[[service]]\nname = \"mysql\"\nlisten = \"127.0.0.1:1\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n"
            ),
            "no backends" => "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n".to_string(),
            "bad strategy" => GOOD.replace("\"poll\"", "\"fastest\""),
            "bad address" => GOOD.replace("127.0.0.1:3306", "127.0.0.1:notaport"),
            "bad listen" => GOOD.replace("name = \"mysql\"\nlisten = \"127.0.0.1:0\"", "name = \"mysql\"\nlisten = \"localhost:80\""),
            "bad log level" => GOOD.replace("\"warn\"", "\"loud\""),
            "bad send_proxy" => GOOD.replace("\"v2\"", "\"v3\""),
            "unknown health key" => GOOD.replace("interval_ms = 500", "intervall_ms = 500"),
            "negative number" => GOOD.replace("name = \"mysql\"", "name = \"mysql\"\nretries = -1"),
            "wrong type" => GOOD.replace("[global]", "[global]\nbuffer_size = \"lots\""),
            "zero backlog" => GOOD.replace("name = \"mysql\"", "name = \"mysql\"\nbacklog = 0"),
            _ => unreachable!(),
        };
        let (code, _out, err) = check(&text);
        assert_eq!(code, 1, "{what}: should fail; stderr {err}");
        assert!(err.contains(needle), "{what}: message should mention {needle:?}: {err}");
        assert!(err.contains("c.toml"), "{what}: message should name the file: {err}");
    }
}

#[test]
fn check_points_at_line_and_column() {
    let text = GOOD.replace("weight = 3", "weight = 3\nwieght = 4");
    let (code, _, err) = check(&text);
    assert_eq!(code, 1);
    assert!(err.contains("line 23, column 1"), "{err}");
    assert!(err.contains("[[service.backend]]"), "names the table: {err}");
    assert!(err.contains("wieght"), "{err}");
}

#[test]
fn a_bad_file_fails_to_start_with_one_line_and_status_1() {
    let dir = TempDir::new();
    let path = dir.path("c.toml");
    std::fs::write(
        &path,
        GOOD.replace("weight = 3", "weight = 0")
            .replace("\"poll\"", "\"fastest\""),
    )
    .unwrap();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("weight") && err.contains("strategy") && err.contains("c.toml"),
        "{err}"
    );
}

#[test]
fn huge_or_binary_files_are_clear_errors() {
    let dir = TempDir::new();
    let big = dir.path("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(64 << 20).unwrap(); // sparse: 64 MiB of NUL bytes
    let out = Command::new(bin()).args(["--check", "-c"]).arg(&big).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"));
    let bin_file = dir.path("bin.toml");
    std::fs::write(&bin_file, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let out = Command::new(bin())
        .args(["--check", "-c"])
        .arg(&bin_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UTF-8"));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = Command::new(bin())
        .args(["--check", "-c", "/nonexistent/easyproxy.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read file"));
}

#[test]
fn version_and_help() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--config") && help.contains("--check"));
}

#[test]
fn listen_address_in_use_fails_to_start_with_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = TempDir::new();
    let path = dir.path("c.toml");
    let pid = dir.path("p.pid");
    std::fs::write(
        &path,
        format!(
            "[global]\npid_file = \"{}\"\n[[service]]\nname = \"a\"\nlisten = \"{addr}\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n",
            pid.display()
        ),
    )
    .unwrap();
    let out = Command::new(bin()).arg("-c").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr.to_string()) && err.lines().count() == 1, "{err}");
    assert!(!pid.exists(), "nothing half-starts");
}

#[test]
fn pid_file_is_written_and_removed() {
    let b = Backend::echo();
    let dir = TempDir::new();
    let pid = dir.path("p.pid");
    let cfg =
        service_config("", &[b.addr]).replace("[global]\n", &format!("[global]\npid_file = \"{}\"\n", pid.display()));
    let mut p = Running::start(&cfg);
    let written = std::fs::read_to_string(&pid).unwrap();
    assert_eq!(written.trim(), p.pid().to_string());
    p.signal(libc::SIGTERM);
    assert!(p.wait_exit(SOON).success());
    assert!(!pid.exists());
}

#[test]
fn log_file_receives_the_log() {
    let b = Backend::echo();
    let dir = TempDir::new();
    let log = dir.path("e.log");
    let cfg =
        service_config("", &[b.addr]).replace("[global]\n", &format!("[global]\nlog_file = \"{}\"\n", log.display()));
    let path = dir.path("c.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(bin()).arg("-c").arg(&path).spawn().unwrap();
    let line = wait_for("listening line in the log file", SOON, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines().find(|l| l.contains("listening on")).map(str::to_string)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("service svc listening on 127.0.0.1:"));
}

#[test]
fn soft_descriptor_limit_is_raised_for_max_connections() {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]).replace("[global]\n", "[global]\nmax_connections = 1000\n");
    let p = Running::start_with(&cfg, |cmd| under_ulimit(cmd, "-Sn 64"));
    let (soft, hard) = fd_limits(p.pid());
    assert!(soft >= 2000.min(hard), "soft limit still {soft} (hard {hard})");
}

/// `easyproxy --check | head -1` where `head` is already gone: the summary
/// meets a closed pipe (EPIPE), and that is a quiet exit 0, not a panic
/// (exit 101).
#[test]
fn check_survives_a_closed_stdout() {
    let dir = TempDir::new();
    let path = dir.path("c.toml");
    std::fs::write(&path, GOOD).unwrap();
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    unsafe { libc::close(fds[0]) }; // nobody will read
    let stdout = unsafe { <std::process::Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
    let out = Command::new(bin())
        .arg("--check")
        .arg("-c")
        .arg(&path)
        .stdout(stdout)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--check` says when a health check's timeout is above its interval
/// (valid, exit 0, but checks of a silent backend then come only every
/// timeout).
#[test]
fn check_warns_about_a_timeout_above_the_interval() {
    let text = GOOD.replace("interval_ms = 500", "interval_ms = 1\ntimeout_ms = 86400000");
    let (code, out, err) = check(&text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(err.contains("warning") && err.contains("above interval_ms"), "{err}");
}
