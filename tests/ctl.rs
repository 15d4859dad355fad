//! `easyproxy ctl` end to end through the binary, and the `[admin]` checks
//! of `--check`.

mod common;

use std::path::Path;
use std::process::Command;

use common::admin::*;
use common::*;

/// Runs `easyproxy ctl ARGS`: (exit code, stdout, stderr).
fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).arg("ctl").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn status_drain_weight_reset_and_reload_through_the_binary() {
    let (a, b) = (Backend::tagged("A"), Backend::tagged("B"));
    let files = AdminFiles::new();
    let text = files.config("", &[(a.addr, ""), (b.addr, "weight = 2")]);
    let p = Running::start(&text);
    let cfg = s(&p.config);
    let (code, out, err) = ctl(&["-c", cfg, "status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["SERVICE", "BACKEND", "STATE", "ADMIN", "WEIGHT", "ACTIVE", "ROLE"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row, ["svc", &a.addr.to_string(), "up", "ready", "1", "0", "-"]);

    let (code, out, err) = ctl(&["-c", cfg, "drain", "svc", &a.addr.to_string()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("svc/{}: drain (was ready), 0 active connections\n", a.addr)
    );
    let (_, out, _) = ctl(&["-c", cfg, "status"]);
    assert!(out.lines().nth(1).unwrap().contains(" drain "), "{out}");

    // Over TCP with the token file, then back to the file's weight.
    let admin = admin_addr(&p).to_string();
    let token = files.dir.path("token");
    let tcp = ["--admin", &admin, "--token-file", s(&token)];
    let (code, out, err) = ctl(&[&tcp[..], &["weight", "svc", &b.addr.to_string(), "7"]].concat());
    assert_eq!(
        (code, out.as_str()),
        (0, format!("svc/{}: weight 7 (file 2)\n", b.addr).as_str()),
        "{err}"
    );
    let (_, out, _) = ctl(&["-c", cfg, "status"]);
    assert!(out.contains("7 (file 2)"), "{out}");
    let (code, out, _) = ctl(&[&tcp[..], &["weight", "svc", &b.addr.to_string(), "reset"]].concat());
    assert_eq!((code, out), (0, format!("svc/{}: weight 2 (file 2)\n", b.addr)));

    let (code, out, _) = ctl(&["-c", cfg, "--json", "status"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(backend(&v, a.addr)["admin_state"], "drain");

    let (code, out, err) = ctl(&["-c", cfg, "reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("reload done: services added=-"), "{out}");
    let (code, out, _) = ctl(&["-c", cfg, "close", "svc", &b.addr.to_string()]);
    assert_eq!((code, out), (0, format!("svc/{}: closed 0 connections\n", b.addr)));
}

#[test]
fn refusals_exit_1_and_an_unreachable_proxy_exits_2() {
    let a = Backend::echo();
    let files = AdminFiles::new();
    let p = Running::start(&files.config("", &[(a.addr, "")]));
    let cfg = s(&p.config);
    let (code, _, err) = ctl(&["-c", cfg, "drain", "nosuch", "x:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused (404): unknown service \"nosuch\""), "{err}");
    let (code, _, err) = ctl(&["-c", cfg, "maint", "svc", "10.9.9.9:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no backend \"10.9.9.9:1\""), "{err}");
    let (code, _, _) = ctl(&["-c", cfg, "weight", "svc", &a.addr.to_string(), "0"]);
    assert_eq!(code, 1);
    let wrong = files.dir.path("wrong");
    std::fs::write(&wrong, "this-is-not-the-token\n").unwrap();
    let admin = admin_addr(&p).to_string();
    let (code, _, err) = ctl(&["--admin", &admin, "--token-file", s(&wrong), "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("refused (401)") && !err.contains("this-is-not"), "{err}");
    // A bad file: the reload is refused and says why.
    std::fs::write(&p.config, "[[service]]\nnmae = 1\n").unwrap();
    let (code, _, err) = ctl(&["--admin", s(&files.socket()), "reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("reload failed") && err.contains("nmae"), "{err}");
    let (code, _, _) = ctl(&["--admin", s(&files.socket()), "frobnicate"]);
    assert_eq!(code, 1, "a usage error is a refusal, not 'unreachable'");

    let closed = refused_addr().to_string();
    let (code, _, err) = ctl(&["--admin", &closed, "--token-file", s(&wrong), "status"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach the proxy"), "{err}");
    let gone = files.dir.path("nobody.sock");
    let (code, _, err) = ctl(&["--admin", s(&gone), "status"]);
    assert_eq!(code, 2, "{err}");
}

fn check(text: &str) -> (i32, String, String) {
    check_text(text)
}

#[test]
fn check_refuses_a_tcp_admin_listener_without_a_token_and_never_shows_the_token() {
    let service =
        "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n";
    let (code, _, err) = check(&format!("[admin]\nlisten = \"127.0.0.1:7260\"\n{service}"));
    assert_eq!(code, 1);
    assert!(
        err.contains("admin.listen: a TCP admin listener needs token_file"),
        "{err}"
    );
    let files = AdminFiles::new();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:7260\"\ntoken_file = {:?}\nsocket = {:?}\n{service}",
        files.dir.path("token"),
        files.socket()
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("admin: listen 127.0.0.1:7260 (token from"), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));
    let readable = files.dir.path("token");
    std::fs::set_permissions(&readable, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, _, err) = check(&text);
    assert_eq!(code, 0);
    assert!(
        err.contains("warning: admin.token_file:") && err.contains("readable by other users"),
        "{err}"
    );
}
