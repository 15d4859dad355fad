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

// ---- A hostile or broken admin API: scripted servers on 127.0.0.1:0 ----

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Screen clear, window title (OSC 0), hyperlink (OSC 8), carriage return,
/// right-to-left override, C1 CSI, DEL, a bidi isolate, a line separator.
const EVIL: &str = "a\u{1b}[2Jb\u{1b}]0;pwned\u{7}c\u{1b}]8;;http://evil.example/\u{1b}\\click\u{1b}]8;;\u{1b}\\\roverwritten\u{202e}txt.exe\u{9b}2J\u{7f}\u{2066}x\u{2069}\u{2028}y";

/// A scripted admin API: each connection has its request read (head, then
/// a Content-Length body), then `answer` writes what it likes.
fn serve(answer: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let answer = answer.clone();
            thread::spawn(move || {
                read_request(&mut s);
                answer(&mut s);
            });
        }
    });
    addr
}

fn read_request(s: &mut TcpStream) {
    s.set_read_timeout(Some(SOON)).unwrap();
    let mut req = Vec::new();
    let mut byte = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        req.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let _ = s.read_exact(&mut vec![0; len]);
}

/// An answer with Content-Length.
fn http(status: u16, body: &[u8]) -> Vec<u8> {
    let mut a = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    a.extend_from_slice(body);
    a
}

/// A server that answers every request with `raw`, then closes.
fn answers(raw: Vec<u8>) -> SocketAddr {
    serve(move |s| {
        let _ = s.write_all(&raw);
    })
}

/// Waits until the peer closes (ctl exits), at most a minute.
fn hold(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
}

/// `easyproxy ctl --admin ADDR --token-file T ARGS`: see [`ctl_bounded`].
fn ctl_at(addr: SocketAddr, args: &[&str]) -> (i32, Vec<u8>, Vec<u8>, Duration) {
    let files = AdminFiles::new();
    let token = files.dir.path("token");
    let admin = addr.to_string();
    ctl_bounded(&[&["--admin", &admin, "--token-file", s(&token)][..], args].concat())
}

/// `easyproxy ctl ARGS`, killed if it is still running after a minute:
/// (exit code, stdout, stderr, how long it took).
fn ctl_bounded(args: &[&str]) -> (i32, Vec<u8>, Vec<u8>, Duration) {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .arg("ctl")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ctl {args:?} still running after 60 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    (
        status.code().unwrap_or(-1),
        out.join().unwrap(),
        err.join().unwrap(),
        took,
    )
}

/// What a terminal must never get from the server: C0 controls but the
/// newline, DEL, C1 controls, bidi and line/paragraph separators.
fn assert_clean(what: &str, bytes: &[u8]) -> String {
    let text = std::str::from_utf8(bytes).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}): {bytes:?}"));
    for c in text.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}');
        assert!(!bidi && (c == '\n' || !c.is_control()), "{what}: {c:?} in {text:?}");
    }
    text.to_string()
}

#[test]
fn hostile_error_texts_are_printed_clean_and_exit_1() {
    let evil_json = serde_json::to_vec(&serde_json::json!({ "error": EVIL })).unwrap();
    // The same escapes written as JSON \u escapes (C1 and bidi included).
    let escaped = br#"{"error":"x\u001b[2J\u001b]0;pwned\u0007\u009b31m\u202e\r\nnext"}"#.to_vec();
    for (status, body) in [
        (400, &evil_json),
        (401, &evil_json),
        (404, &escaped),
        (500, &evil_json),
        (503, &escaped),
    ] {
        let addr = answers(http(status, body));
        for args in [&["status"][..], &["--json", "drain", "svc", "b"]] {
            let (code, out, err, _) = ctl_at(addr, args);
            let (out, err) = (assert_clean("stdout", &out), assert_clean("stderr", &err));
            assert_eq!(code, 1, "{status} {args:?}: {err}");
            assert!(
                err.contains(&format!("refused ({status}): ")) && err.contains("pwned"),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err:?}");
            if args[0] == "--json" {
                // Still the server's JSON, its escapes kept as \u escapes.
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v, serde_json::from_slice::<serde_json::Value>(body).unwrap());
            } else {
                assert_eq!(out, "");
            }
        }
    }
    let failed = serde_json::to_vec(&serde_json::json!({ "ok": false, "error": EVIL })).unwrap();
    let (code, _, err, _) = ctl_at(answers(http(200, &failed)), &["reload"]);
    let err = assert_clean("stderr", &err);
    assert_eq!(code, 1);
    assert!(err.starts_with("easyproxy ctl: reload failed: a[2Jb]0;pwned"), "{err}");
}

