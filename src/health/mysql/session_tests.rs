//! Health flow, MySQL check, session tests: scripted servers (MySQL 8 with
//! caching_sha2 fast and full authentication, auth switches, ERR greetings,
//! denied logins, role answers) and random or mutated ones.

use std::time::Duration;

use super::*;
use crate::health::mysql::auth::{scramble_caching_sha2, scramble_native};
use crate::health::mysql::packets::PacketReader;
use crate::health::mysql::testutil::{self, NONCE, OK, PRIVATE_PEM, PUBLIC_PEM};
use crate::rng::Rng;

/// A session and the server side's sequence counter.
struct Talk {
    s: Session,
    hc: HealthCheck,
    seq: u8,
}

impl Talk {
    fn new(password: &str, want: Option<Role>) -> Talk {
        Talk::with_key(password, want, MysqlServerKey::Refuse)
    }

    /// A session whose full authentication uses `key`.
    fn with_key(password: &str, want: Option<Role>, key: MysqlServerKey) -> Talk {
        Talk {
            s: Session::new(want),
            hc: testutil::hc_key(password, want, key),
            seq: 0,
        }
    }

    /// The server sends `payload`; the client's reply, with a sent packet
    /// unframed (its sequence number checked).
    fn server(&mut self, payload: &[u8]) -> (Reply, Vec<u8>) {
        let reply = self.s.on_packet(
            &Packet {
                seq: self.seq,
                payload: payload.to_vec(),
            },
            &self.hc,
        );
        self.seq = self.seq.wrapping_add(1);
        let Reply::Send(bytes) = &reply else {
            return (reply, Vec::new());
        };
        let mut r = PacketReader::new();
        r.extend(bytes);
        let p = r.next_packet().unwrap().unwrap();
        assert!(r.is_empty());
        if p.payload.first() == Some(&0x03) && self.s.authenticated() {
            assert_eq!(p.seq, 0, "a command starts a new sequence");
        } else {
            assert_eq!(p.seq, self.seq, "the client answers in sequence");
        }
        self.seq = p.seq.wrapping_add(1);
        (reply, p.payload)
    }

    fn script(&mut self, packets: Vec<Vec<u8>>) -> (Reply, Vec<u8>) {
        let mut last = (Reply::Wait, Vec::new());
        for p in packets {
            last = self.server(&p);
        }
        last
    }
}

/// The auth data in a HandshakeResponse41 payload.
fn auth_of(login: &[u8]) -> &[u8] {
    let user_end = 32 + login[32..].iter().position(|&b| b == 0).unwrap();
    let len = login[user_end + 1] as usize;
    &login[user_end + 2..user_end + 2 + len]
}

fn ok_outcome() -> Reply {
    Reply::Quit(CheckResult::Ok.into())
}

#[test]
fn native_login_with_a_password_then_quit() {
    let mut t = Talk::new("secret", None);
    let (r, login) = t.server(&testutil::greeting(NATIVE, &NONCE));
    assert!(matches!(r, Reply::Send(_)));
    assert_eq!(auth_of(&login), scramble_native(b"secret", &NONCE));
    assert!(login.ends_with(b"mysql_native_password\0"));
    assert!(!t.s.authenticated());
    assert_eq!(t.server(OK).0, ok_outcome());
    assert!(t.s.authenticated());
}

#[test]
fn caching_sha2_fast_path() {
    let mut t = Talk::new("secret", None);
    let (_, login) = t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    assert_eq!(auth_of(&login), scramble_caching_sha2(b"secret", &NONCE));
    assert_eq!(t.server(&[0x01, 0x03]).0, Reply::Wait);
    assert_eq!(t.server(OK).0, ok_outcome());
}

/// What the key holder reads from an encrypted password: password + NUL.
fn decrypt(enc: &[u8]) -> Vec<u8> {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
    let plain = key.oaep_decrypt::<sha1::Sha1>(enc).unwrap();
    plain.iter().zip(NONCE.iter().cycle()).map(|(a, b)| a ^ b).collect()
}

/// An RSA public key of `bits` bits and exponent `e`, in PEM, without its
/// private half (a modulus of all one bits: odd, the size wanted).
fn crafted_pem(bits: u32, e: u64) -> String {
    use rsa::pkcs8::EncodePublicKey;
    let n = rsa::BoxedUint::from_be_slice(&vec![0xff; bits as usize / 8], bits).unwrap();
    let key = rsa::PublicKey::new_unchecked(n, rsa::BoxedUint::from(e));
    key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
}

