//! Health flow, one check: drives a probe's socket through the connect, then
//! `send`/`expect` or the MySQL login, doing a bounded amount of work per
//! call so that a backend streaming bytes cannot hold the event loop.

use std::io::{ErrorKind, Read};
use std::time::Instant;

use mio::net::TcpStream;

use crate::balance::health::CheckResult;
use crate::config::HealthCheck;
use crate::health::mysql::{Login, PacketReader, TooLong};
use crate::io::pump::{self, Flush};
use crate::io::socket;

/// Most reply bytes a `send`/`expect` check keeps while looking for `expect`.
const MAX_REPLY: usize = 16 * 1024;
/// Bytes asked for per read.
const READ_CHUNK: usize = 4096;
/// Socket operations (reads, writes, packets handled) per call.
const MAX_STEPS: u32 = 32;
/// Bytes read per call.
const MAX_BYTES: usize = 64 * 1024;

/// What a call to [`Check::advance`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// The check is decided.
    Done(CheckResult),
    /// The socket has nothing more for now; readiness will come.
    Wait,
    /// The budget ran out with work left: the socket may hold more than the
    /// next readiness event will announce (edge-triggered), so the caller
    /// must call again in a later loop turn.
    Yield,
}

/// One running check: its socket and how far it got.
pub struct Check {
    stream: TcpStream,
    phase: Phase,
}

enum Phase {
    /// Non-blocking connect in progress.
    Connecting,
    /// Writing `send` (bytes written so far).
    Sending(usize),
    /// Reading the reply (bytes received so far).
    Reading(Vec<u8>),
    /// Logging in to MySQL.
    Mysql(Box<MysqlIo>),
}

/// The MySQL login's socket side: packets in, answers out.
#[derive(Default)]
struct MysqlIo {
    login: Login,
    reader: PacketReader,
    /// The answer being written, and how much of it is out.
    out: Vec<u8>,
    written: usize,
}

/// What one step did.
enum Step {
    /// Made progress in the same phase.
    Stay,
    /// Moved on to another phase.
    Become(Phase),
    Wait,
    Yield,
    Done(CheckResult),
}

/// Work left in this call.
struct Budget {
    steps: u32,
    bytes: usize,
}

impl Check {
    /// A check on a socket whose connect is in progress (already registered).
    pub fn new(stream: TcpStream) -> Check {
        Check {
            stream,
            phase: Phase::Connecting,
        }
    }

    /// Moves the check on as far as the socket and the budget allow. A check
    /// past `deadline` has timed out, whatever data keeps arriving.
    pub fn advance(&mut self, hc: &HealthCheck, now: Instant, deadline: Instant) -> Progress {
        let budget = Budget {
            steps: MAX_STEPS,
            bytes: MAX_BYTES,
        };
        self.advance_within(hc, now, deadline, budget)
    }

    fn advance_within(&mut self, hc: &HealthCheck, now: Instant, deadline: Instant, mut budget: Budget) -> Progress {
        if now >= deadline {
            return Progress::Done(CheckResult::TimedOut);
        }
        loop {
            if budget.steps == 0 {
                return Progress::Yield;
            }
            budget.steps -= 1;
            let stream = &mut self.stream;
            let step = match &mut self.phase {
                Phase::Connecting => connecting(stream, hc),
                Phase::Sending(written) => sending(stream, written, hc),
                Phase::Reading(got) => reading(stream, got, &hc.expect, &mut budget),
                Phase::Mysql(io) => mysql(stream, io, hc.mysql_user.as_deref().unwrap_or(""), &mut budget),
            };
            match step {
                Step::Stay => {}
                Step::Become(next) => self.phase = next,
                Step::Wait => return Progress::Wait,
                Step::Yield => return Progress::Yield,
                Step::Done(result) => return Progress::Done(result),
            }
        }
    }
}

fn connecting(stream: &TcpStream, hc: &HealthCheck) -> Step {
    match socket::connect_finished(stream, false) {
        Ok(true) if hc.mysql_user.is_some() => Step::Become(Phase::Mysql(Box::default())),
        Ok(true) => Step::Become(Phase::Sending(0)),
        Ok(false) => Step::Wait,
        Err(e) => Step::Done(CheckResult::from_io(&e)),
    }
}

fn sending(stream: &mut TcpStream, written: &mut usize, hc: &HealthCheck) -> Step {
    let (n, r) = pump::write_all_nb(hc.send.get(*written..).unwrap_or_default(), stream);
    *written += n;
    match r {
        Ok(Flush::Drained) if hc.expect.is_empty() => Step::Done(CheckResult::Ok),
        Ok(Flush::Drained) => Step::Become(Phase::Reading(Vec::new())),
        Ok(Flush::WouldBlock) => Step::Wait,
        Err(e) => Step::Done(CheckResult::from_io(&e)),
    }
}

