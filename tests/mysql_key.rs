//! MySQL checks, the server's RSA key in caching_sha2 full authentication,
//! against scripted MySQL 8 servers (tests/common/mysql.rs) that record
//! what they are sent and every password they can decrypt: without
//! `mysql_server_public_key_file` or `mysql_get_server_public_key` the
//! password never leaves (nor is a key asked for); a pinned key is used
//! without asking; the opt-in asks and warns; keys too large or with an odd
//! exponent are refused, pinned ones by `--check`. Also: what a server says
//! reaches the log and /stats cleaned.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use common::mysql::{crafted_pem, err_payload, packet, Auth, Db, Server, PUBLIC_PEM};
use common::*;
use serde_json::Value;

const PASSWORD: &str = "s3cret-Pa55";
const NEEDS_KEY: &str = "full authentication needs the server's public key: set mysql_server_public_key_file";
const OPT_IN_WARNING: &str = "service[0] (db).health_check.mysql_get_server_public_key: = true: whoever answers \
                              at a backend address can learn the password; pin the key with \
                              mysql_server_public_key_file";

/// One service `db` over `backends`, `keys` in its health check, checked
/// every 100 ms, rise = fall = 1, with a stats listener.
fn config(backends: &[SocketAddr], keys: &str) -> String {
    let mut c = format!(
        "[global]\nlog_level = \"info\"\n[stats]\nlisten = \"127.0.0.1:0\"\ncache_ms = 0\n\
         [[service]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\n\
         [service.health_check]\ninterval_ms = 100\ntimeout_ms = 2000\nrise = 1\nfall = 1\n\
         mysql_user = \"check\"\nmysql_password = \"{PASSWORD}\"\n{keys}\n"
    );
    for b in backends {
        c.push_str(&format!("[[service.backend]]\naddress = \"{b}\"\n"));
    }
    c
}

/// A caching_sha2 server whose cache never holds the user: every login is
/// a full authentication.
fn full_auth_server() -> Server {
    Server::spawn(Db::new(Auth::Full, "check", PASSWORD))
}

fn key_file(dir: &TempDir, name: &str, pem: &str) -> String {
    let path = dir.path(name);
    std::fs::write(&path, pem).unwrap();
    format!("mysql_server_public_key_file = {:?}", path.display().to_string())
}

/// The `last_check` of the backend at `addr` in /stats.
fn last_check(p: &Running, addr: SocketAddr) -> Value {
    let s = stats_json(p.stats_addr());
    let b = s["services"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == addr.to_string())
        .cloned()
        .unwrap();
    b["last_check"].clone()
}

/// Waits until `s` has refused `n` logins.
fn wait_denied(s: &Server, n: usize) {
    wait_for("denied logins", SOON, || (s.db().denied >= n).then_some(()));
}

#[test]
fn without_a_key_setting_the_password_never_leaves_nor_is_a_key_asked_for() {
    // This server holds the private half of the key it would send: had the
    // check asked for the key and used it, `learned` would hold the password.
    let rogue = full_auth_server();
    let addr = rogue.backend.addr;
    let p = Running::start(&config(&[addr], ""));
    let line = p.wait_log(&format!("backend={addr} is DOWN"), SOON);
    assert!(line.contains(&format!("(health check: {NEEDS_KEY})")), "{line}");
    wait_denied(&rogue, 3);
    assert_eq!(last_check(&p, addr), NEEDS_KEY);
    let db = rogue.db();
    assert_eq!(db.key_requests, 0, "no key request: {db:?}");
    assert!(db.learned.is_empty(), "{:?}", db.learned);
    assert!(!db.full_auth_answers.is_empty());
    assert!(
        db.full_auth_answers.iter().all(|a| a == &[0x00]),
        "only the one-byte decline: {:?}",
        db.full_auth_answers
    );
    // The server ended each login itself (access denied): no aborted
    // handshake counted against the proxy's address.
    assert_eq!((db.logins, db.aborted), (0, 0), "{db:?}");
    assert!(!p.log_text().contains(PASSWORD));
}

#[test]
fn a_pinned_key_is_used_without_asking_the_server() {
    // The file in PKCS#1 form (`BEGIN RSA PUBLIC KEY`); tests/mysql.rs pins
    // the SubjectPublicKeyInfo form (`BEGIN PUBLIC KEY`).
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let pkcs1 = rsa::PublicKey::from_public_key_pem(PUBLIC_PEM)
        .unwrap()
        .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let s = full_auth_server();
    let dir = TempDir::new();
    let text = config(&[s.backend.addr], &key_file(&dir, "server.pem", &pkcs1));
    let p = Running::start(&text);
    wait_for("logins", SOON, || (s.db().logins >= 3).then_some(()));
    {
        let db = s.db();
        assert_eq!((db.key_requests, db.denied, db.aborted), (0, 0, 0), "{db:?}");
        assert!(db.full_auth_answers.iter().all(|a| a.len() == 256), "RSA blocks");
        assert!(db.learned.iter().all(|l| l == PASSWORD));
    }
    assert!(!p.log_text().contains("is DOWN"), "{}", p.log_text());
    let (code, out, err) = check_text(&text);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("mysql_get_server_public_key"), "{err}");
    assert!(
        out.contains(&format!(
            "server_public_key: pinned ({}, 2048 bits)",
            dir.path("server.pem").display()
        )),
        "{out}"
    );
    assert!(!out.contains("BEGIN"), "the key itself is never printed: {out}");
}