#[test]
fn caching_sha2_full_path_with_the_server_key_when_opted_in() {
    let pem = PUBLIC_PEM;
    let mut t = Talk::with_key("secret", None, MysqlServerKey::FromServer);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    assert_eq!(t.server(&[0x01, 0x04]).1, [0x02], "asks for the public key");
    let (_, enc) = t.server(&[b"\x01", pem.as_bytes()].concat());
    assert_eq!(decrypt(&enc), b"secret\0");
    assert_eq!(t.server(OK).0, ok_outcome());
    // The key as MySQL sends it, with a trailing newline and NUL.
    let mut t = Talk::with_key("secret", None, MysqlServerKey::FromServer);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    let (_, enc) = t.server(&[b"\x01", pem.as_bytes(), b"\n\0"].concat());
    assert_eq!(decrypt(&enc), b"secret\0");
    // A second request for full authentication is refused.
    let mut t = Talk::with_key("secret", None, MysqlServerKey::FromServer);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    t.server(&[b"\x01", pem.as_bytes()].concat());
    assert_eq!(t.server(&[0x01, 0x04]).0, protocol("full authentication asked twice"));
}

#[test]
fn caching_sha2_full_path_to_the_pinned_key_asks_for_no_key() {
    let mut t = Talk::with_key("secret", None, testutil::pinned());
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    let (r, enc) = t.server(&[0x01, 0x04]);
    assert!(matches!(r, Reply::Send(_)));
    assert_eq!(enc.len(), 256, "the password encrypted at once, no key request");
    assert_eq!(decrypt(&enc), b"secret\0");
    assert_eq!(t.server(OK).0, ok_outcome());
    // After a switch to caching_sha2, with the switch's nonce.
    let mut t = Talk::with_key("secret", None, testutil::pinned());
    t.server(&testutil::greeting(NATIVE, b"ABCDEFGHIJKLMNOPQRST"));
    let (_, scramble) = t.server(&[&b"\xfecaching_sha2_password\0"[..], &NONCE, b"\0"].concat());
    assert_eq!(scramble, scramble_caching_sha2(b"secret", &NONCE));
    assert_eq!(decrypt(&t.server(&[0x01, 0x04]).1), b"secret\0");
}

#[test]
fn without_a_key_full_authentication_is_declined_and_the_password_never_sent() {
    for want in [None, Some(Role::Primary)] {
        let mut t = Talk::new("secret", want);
        t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
        let (r, sent) = t.server(&[0x01, 0x04]);
        assert!(matches!(r, Reply::Send(_)));
        assert_eq!(sent, DECLINE, "neither a key request nor the password");
        let denied = testutil::err(1045, "Access denied for user 'check'@'localhost' (using password: YES)");
        let Reply::Fail(o) = t.server(&denied).0 else { panic!() };
        assert_eq!(
            (o.result, o.detail.as_deref()),
            (CheckResult::LoginFailed, Some(NEEDS_KEY))
        );
        assert_eq!(
            NEEDS_KEY,
            "full authentication needs the server's public key: set mysql_server_public_key_file"
        );
        assert!(!t.s.authenticated());
    }
    // A server that lets the declined login in: still a failure, quit cleanly.
    let mut t = Talk::new("secret", Some(Role::Primary));
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    assert_eq!(
        t.server(OK).0,
        Reply::Quit(CheckOutcome::with_detail(CheckResult::LoginFailed, NEEDS_KEY))
    );
    assert!(t.s.authenticated(), "COM_QUIT may go");
    // The same after an auth switch to caching_sha2.
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    t.server(&[&b"\xfecaching_sha2_password\0"[..], &NONCE, b"\0"].concat());
    assert_eq!(t.server(&[0x01, 0x04]).1, DECLINE);
}

