//! Health flow, one check, tests: bounded work per call over real loopback
//! sockets, MySQL sessions split across reads or packed into one.

use super::*;
use crate::health::mysql::auth::NATIVE;
use crate::health::mysql::testutil;
use std::io::Write;
use std::time::Duration;

/// A MySQL greeting, as packet 0.
fn greeting_packet() -> Vec<u8> {
    crate::health::mysql::frame(0, &testutil::greeting(NATIVE, &testutil::NONCE))
}

#[test]
fn contains_finds_needles() {
    assert!(contains(b"+PONG\r\n", b"PONG"));
    assert!(!contains(b"-ERR", b"PONG"));
    assert!(contains(b"anything", b""));
    assert!(!contains(b"PO", b"PONG"));
}

/// A connected (check, server side) pair on loopback.
fn pair() -> (Check, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    client.set_nonblocking(true).unwrap();
    let (server, _) = l.accept().unwrap();
    (Check::new(TcpStream::from_std(client), None), server)
}

fn mysql_hc() -> HealthCheck {
    HealthCheck {
        mysql_user: Some("check".into()),
        ..HealthCheck::default()
    }
}

/// Calls `advance` until it stops yielding, up to `calls` times.
fn run(check: &mut Check, hc: &HealthCheck, calls: usize) -> (Progress, usize) {
    let now = Instant::now();
    for i in 1..=calls {
        let p = check.advance(hc, now, now + Duration::from_secs(60));
        if p != Progress::Yield {
            return (p, i);
        }
    }
    (Progress::Yield, calls)
}

#[test]
fn past_its_deadline_a_check_times_out() {
    let (mut check, _server) = pair();
    let now = Instant::now();
    let p = check.advance(&HealthCheck::default(), now, now);
    assert_eq!(p, Progress::Done(CheckResult::TimedOut.into()));
}

#[test]
fn a_stream_of_bytes_is_read_in_bounded_slices() {
    let (mut check, mut server) = pair();
    let hc = HealthCheck {
        expect: b"never".to_vec(),
        ..HealthCheck::default()
    };
    assert_eq!(run(&mut check, &hc, 1).0, Progress::Wait);
    server.write_all(&[b'x'; MAX_REPLY / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    // Sixteen KiB in 4 KiB reads fit one call's budget.
    assert_eq!(run(&mut check, &hc, 1).0, Progress::Wait);
    server.write_all(&[b'x'; MAX_REPLY]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        run(&mut check, &hc, 2).0,
        Progress::Done(CheckResult::UnexpectedReply.into())
    );
}

#[test]
fn auth_switches_back_to_back_fail_the_login_within_one_call() {
    let (mut check, mut server) = pair();
    let mut bytes = greeting_packet();
    for i in 0..100u8 {
        bytes.extend(crate::health::mysql::frame(2 + 2 * i, b"\xfemysql_native_password\x00"));
    }
    server.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (p, calls) = run(&mut check, &mysql_hc(), 10);
    assert_eq!(
        p,
        Progress::Done(CheckResult::Protocol("too many auth switches").into())
    );
    assert_eq!(calls, 1);
}

#[test]
fn a_check_out_of_budget_yields_and_resumes() {
    let (mut check, mut server) = pair();
    let mut bytes = greeting_packet();
    bytes.extend(crate::health::mysql::frame(2, b"\x00\x00\x00"));
    server.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (hc, now) = (mysql_hc(), Instant::now());
    let small = || Budget { steps: 2, bytes: 8 };
    let mut calls = 1;
    let last = loop {
        match check.advance_within(&hc, now, now + Duration::from_secs(60), small()) {
            Progress::Yield => calls += 1,
            other => break other,
        }
        assert!(calls < 100, "no end in sight");
    };
    assert_eq!(last, Progress::Done(CheckResult::Ok.into()));
    // Connect, 22 bytes 8 at a time, 2 packets and 2 answers: 8 steps.
    assert!(calls >= 4, "{calls} calls");
    drop(check);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut server, &mut got).unwrap();
    assert!(got.ends_with(&crate::health::mysql::QUIT), "{got:?}");
}

#[test]
fn an_oversized_mysql_packet_fails_the_check() {
    let (mut check, mut server) = pair();
    server.write_all(&[0xff, 0xff, 0xff, 0]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (p, _) = run(&mut check, &mysql_hc(), 10);
    let Progress::Done(outcome) = p else { panic!("{p:?}") };
    assert_eq!(outcome.result, CheckResult::Protocol("packet too long"));
    assert_eq!(
        outcome.detail.as_deref(),
        Some("packet too long (16777215 bytes, at most 65536)")
    );
}

#[test]
fn a_login_split_across_reads_and_packed_into_one_passes() {
    let (mut check, mut server) = pair();
    let hc = mysql_hc();
    let greeting = greeting_packet();
    server.write_all(&greeting[..3]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(run(&mut check, &hc, 1).0, Progress::Wait);
    // The rest of the greeting, an auth switch and the OK in one write.
    let mut rest = greeting[3..].to_vec();
    rest.extend(crate::health::mysql::frame(2, b"\xfe"));
    rest.extend(crate::health::mysql::frame(4, b"\x00\x00\x00"));
    server.write_all(&rest).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(run(&mut check, &hc, 10).0, Progress::Done(CheckResult::Ok.into()));
}

/// A replica check whose whole server side arrives at once, with a
/// `SHOW SLAVE STATUS` of 100 columns: more packets than one call's
/// budget, so the check yields and resumes with the leftover bytes, then
/// quits with the role and lag it saw.
#[test]
fn a_long_replica_session_yields_and_resumes_with_its_leftover_bytes() {
    use crate::config::Role;
    use crate::health::mysql::frame;
    let (mut check, mut server) = pair();
    check.want = Some(Role::Replica);
    let mut names: Vec<String> = (0..97).map(|i| format!("Filler_{i}")).collect();
    names.extend(["Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master"].map(String::from));
    let columns: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut row: Vec<Option<&str>> = vec![Some("x"); 97];
    row.extend([Some("Yes"), Some("Yes"), Some("4")]);
    let mut bytes = greeting_packet();
    bytes.extend(frame(2, testutil::OK));
    for (i, p) in testutil::variables("ON", None).iter().enumerate() {
        bytes.extend(frame(i as u8 + 1, p));
    }
    for (i, p) in testutil::result_set(&columns, &[&row]).iter().enumerate() {
        bytes.extend(frame(i as u8 + 1, p));
    }
    // The server answers before it is asked: the check still takes one
    // answer per question, in order.
    server.write_all(&bytes).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let hc = HealthCheck {
        role: Some(Role::Replica),
        ..mysql_hc()
    };
    let (p, calls) = run(&mut check, &hc, 50);
    let Progress::Done(outcome) = p else { panic!("{p:?}") };
    assert_eq!(outcome.result, CheckResult::Ok, "{outcome:?}");
    assert_eq!(outcome.role, Some(Role::Replica));
    assert_eq!(outcome.replication_lag, Some(Duration::from_secs(4)));
    assert!(calls >= 3, "{calls} calls for over 100 packets");
    drop(check);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut server, &mut got).unwrap();
    assert!(got.ends_with(&crate::health::mysql::QUIT), "quits at the end");
}
