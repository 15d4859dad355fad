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
        Talk {
            s: Session::new(want),
            hc: testutil::hc(password, want),
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

#[test]
fn caching_sha2_full_path_over_rsa() {
    use rsa::pkcs8::DecodePrivateKey;
    let pem = PUBLIC_PEM;
    let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    assert_eq!(t.server(&[0x01, 0x04]).1, [0x02], "asks for the public key");
    let (_, enc) = t.server(&[b"\x01", pem.as_bytes()].concat());
    let plain = key.oaep_decrypt::<sha1::Sha1>(&enc).unwrap();
    let unmasked: Vec<u8> = plain.iter().zip(NONCE.iter().cycle()).map(|(a, b)| a ^ b).collect();
    assert_eq!(unmasked, b"secret\0");
    assert_eq!(t.server(OK).0, ok_outcome());
    // A second request for full authentication is refused.
    let mut t = Talk::new("secret", None);
    t.server(&testutil::greeting(CACHING_SHA2, &NONCE));
    t.server(&[0x01, 0x04]);
    t.server(&[b"\x01", pem.as_bytes()].concat());
    assert_eq!(t.server(&[0x01, 0x04]).0, protocol("full authentication asked twice"));
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
    let mut t = Talk::new("wrong", None);
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