#[test]
fn refused_server_keys_are_declined_with_the_reason() {
    let cases = [
        (
            crafted_pem(8192, 65537),
            "the server's public key: 8192-bit RSA key refused: at most 4096 bits",
        ),
        (
            crafted_pem(8192, (1 << 33) - 1),
            "the server's public key: 8192-bit RSA key refused: at most 4096 bits",
        ),
        (
            crafted_pem(2048, 3),
            "the server's public key: RSA key with public exponent 3 refused: only 65537",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
            "the server's public key: not a readable",
        ),
        ("\u{202e}garbage".into(), "the server's public key: not a readable"),
    ];
    for (pem, want) in cases {
        let mut t = Talk::with_key("secret", None, MysqlServerKey::FromServer);
        t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
        assert_eq!(t.server(&[0x01, 0x04]).1, [0x02]);
        let started = std::time::Instant::now();
        let (r, sent) = t.server(&[b"\x01", pem.as_bytes()].concat());
        assert!(matches!(r, Reply::Send(_)), "{r:?}");
        assert_eq!(sent, DECLINE, "{want}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused before any encryption"
        );
        let Reply::Fail(o) = t.server(&testutil::err(1045, "Access denied")).0 else {
            panic!()
        };
        let detail = o.detail.as_deref().unwrap();
        assert!(detail.starts_with(want), "{detail}");
        assert_eq!(o.result, CheckResult::LoginFailed);
    }
    // A key too small for the password: declined, not sent.
    let long = "p".repeat(200);
    let mut t = Talk::with_key(&long, None, MysqlServerKey::FromServer);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    let small = {
        use rsa::pkcs8::EncodePublicKey;
        let n = rsa::BoxedUint::from_be_slice(&[0xff; 128], 1024).unwrap();
        let key = rsa::PublicKey::new(n, rsa::BoxedUint::from(65537u64)).unwrap();
        key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
    };
    assert_eq!(t.server(&[b"\x01", small.as_bytes()].concat()).1, DECLINE);
}

#[test]
fn cleartext_plugins_are_refused_without_sending_anything() {
    for plugin in ["mysql_clear_password", "dialog"] {
        for key in [MysqlServerKey::Refuse, MysqlServerKey::FromServer, testutil::pinned()] {
            let mut t = Talk::with_key("secret", None, key);
            t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
            let (r, sent) = t.server(&[b"\xfe", plugin.as_bytes(), b"\0"].concat());
            assert!(sent.is_empty());
            let Reply::Fail(o) = r else { panic!("{r:?}") };
            assert_eq!(o.result, CheckResult::LoginFailed);
            assert_eq!(
                o.detail.as_deref(),
                Some(format!("auth plugin \"{plugin}\" refused: it would send the password in clear").as_str())
            );
        }
    }
}

#[test]
fn server_text_in_reasons_is_cleaned_and_bounded() {
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    let evil = format!("Access denied\u{202e}\u{2066}\r\n\u{85}{}", "x".repeat(1000));
    let Reply::Fail(o) = t.server(&testutil::err(1045, &evil)).0 else {
        panic!()
    };
    let detail = o.detail.as_deref().unwrap();
    assert!(detail.starts_with("access denied?????xxx"), "{detail}");
    assert!(detail.ends_with("..."), "{detail}");
    assert!(detail.chars().count() <= crate::health::mysql::text::MAX_TEXT + 3);
    // A plugin name.
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    let Reply::Fail(o) = t.server(b"\xfeevil\xe2\x80\xae\x1b\0abcdefghijklmnopqrst\0").0 else {
        panic!()
    };
    assert_eq!(o.detail.as_deref(), Some("auth plugin \"evil??\" is not supported"));
}

