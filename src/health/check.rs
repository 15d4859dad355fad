//! Health flow, one check: drives a probe's socket through the connect, then
//! `send`/`expect` or the MySQL session, doing a bounded amount of work per
//! call (steps and bytes; leftover bytes stay buffered for the next call)
//! so that a backend streaming bytes cannot hold the event loop.

use std::io::{ErrorKind, Read};
use std::time::Instant;

use mio::net::TcpStream;

use crate::balance::health::{CheckOutcome, CheckResult};
use crate::config::{HealthCheck, Role};
use crate::health::mysql::{PacketReader, Reply, Session, TooLong, MAX_PAYLOAD, QUIT};
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
    Done(CheckOutcome),
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
    /// MySQL: the role the server must be in (`None`: login only).
    want: Option<Role>,
}

enum Phase {
    /// Non-blocking connect in progress.
    Connecting,
    /// Writing `send` (bytes written so far).
    Sending(usize),
    /// Reading the reply (bytes received so far).
    Reading(Vec<u8>),
    /// A MySQL session.
    Mysql(Box<MysqlIo>),
}

/// The MySQL session's socket side: packets in, answers out.
struct MysqlIo {
    session: Session,
    reader: PacketReader,
    /// The answer being written, and how much of it is out.
    out: Vec<u8>,
    written: usize,
    /// Set once COM_QUIT is the answer: the outcome, when it is out.
    ending: Option<CheckOutcome>,
}

/// What one step did.
enum Step {
    /// Made progress in the same phase.
    Stay,
    /// Moved on to another phase.
    Become(Phase),
    Wait,
    Yield,
    Done(CheckOutcome),
}

impl Step {
    fn done(result: CheckResult) -> Step {
        Step::Done(result.into())
    }
}

/// Work left in this call.
struct Budget {
    steps: u32,
    bytes: usize,
}

impl Check {
    /// A check on a socket whose connect is in progress (already
    /// registered). `want`: for a MySQL check, the role the server must be
    /// in to pass (`None`: logging in, plus `mysql_query`, is enough); the
    /// prober passes `hc.role`, or `None` where only a login matters.
    pub fn new(stream: TcpStream, want: Option<Role>) -> Check {
        Check {
            stream,
            phase: Phase::Connecting,
            want,
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
            return Progress::Done(CheckResult::TimedOut.into());
        }
        loop {
            if budget.steps == 0 {
                return Progress::Yield;
            }
            budget.steps -= 1;
            let stream = &mut self.stream;
            let step = match &mut self.phase {
                Phase::Connecting => connecting(stream, hc, self.want),
                Phase::Sending(written) => sending(stream, written, hc),
                Phase::Reading(got) => reading(stream, got, &hc.expect, &mut budget),
                Phase::Mysql(io) => mysql(stream, io, hc, &mut budget),
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

fn connecting(stream: &TcpStream, hc: &HealthCheck, want: Option<Role>) -> Step {
    match socket::connect_finished(stream, false) {
        Ok(true) if hc.mysql_user.is_some() => Step::Become(Phase::Mysql(Box::new(MysqlIo {
            session: Session::new(want),
            reader: PacketReader::new(),
            out: Vec::new(),
            written: 0,
            ending: None,
        }))),
        Ok(true) => Step::Become(Phase::Sending(0)),
        Ok(false) => Step::Wait,
        Err(e) => Step::done(CheckResult::from_io(&e)),
    }
}

fn sending(stream: &mut TcpStream, written: &mut usize, hc: &HealthCheck) -> Step {
    let (n, r) = pump::write_all_nb(hc.send.get(*written..).unwrap_or_default(), stream);
    *written += n;
    match r {
        Ok(Flush::Drained) if hc.expect.is_empty() => Step::done(CheckResult::Ok),
        Ok(Flush::Drained) => Step::Become(Phase::Reading(Vec::new())),
        Ok(Flush::WouldBlock) => Step::Wait,
        Err(e) => Step::done(CheckResult::from_io(&e)),
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
        return Step::done(if got.is_empty() {
            CheckResult::Closed
        } else {
            CheckResult::UnexpectedReply
        });
    }
    // Search only where a match could newly end.
    let from = got.len().saturating_sub(expect.len().saturating_sub(1));
    got.extend_from_slice(&buf[..n]);
    if contains(&got[from..], expect) {
        Step::done(CheckResult::Ok)
    } else if got.len() > MAX_REPLY {
        Step::done(CheckResult::UnexpectedReply)
    } else {
        Step::Stay
    }
}

/// One step of the MySQL session: write out the pending answer, or answer
/// the next buffered packet, or read more.
fn mysql(stream: &mut TcpStream, io: &mut MysqlIo, hc: &HealthCheck, budget: &mut Budget) -> Step {
    if io.written < io.out.len() {
        return mysql_write(stream, io);
    }
    match io.reader.next_packet() {
        Err(TooLong(n)) => Step::Done(CheckOutcome::with_detail(
            CheckResult::Protocol("packet too long"),
            format!("packet too long ({n} bytes, at most {MAX_PAYLOAD})"),
        )),
        Ok(Some(packet)) => match io.session.on_packet(&packet, hc) {
            Reply::Send(answer) => {
                (io.out, io.written) = (answer, 0);
                Step::Stay
            }
            Reply::Wait => Step::Stay,
            Reply::Quit(outcome) => {
                (io.out, io.written) = (QUIT.to_vec(), 0);
                io.ending = Some(outcome);
                Step::Stay
            }
            Reply::Fail(outcome) => Step::Done(outcome),
        },
        Ok(None) => {
            let mut buf = [0u8; READ_CHUNK];
            match read_some(stream, &mut buf, budget) {
                Ok(0) if io.reader.is_empty() => Step::done(CheckResult::Closed),
                Ok(0) => Step::done(CheckResult::UnexpectedReply),
                Ok(n) => {
                    io.reader.extend(buf.get(..n).unwrap_or_default());
                    Step::Stay
                }
                Err(step) => step,
            }
        }
    }
}

/// Writes the pending answer; once COM_QUIT is out, the check is decided.
fn mysql_write(stream: &mut TcpStream, io: &mut MysqlIo) -> Step {
    let (n, r) = pump::write_all_nb(io.out.get(io.written..).unwrap_or_default(), stream);
    io.written += n;
    match r {
        Ok(Flush::Drained) => match io.ending.take() {
            Some(outcome) => Step::Done(outcome),
            None => Step::Stay,
        },
        Ok(Flush::WouldBlock) => Step::Wait,
        Err(e) => Step::done(CheckResult::from_io(&e)),
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
            Err(e) => return Err(Step::done(CheckResult::from_io(&e))),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