#[test]
fn hostile_names_in_status_and_reload_answers_are_printed_clean() {
    let status = serde_json::json!({"services": [{"name": EVIL, "backends": [
        {"address": EVIL, "state": EVIL, "admin_state": "ready", "weight": 1, "weight_config": 1, "active": 0, "role": EVIL},
        {"address": "10.0.0.8:3306", "state": "up", "admin_state": EVIL, "weight": 2, "weight_config": 1, "active": 3, "role": null}
    ]}]});
    let addr = answers(http(200, &serde_json::to_vec(&status).unwrap()));
    let (code, out, err, _) = ctl_at(addr, &["status"]);
    let (out, err) = (assert_clean("stdout", &out), assert_clean("stderr", &err));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per backend: {out}");
    assert!(
        lines[1].contains("pwned") && lines[2].contains("10.0.0.8:3306"),
        "{out}"
    );
    let (code, out, _, _) = ctl_at(addr, &["--json", "status"]);
    let out = assert_clean("--json stdout", &out);
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), status);

    let reload = serde_json::json!({ "ok": true, "summary": EVIL });
    let (code, out, err, _) = ctl_at(answers(http(200, &serde_json::to_vec(&reload).unwrap())), &["reload"]);
    let out = assert_clean("stdout", &out);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(
        out.starts_with("reload done: a[2Jb]0;pwned") && out.lines().count() == 1,
        "{out:?}"
    );

    let drained = serde_json::json!({"service": EVIL, "backend": EVIL, "admin_state": EVIL, "was": EVIL, "active": 0});
    let (code, out, _, _) = ctl_at(
        answers(http(200, &serde_json::to_vec(&drained).unwrap())),
        &["drain", "s", "b"],
    );
    let out = assert_clean("stdout", &out);
    assert_eq!((code, out.lines().count()), (0, 1), "{out:?}");
}

#[test]
fn a_body_that_is_not_json_is_shown_bounded_and_clean() {
    let mut body = b"<html>\x1b[2J\x1b]0;pwned\x07\x9b31m\xc2\x9b\xe2\x80\xae\r\n<h1>Bad Gateway</h1>\xff".to_vec();
    body.extend_from_slice(&vec![b'x'; 100 * 1024]);
    let addr = answers(http(502, &body));
    for args in [&["status"][..], &["--json", "status"]] {
        let (code, out, err, _) = ctl_at(addr, args);
        let (out, err) = (assert_clean("stdout", &out), assert_clean("stderr", &err));
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("refused (502): <html>[2J]0;pwned") && err.contains("Bad Gateway"),
            "{err}"
        );
        assert!(err.len() < 6 * 1024, "{} bytes", err.len());
        assert_eq!(out, "", "nothing that is not JSON on stdout");
    }
    // Not JSON in a 200: not an answer from easyproxy.
    let (code, out, err, _) = ctl_at(answers(http(200, &body)), &["--json", "status"]);
    assert_clean("stderr", &err);
    assert_eq!((code, out.len()), (2, 0));
}