/// One read of the `expect` check's reply.
fn reading(stream: &mut TcpStream, got: &mut Vec<u8>, expect: &[u8], budget: &mut Budget) -> Step {
    let mut buf = [0u8; READ_CHUNK];
    let n = match read_some(stream, &mut buf, budget) {
        Ok(n) => n,
        Err(step) => return step,
    };
    if n == 0 {
        // A peer that closed after a wrong reply gave a wrong reply.
        return Step::Done(if got.is_empty() {
            CheckResult::Closed
        } else {
            CheckResult::UnexpectedReply
        });
    }
    // Search only where a match could newly end.
    let from = got.len().saturating_sub(expect.len().saturating_sub(1));
    got.extend_from_slice(&buf[..n]);
    if contains(&got[from..], expect) {
        Step::Done(CheckResult::Ok)
    } else if got.len() > MAX_REPLY {
        Step::Done(CheckResult::UnexpectedReply)
    } else {
        Step::Stay
    }
}

/// One step of the MySQL login: write out the pending answer, or answer the
/// next buffered packet, or read more.
fn mysql(stream: &mut TcpStream, io: &mut MysqlIo, user: &str, budget: &mut Budget) -> Step {
    if io.written < io.out.len() {
        return mysql_write(stream, io);
    }
    match io.reader.next_packet() {
        Err(TooLong(_)) => Step::Done(CheckResult::Protocol("packet too long")),
        Ok(Some(packet)) => match io.login.on_packet(&packet, user) {
            Ok(answer) => {
                io.out = answer;
                io.written = 0;
                Step::Stay
            }
            Err(result) => Step::Done(result),
        },
        Ok(None) => {
            let mut buf = [0u8; READ_CHUNK];
            match read_some(stream, &mut buf, budget) {
                Ok(0) if io.reader.is_empty() => Step::Done(CheckResult::Closed),
                Ok(0) => Step::Done(CheckResult::UnexpectedReply),
                Ok(n) => {
                    io.reader.extend(&buf[..n]);
                    Step::Stay
                }
                Err(step) => step,
            }
        }
    }
}

fn mysql_write(stream: &mut TcpStream, io: &mut MysqlIo) -> Step {
    let (n, r) = pump::write_all_nb(io.out.get(io.written..).unwrap_or_default(), stream);
    io.written += n;
    match r {
        Ok(Flush::Drained) if io.login.quitting() => Step::Done(CheckResult::Ok),
        Ok(Flush::Drained) => Step::Stay,
        Ok(Flush::WouldBlock) => Step::Wait,
        Err(e) => Step::Done(CheckResult::from_io(&e)),
    }
}

/// One read within the budget: the byte count (0 at end of stream), or the
/// step to end this call with.
fn read_some(stream: &mut TcpStream, buf: &mut [u8], budget: &mut Budget) -> Result<usize, Step> {
    let want = buf.len().min(budget.bytes);
    if want == 0 {
        return Err(Step::Yield);
    }
    loop {
        match stream.read(&mut buf[..want]) {
            Ok(n) => {
                budget.bytes -= n;
                return Ok(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(Step::Wait),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Step::Done(CheckResult::from_io(&e))),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

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
        (Check::new(TcpStream::from_std(client)), server)
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
        assert_eq!(p, Progress::Done(CheckResult::TimedOut));
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
        assert_eq!(run(&mut check, &hc, 2).0, Progress::Done(CheckResult::UnexpectedReply));
    }

    #[test]
    fn auth_switches_back_to_back_fail_the_login_within_one_call() {
        let (mut check, mut server) = pair();
        let mut bytes = crate::health::mysql::frame(0, b"\x0a5.7.99\x00");
        for i in 0..100u8 {
            bytes.extend(crate::health::mysql::frame(2 + 2 * i, b"\xfemysql_native_password\x00"));
        }
        server.write_all(&bytes).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (p, calls) = run(&mut check, &mysql_hc(), 10);
        assert_eq!(p, Progress::Done(CheckResult::Protocol("too many auth switches")));
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_check_out_of_budget_yields_and_resumes() {
        let (mut check, mut server) = pair();
        let mut bytes = crate::health::mysql::frame(0, b"\x0a5.7.99\x00");
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
        assert_eq!(last, Progress::Done(CheckResult::Ok));
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
        assert_eq!(p, Progress::Done(CheckResult::Protocol("packet too long")));
    }

    #[test]
    fn a_login_split_across_reads_and_packed_into_one_passes() {
        let (mut check, mut server) = pair();
        let hc = mysql_hc();
        let greeting = crate::health::mysql::frame(0, b"\x0a5.7.99\x00");
        server.write_all(&greeting[..3]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(run(&mut check, &hc, 1).0, Progress::Wait);
        // The rest of the greeting, an auth switch and the OK in one write.
        let mut rest = greeting[3..].to_vec();
        rest.extend(crate::health::mysql::frame(2, b"\xfe"));
        rest.extend(crate::health::mysql::frame(4, b"\x00\x00\x00"));
        server.write_all(&rest).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(run(&mut check, &hc, 10).0, Progress::Done(CheckResult::Ok));
    }
}