#[test]
fn a_wrong_pinned_key_keeps_the_password_from_the_server() {
    // Pinned: a key nobody holds the private half of.
    let s = full_auth_server();
    let dir = TempDir::new();
    let p = Running::start(&config(
        &[s.backend.addr],
        &key_file(&dir, "other.pem", &crafted_pem(2048, 65537)),
    ));
    let line = p.wait_log("is DOWN", SOON);
    assert!(line.contains("(health check: access denied for user 'check'"), "{line}");
    wait_denied(&s, 2);
    let db = s.db();
    assert_eq!(db.key_requests, 0);
    assert!(db.learned.is_empty(), "{:?}", db.learned);
}

#[test]
fn with_the_opt_in_the_server_key_is_asked_for_and_check_warns() {
    let s = full_auth_server();
    let text = config(&[s.backend.addr], "mysql_get_server_public_key = true");
    let p = Running::start(&text);
    wait_for("logins", SOON, || (s.db().logins >= 3).then_some(()));
    {
        let db = s.db();
        assert!(db.key_requests >= 3, "{db:?}");
        assert_eq!((db.denied, db.aborted), (0, 0), "{db:?}");
        // What the opt-in accepts: whoever sends a key it holds learns the
        // password.
        assert!(db.learned.iter().all(|l| l == PASSWORD) && !db.learned.is_empty());
    }
    assert!(!p.log_text().contains("is DOWN"));
    assert!(
        p.log_text().contains(&format!("configuration: {OPT_IN_WARNING}")),
        "{}",
        p.log_text()
    );
    let (code, _, err) = check_text(&text);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("warning: {OPT_IN_WARNING}")), "{err}");
}

#[test]
fn a_refused_server_key_fails_the_check_before_any_encryption() {
    let cases = [
        (
            crafted_pem(8192, (1 << 33) - 1),
            "the server's public key: 8192-bit RSA key refused: at most 4096 bits",
        ),
        (
            crafted_pem(2048, 3),
            "the server's public key: RSA key with public exponent 3 refused: only 65537",
        ),
    ];
    let servers: Vec<Server> = cases
        .iter()
        .map(|(pem, _)| {
            let s = full_auth_server();
            s.db().served_key = Some(pem.clone());
            s
        })
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.backend.addr).collect();
    let p = Running::start(&config(&addrs, "mysql_get_server_public_key = true"));
    for (s, (_, reason)) in servers.iter().zip(cases) {
        let addr = s.backend.addr;
        let line = p.wait_log(&format!("backend={addr} is DOWN"), SOON);
        assert!(line.contains(&format!("(health check: {reason})")), "{line}");
        wait_denied(s, 2);
        assert_eq!(last_check(&p, addr), reason);
        let db = s.db();
        assert!(db.key_requests >= 2, "{db:?}");
        assert!(
            db.full_auth_answers.iter().all(|a| a == &[0x00]),
            "declined, nothing encrypted: {:?}",
            db.full_auth_answers
        );
        assert_eq!(db.aborted, 0);
    }
}

/// `--check` on a config pinning the key file `path`: the errors.
fn check_errors(path: &Path, keys: &str) -> String {
    let text = format!(
        "[[service]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\n[service.health_check]\n{keys}\
         mysql_server_public_key_file = {:?}\n[[service.backend]]\naddress = \"127.0.0.1:3306\"\n",
        path.display().to_string()
    );
    let (code, out, err) = check_text(&text);
    assert_ne!(code, 0, "{out}{err}");
    err
}

#[test]
fn check_refuses_bad_pinned_keys() {
    let dir = TempDir::new();
    let file = |name: &str, bytes: &[u8]| {
        let p = dir.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let user = "mysql_user = \"check\"\nmysql_password = \"pw\"\n";
    let key = "service[0] (db).health_check.mysql_server_public_key_file: ";
    let cases = [
        (
            file("big.pem", crafted_pem(8192, (1 << 33) - 1).as_bytes()),
            "8192-bit RSA key refused: at most 4096 bits",
        ),
        (
            file("e.pem", crafted_pem(2048, 3).as_bytes()),
            "RSA key with public exponent 3 refused: only 65537",
        ),
        (file("huge.pem", &vec![b'A'; 100_000]), "larger than 16384 bytes"),
        (file("junk.pem", b"not a key"), "not a readable RSA public key"),
        (dir.path("missing.pem"), "cannot read"),
        (dir.0.clone(), "is a directory, not a regular file"),
    ];
    for (path, why) in cases {
        let err = check_errors(&path, user);
        assert!(err.contains(key) && err.contains(why), "{}: {err}", path.display());
    }
    let good = file("good.pem", PUBLIC_PEM.as_bytes());
    let err = check_errors(&good, "");
    assert!(err.contains(&format!("{key}needs mysql_user")), "{err}");
}

#[test]
fn server_messages_reach_the_log_and_stats_cleaned() {
    let evil = format!(
        "Access denied\u{202e}gnp.exe\u{2066}\r\nFAKE LINE\u{85}{}",
        "x".repeat(500)
    );
    let backend = Backend::spawn(move |mut s| {
        use std::io::Write;
        let _ = s.write_all(&packet(0, &err_payload(1045, &evil)));
    });
    let addr = backend.addr;
    let p = Running::start(&config(&[addr], ""));
    let line = p.wait_log(&format!("backend={addr} is DOWN"), SOON);
    assert!(
        line.contains("(health check: access denied?gnp.exe???FAKE LINE?xxx"),
        "{line}"
    );
    let logs = p.log_text();
    assert!(!logs.contains(['\u{202e}', '\u{2066}', '\u{85}']), "{logs}");
    assert!(!logs.contains("\nFAKE LINE"), "{logs}");
    let reason = last_check(&p, addr);
    let reason = reason.as_str().unwrap();
    assert!(reason.starts_with("access denied?gnp.exe???FAKE LINE?x"), "{reason}");
    assert_eq!(reason.chars().count(), 203, "200 characters and ...: {reason}");
    assert!(reason.ends_with("..."));
}