#[test]
fn no_complete_answer_exits_2() {
    let truncated = {
        let mut a = http(200, b"{\"services\":[]}");
        a.truncate(a.len() - 5);
        a
    };
    for (what, addr) in [
        ("a truncated body", answers(truncated)),
        ("a garbage head", answers(b"SSH-2.0-OpenSSH_9.6\r\n\r\n{}".to_vec())),
        (
            "a bad Content-Length",
            answers(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}".to_vec()),
        ),
        ("a close without an answer", answers(Vec::new())),
    ] {
        let (code, _, err, _) = ctl_at(addr, &["status"]);
        let err = assert_clean("stderr", &err);
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains("no complete answer from"), "{what}: {err}");
    }
    // A server that never answers: the deadline ends it.
    let (code, _, err, took) = ctl_at(serve(hold), &["--timeout", "1", "status"]);
    let err = assert_clean("stderr", &err);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--timeout 1s passed while waiting for the answer"),
        "{err}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
}

#[test]
fn a_dripping_server_cannot_outlast_the_timeout() {
    fn drip(s: &mut TcpStream, bytes: &[u8]) {
        for b in bytes.iter().cycle() {
            if s.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
    // A byte of the head every 200 ms, for ever.
    let head = serve(|s| drip(s, b"HTTP/1.1 200 OK\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa"));
    // A complete head, then a byte of the body every 200 ms.
    let body = serve(|s| {
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n");
        drip(s, b"{\"services\": [");
    });
    for (addr, timeout, step) in [
        (head, "1", "waiting for"),
        (body, "1", "reading"),
        (body, "0.5", "reading"),
    ] {
        let (code, _, err, took) = ctl_at(addr, &["--timeout", timeout, "status"]);
        let err = assert_clean("stderr", &err);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains(&format!("passed while {step} the answer")), "{err}");
        assert!(took < Duration::from_secs(8), "--timeout {timeout}: {took:?}");
    }
}

#[test]
fn a_complete_answer_ends_without_waiting_for_the_close() {
    // The answer, then the connection held open until ctl goes.
    let addr = serve(|s| {
        let body = br#"{"services":[{"name":"svc","backends":[{"address":"10.0.0.7:3306","state":"up","admin_state":"ready","weight":1,"weight_config":1,"active":0,"role":null}]}]}"#;
        let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        a.extend_from_slice(body);
        let _ = s.write_all(&a);
        hold(s);
    });
    // Waiting for the close would run into the deadline: exit 2.
    let (code, out, err, took) = ctl_at(addr, &["--timeout", "30", "status"]);
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    assert!(String::from_utf8_lossy(&out).contains("10.0.0.7:3306"));
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn a_timeout_must_be_a_positive_number_of_seconds() {
    let addr = answers(http(200, br#"{"ok":true,"summary":"fine"}"#));
    for good in ["0.5", "3", "2.25"] {
        let (code, out, err, _) = ctl_at(addr, &["--timeout", good, "reload"]);
        assert_eq!(
            (code, out.as_slice()),
            (0, &b"reload done: fine\n"[..]),
            "{}",
            String::from_utf8_lossy(&err)
        );
    }
    for bad in ["0", "-1", "0.0", "abc", "", "inf", "NaN", "1e12"] {
        let (code, _, err, _) = ctl_at(addr, &["--timeout", bad, "status"]);
        let err = String::from_utf8_lossy(&err);
        assert_eq!(code, 1, "--timeout {bad:?}: a usage error: {err}");
        assert!(err.contains("--timeout"), "{bad:?}: {err}");
    }
}

#[test]
fn a_fifo_as_config_or_token_file_is_an_error_not_a_hang() {
    let dir = TempDir::new();
    let fifo = dir.path("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a path in a fresh temporary directory.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for args in [
        &["-c", s(&fifo), "status"][..],
        &["--admin", "127.0.0.1:1", "--token-file", s(&fifo), "status"],
    ] {
        let (code, _, err, took) = ctl_bounded(args);
        let err = String::from_utf8_lossy(&err);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("is a FIFO"), "{args:?}: {err}");
        assert!(took < Duration::from_secs(20), "{took:?}");
    }
}
