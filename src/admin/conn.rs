//! Admin API, one connection: the request read and checked (token for TCP), then handed over as a [`Command`] or answered with its error.

use std::time::Instant;

use super::attempts::{Attempts, Kind};
use super::auth::{Limiter, Verdict};
use super::request::{self, Parsed, Request, MAX_INPUT};
use super::stream::{Address, Peer, Stream};
use super::Command;
use crate::config::AdminToken;
use crate::stats::wire::{Step, Wire};
use crate::stats::{Answer, Budget};

/// An admin client, from accept to close.
pub struct Conn {
    pub wire: Wire<Stream>,
    pub peer: Peer,
    /// A parked reload request: the count of finished reloads it waits for
    /// (0: not waiting).
    pub waits_for: u64,
}

/// What reading left to do.
pub enum Next {
    /// Waits for more of the request.
    Wait,
    /// Out of budget this turn.
    Yield,
    /// The request is taken: carry this out and answer.
    Command(Command),
    /// An answer is ready to write.
    Out,
}

/// What requests are checked against.
pub struct Access<'a> {
    pub token: Option<&'a AdminToken>,
    pub limiter: &'a mut Limiter,
    /// Where refusals are counted for the log.
    pub attempts: &'a mut Attempts,
}

impl Conn {
    /// Reads the request; once it is complete, its command, or its error
    /// as the answer to write. A status request waits for a render in the
    /// turn's budget.
    pub fn read_request(&mut self, budget: &mut Budget, access: &mut Access<'_>, now: Instant) -> Step<Next> {
        if budget.spent() {
            return Ok(Next::Yield);
        }
        let eof = self.wire.read_input(MAX_INPUT, budget)?;
        let answer = match request::parse(&self.wire.input, eof) {
            Parsed::Wait => return Ok(Next::Wait),
            Parsed::Close => return Err(()),
            Parsed::Answer(a) => a,
            Parsed::Request(req) => match self.check(&req, access, now).and_then(|()| request::route(&req)) {
                Ok(Command::Status) if !budget.take_render() => return Ok(Next::Yield),
                Ok(cmd) => return Ok(Next::Command(cmd)),
                Err(a) => a,
            },
        };
        budget.spend_request();
        self.wire.send(&answer, false);
        Ok(Next::Out)
    }

    /// A TCP request must carry the token; a unix one is let in by the
    /// socket file's permissions. Refusals are logged with the peer, never
    /// with what was sent: the first of an address at once, the rest in
    /// the summary of `attempts`.
    fn check(&self, req: &Request<'_>, access: &mut Access<'_>, now: Instant) -> Result<(), Answer> {
        let from = self.peer.address();
        if from == Address::Unix {
            return Ok(());
        }
        let peer = self.peer;
        let verdict = access.limiter.check(access.token, req.bearer, from, now);
        let (kind, why) = match verdict {
            Verdict::Ok => return Ok(()),
            Verdict::Slowed => (Kind::Slowed, "too many failed attempts; answered 429"),
            Verdict::Missing => (Kind::Missing, "unauthorized (no bearer token)"),
            Verdict::Wrong => (Kind::Wrong, "unauthorized (wrong token)"),
        };
        if access.attempts.note(from, kind, now) {
            log::warn!(
                "admin: peer={peer} {why} {} {} (more from {from} are summed up every {} s)",
                req.method,
                printable(req.path),
                super::attempts::INTERVAL.as_secs()
            );
        }
        if verdict == Verdict::Slowed {
            return Err(request::error(429, "too many failed attempts; try again in a second"));
        }
        Err(request::with_headers(
            401,
            "WWW-Authenticate: Bearer\r\n",
            &serde_json::json!({ "error": "missing or wrong token" }),
        ))
    }
}

/// A request path as it may appear in a log line: at most 64 characters,
/// anything unusual replaced.
fn printable(path: &str) -> String {
    path.chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}