#[test]
fn auth_switch_to_native_uses_the_new_nonce() {
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    let nonce2 = *b"ABCDEFGHIJKLMNOPQRST";
    let (_, data) = t.server(&[&b"\xfemysql_native_password\0"[..], &nonce2, b"\0"].concat());
    assert_eq!(data, scramble_native(b"secret", &nonce2));
    assert_eq!(t.server(OK).0, ok_outcome());
    // A plugin it cannot speak with a password: a failed login that says so.
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    let Reply::Fail(o) = t.server(b"\xfeclient_ed25519\0abcdefghijklmnopqrstuvwxyz012345\0").0 else {
        panic!()
    };
    assert_eq!(o.result, CheckResult::LoginFailed);
    assert_eq!(
        o.detail.as_deref(),
        Some("auth plugin \"client_ed25519\" is not supported")
    );
    // ...and without one, an empty answer as before.
    let mut t = Talk::new("", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    assert_eq!(t.server(b"\xfeclient_ed25519\0xyz\0").1, b"");
}

#[test]
fn err_greetings_and_denied_logins_fail_with_the_server_message() {
    let mut t = Talk::new("secret", None);
    let Reply::Fail(o) = t.server(&testutil::err(1040, "Too many connections")).0 else {
        panic!()
    };
    assert_eq!(
        (o.result, o.detail.as_deref()),
        (CheckResult::LoginFailed, Some("too many connections"))
    );
    let mut t = Talk::with_key("wrong", None, MysqlServerKey::FromServer);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    t.server(&[b"\x01", PUBLIC_PEM.as_bytes()].concat());
    let denied = testutil::err(1045, "Access denied for user 'check'@'localhost' (using password: YES)");
    let Reply::Fail(o) = t.server(&denied).0 else { panic!() };
    assert_eq!(
        o.detail.as_deref(),
        Some("access denied for user 'check'@'localhost' (using password: YES)")
    );
    assert!(!t.s.authenticated(), "no COM_QUIT before authentication");
}

#[test]
fn a_primary_check_queries_read_only_and_quits_either_way() {
    for (read_only, want) in [("OFF", None), ("ON", Some("role: read-only"))] {
        let mut t = Talk::new("", Some(Role::Primary));
        t.server(&testutil::greeting(NATIVE, &NONCE));
        let (_, query) = t.server(OK);
        assert!(query.starts_with(b"\x03SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only'"));
        let (r, _) = t.script(testutil::variables(read_only, Some(read_only)));
        let Reply::Quit(o) = r else { panic!("{r:?}") };
        assert_eq!(o.detail.as_deref(), want);
        let role = if want.is_some() { Role::Replica } else { Role::Primary };
        assert_eq!(o.role, Some(role));
    }
}

#[test]
fn a_replica_check_falls_back_to_show_slave_status_and_reports_lag() {
    let mut t = Talk::new("", Some(Role::Replica));
    t.server(&testutil::greeting(NATIVE, &NONCE));
    t.server(OK);
    assert_eq!(t.script(testutil::variables("ON", None)).1, b"\x03SHOW REPLICA STATUS");
    assert_eq!(t.server(&testutil::err(1064, "syntax")).1, b"\x03SHOW SLAVE STATUS");
    let (r, _) = t.script(testutil::replica_status("Yes", "Yes", Some("2")));
    assert_eq!(
        r,
        Reply::Quit(CheckOutcome {
            role: Some(Role::Replica),
            replication_lag: Some(Duration::from_secs(2)),
            ..CheckResult::Ok.into()
        })
    );
}

#[test]
fn broken_servers_are_bounded() {
    let mut t = Talk::new("", None);
    t.seq = 3;
    assert_eq!(
        t.server(&testutil::greeting(NATIVE, &NONCE)).0,
        protocol("packets out of sequence")
    );
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(NATIVE, &NONCE));
    for _ in 0..MAX_AUTH_SWITCHES {
        assert!(matches!(
            t.server(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0").0,
            Reply::Send(_)
        ));
    }
    assert_eq!(t.server(b"\xfe").0, protocol("too many auth switches"));
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    let replies: Vec<Reply> = (0..20).map(|_| t.server(&[0x01, 0x03]).0).collect();
    assert_eq!(
        replies.iter().filter(|r| **r == Reply::Wait).count(),
        usize::from(MAX_AUTH_PACKETS)
    );
    assert_eq!(replies.last(), Some(&protocol("packet after the end")));
    let mut t = Talk::new("", None);
    let Reply::Fail(o) = t.server(b"HTTP/1.1 400").0 else {
        panic!()
    };
    assert_eq!(o.result, CheckResult::UnexpectedReply);
}

/// A full replica session, server side, to mutate.
fn replica_script() -> Vec<Vec<u8>> {
    let mut s = vec![testutil::greeting(CACHING_SHA2, &NONCE), vec![0x01, 0x03], OK.to_vec()];
    s.extend(testutil::variables("ON", Some("OFF")));
    s.push(testutil::err(1064, "syntax"));
    s.extend(testutil::replica_status("Yes", "Yes", Some("1")));
    s
}

/// Property: random and mutated servers never panic the session, get at
/// most a bounded number of answers, and end it with one outcome.
#[test]
fn random_and_mutated_servers_never_panic() {
    let mut rng = Rng::with_seed(11);
    let base = replica_script();
    for round in 0..5_000 {
        let mut script = base.clone();
        for _ in 0..=rng.below(3) {
            let i = rng.below(script.len() as u64) as usize;
            let p = &mut script[i];
            let at = rng.below(p.len() as u64 + 1) as usize;
            match (round + rng.below(4)) % 4 {
                0 if at < p.len() => p[at] = rng.next_u64() as u8,
                1 => p.insert(at, rng.next_u64() as u8),
                2 => p.truncate(at),
                _ => *p = (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect(),
            }
        }
        let mut s = Session::new(Some(Role::Replica));
        let hc = testutil::hc("pw", Some(Role::Replica));
        let (mut seq, mut sends) = (0u8, 0);
        for payload in script {
            match s.on_packet(&Packet { seq, payload }, &hc) {
                Reply::Send(out) => {
                    sends += 1;
                    seq = out.get(3).map_or(0, |s| s.wrapping_add(1));
                }
                Reply::Wait => seq = seq.wrapping_add(1),
                Reply::Quit(_) | Reply::Fail(_) => break,
            }
        }
        assert!(sends <= 6, "{sends} answers");
    }
}
