//! Admin API, listen and accept: the listeners, a bounded set of connection slots (per listener and per address) with the stats port's eviction, the turn's budget, and the requests handed to the loop.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Interest, Registry};
use slab::Slab;

use super::attempts::{Attempts, Kind};
use super::auth::Limiter;
use super::conn::{Access, Conn, Next};
use super::listen::UnixSocket;
use super::stream::{Address, Peer, Stream};
use super::Command;
use crate::config::AdminToken;
use crate::io::socket;
use crate::stats::wire::{self, Progress, Stage, Wire, EVICT_MIN_AGE};
use crate::stats::{Answer, Budget};
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// Connections open at once per listener (TCP, unix).
pub const MAX_PER_LISTENER: usize = 32;
/// Connections open at once from one TCP address (an IPv4 address, an
/// IPv6 /64), so that one address cannot hold the listener.
pub const MAX_PER_ADDRESS: usize = 4;
/// The slot named by the timer entry of the refused-attempts summary (no
/// connection has it: a slab never grows that far).
const SUMMARY_KEY: usize = usize::MAX;
/// Accepts per listener per loop turn.
const ACCEPT_BATCH: usize = 32;
/// Time a client has to send its request and read the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a reload request waits for its outcome at most (the read has
/// its own, shorter deadline).
const PARK_TIMEOUT: Duration = Duration::from_secs(30);

/// A request the loop is to carry out, then answer with
/// [`AdminServer::respond`] (or park with [`AdminServer::park`]).
pub struct Ready {
    pub key: usize,
    pub id: u64,
    pub peer: Peer,
    pub command: Command,
}

/// Which listener a connection came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Tcp,
    Unix,
}

/// The admin listeners and their connections; without `[admin]` it has
/// neither and costs nothing.
///
/// Every connection answers one request and closes. Hostile clients are
/// bounded as on the stats port: the input is capped, each connection has
/// a deadline, each listener has [`MAX_PER_LISTENER`] slots and gives up
/// the slot of a connection that is done, else of the oldest one that has
/// sat on its slot for a while without a complete request, else of the
/// oldest one not reading its answer; with none of these, new clients wait
/// in the listen backlog. One loop turn does at most a [`Budget`] of work.
///
/// One address holds at most [`MAX_PER_ADDRESS`] TCP slots (the unix
/// socket's slots are shared as above, without a cap per client): a new
/// connection from an address at its cap takes the slot of that address's
/// own connection that is done, else of its oldest without a complete
/// request, however young, else of its oldest not reading its answer for
/// a while; with none of these, the new connection is closed at once. So a
/// slowloris from one address churns through its own slots and never makes
/// other clients wait in the backlog.
pub struct AdminServer {
    pub(super) tcp: Option<TcpListener>,
    /// The configured `admin.listen` (its port may be 0).
    pub(super) listen: Option<std::net::SocketAddr>,
    pub(super) unix: Option<UnixSocket>,
    pub(super) token: Option<AdminToken>,
    conns: Slab<(Origin, Conn)>,
    /// Connections waiting for the next turn's budget: (slot, id).
    queue: VecDeque<(usize, u64)>,
    ready: Vec<Ready>,
    limiter: Limiter,
    attempts: Attempts,
    budget: Budget,
    next_id: u64,
    /// Listeners with clients waiting (TCP, unix).
    pending: [bool; 2],
    /// A listener's slots are all taken and none can be given up yet
    /// (TCP, unix).
    blocked: [bool; 2],
}

impl AdminServer {
    /// A server with no listener yet (see `reconfigure`).
    pub fn idle(_now: Instant) -> AdminServer {
        AdminServer {
            tcp: None,
            listen: None,
            unix: None,
            token: None,
            conns: Slab::new(),
            queue: VecDeque::new(),
            ready: Vec::new(),
            limiter: Limiter::new(),
            attempts: Attempts::new(),
            budget: Budget::default(),
            next_id: 1,
            pending: [true, true],
            blocked: [false, false],
        }
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn socket_path(&self) -> Option<&std::path::Path> {
        self.unix.as_ref().map(|u| u.path())
    }

    /// A listener has clients waiting.
    pub fn set_pending(&mut self, unix: bool) {
        if let Some(p) = self.pending.get_mut(usize::from(unix)) {
            *p = true;
        }
    }

    /// Whether [`Self::accept`] has work.
    pub fn wants_accept(&self) -> bool {
        let ([tcp_pending, unix_pending], [tcp_blocked, unix_blocked]) = (self.pending, self.blocked);
        let tcp = tcp_pending && !tcp_blocked && self.tcp.is_some();
        let unix = unix_pending && !unix_blocked && self.unix.is_some();
        tcp || unix || !self.queue.is_empty()
    }

    /// Once per loop turn: steps the queued connections, then accepts
    /// waiting clients on both listeners.
    pub fn accept(&mut self, registry: &Registry, timers: &mut Timers, now: Instant) -> io::Result<()> {
        self.budget.begin(now);
        self.run_queue(timers, now);
        let tcp = self.accept_from(Origin::Tcp, registry, timers, now);
        let unix = self.accept_from(Origin::Unix, registry, timers, now);
        tcp.and(unix)
    }

    fn accept_from(
        &mut self,
        origin: Origin,
        registry: &Registry,
        timers: &mut Timers,
        now: Instant,
    ) -> io::Result<()> {
        let slot = usize::from(origin == Origin::Unix);
        for _ in 0..ACCEPT_BATCH {
            if !self.pending.get(slot).copied().unwrap_or(false) {
                return Ok(());
            }
            let full = self.count(origin) >= MAX_PER_LISTENER;
            let blocked = full && self.victim(origin, now).is_none();
            if let Some(b) = self.blocked.get_mut(slot) {
                *b = blocked;
            }
            if blocked {
                return Ok(());
            }
            let accepted = match (origin, &self.tcp, &self.unix) {
                (Origin::Tcp, Some(l), _) => l.accept().map(|(s, a)| (Stream::Tcp(s), Peer::Tcp(a))),
                (Origin::Unix, _, Some(u)) => u.listener.accept().map(|(s, _)| {
                    let peer = Peer::of_unix(&s);
                    (Stream::Unix(s), peer)
                }),
                _ => Err(ErrorKind::WouldBlock.into()),
            };
            let (stream, peer) = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Some(p) = self.pending.get_mut(slot) {
                        *p = false;
                    }
                    return Ok(());
                }
                Err(e) if socket::is_transient_accept_error(&e) => continue,
                Err(e) => return Err(e),
            };
            let from = peer.address();
            let cap = cap_of(from);
            if self.count_of(from) >= cap {
                let room = self.own_victim(from, now);
                let at_once = self.attempts.note(from, Kind::Crowded { cap }, now);
                self.arm_summary(timers);
                let what = if room.is_some() {
                    "closing its oldest"
                } else {
                    "closing this one"
                };
                if at_once {
                    log::warn!(
                        "admin: peer={peer} {from} has {cap} connections open, the most one address may; {what}"
                    );
                }
                match room {
                    Some(k) => {
                        self.conns.remove(k);
                    }
                    None => continue,
                }
            } else if full {
                if let Some(k) = self.victim(origin, now) {
                    log::debug!("admin: every slot taken, closing one to make room");
                    self.conns.remove(k);
                }
            }
            self.insert(origin, stream, peer, registry, timers, now);
        }
        Ok(())
    }

    /// A new connection takes a slot and is stepped at once.
    fn insert(
        &mut self,
        origin: Origin,
        mut stream: Stream,
        peer: Peer,
        registry: &Registry,
        timers: &mut Timers,
        now: Instant,
    ) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if registry
            .register(&mut stream, Target::AdminClient(key).token(), interest)
            .is_err()
        {
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let wire = Wire::new(id, stream, now, now + REQUEST_TIMEOUT);
        entry.insert((
            origin,
            Conn {
                wire,
                peer,
                waits_for: 0,
            },
        ));
        // First wake-up when the slot becomes evictable, then the deadline.
        timers.add(now + EVICT_MIN_AGE, TimerKind::AdminConn(key, id));
        self.step_or_queue(key, timers, now);
    }

    fn count(&self, origin: Origin) -> usize {
        self.conns.iter().filter(|(_, (o, _))| *o == origin).count()
    }

    fn victim(&self, origin: Origin, now: Instant) -> Option<usize> {
        let of_origin = self.conns.iter().filter(|(_, (o, _))| *o == origin);
        wire::victim(of_origin.map(|(k, (_, c))| (k, &c.wire)), now)
    }

    /// Connections of `from` that count against its cap: a request
    /// carried out and waiting for its outcome (a write to the state file,
    /// a reload) is the operator's, not a slowloris's.
    fn count_of(&self, from: Address) -> usize {
        self.conns
            .iter()
            .filter(|(_, (_, c))| c.peer.address() == from && !matches!(c.wire.stage, Stage::Parked))
            .count()
    }

    /// The slot `from` gives up for a new connection of its own when it
    /// is at its cap (see [`AdminServer`]).
    fn own_victim(&self, from: Address, now: Instant) -> Option<usize> {
        let own = self.conns.iter().filter(|(_, (_, c))| c.peer.address() == from);
        wire::own_victim(own.map(|(k, (_, c))| (k, &c.wire)), now)
    }

    /// Arms the summary's timer when a summary interval has begun.
    fn arm_summary(&mut self, timers: &mut Timers) {
        if let Some(at) = self.attempts.take_timer() {
            timers.add(at, TimerKind::AdminConn(SUMMARY_KEY, 0));
        }
    }

    /// Readiness on a connection.
    pub fn on_event(&mut self, key: usize, timers: &mut Timers, now: Instant) {
        self.budget.begin(now);
        self.step_or_queue(key, timers, now);
    }

    /// Steps connection `key` now, or queues it behind those already
    /// waiting for budget.
    fn step_or_queue(&mut self, key: usize, timers: &mut Timers, now: Instant) {
        if self.queue.is_empty() {
            self.step(key, timers, now);
        } else {
            self.enqueue(key);
        }
    }

    fn run_queue(&mut self, timers: &mut Timers, now: Instant) {
        for _ in 0..self.queue.len() {
            let Some((key, id)) = self.queue.pop_front() else { break };
            let Some((_, conn)) = self.conns.get_mut(key).filter(|(_, c)| c.wire.id == id) else {
                continue;
            };
            conn.wire.queued = false;
            self.step(key, timers, now);
        }
    }

    fn enqueue(&mut self, key: usize) {
        if let Some((_, conn)) = self.conns.get_mut(key).filter(|(_, c)| !c.wire.queued) {
            conn.wire.queued = true;
            self.queue.push_back((key, conn.wire.id));
        }
    }

    /// Reads, hands over a complete request, writes and drains, as far as
    /// the socket and the budget go.
    fn step(&mut self, key: usize, timers: &mut Timers, now: Instant) {
        let Some((_, conn)) = self.conns.get_mut(key) else {
            return;
        };
        let next = if matches!(conn.wire.stage, Stage::Reading) {
            let mut access = Access {
                token: self.token.as_ref(),
                limiter: &mut self.limiter,
                attempts: &mut self.attempts,
            };
            let next = conn.read_request(&mut self.budget, &mut access, now);
            // As `arm_summary` (a field borrow: `conn` is still held).
            if let Some(at) = self.attempts.take_timer() {
                timers.add(at, TimerKind::AdminConn(SUMMARY_KEY, 0));
            }
            next
        } else {
            Ok(Next::Out)
        };
        let out = match next {
            Ok(Next::Wait) => return,
            Ok(Next::Yield) => return self.enqueue(key),
            Ok(Next::Command(command)) => {
                self.budget.spend_request();
                conn.wire.stage = Stage::Parked;
                let (id, peer) = (conn.wire.id, conn.peer);
                self.ready.push(Ready { key, id, peer, command });
                return;
            }
            Ok(Next::Out) => conn
                .wire
                .step_out(&mut self.budget, timers, now, TimerKind::AdminConn(key, conn.wire.id)),
            Err(()) => Err(()),
        };
        match out {
            Ok(Progress::Yield) => self.enqueue(key),
            Ok(_) => {}
            Err(()) => {
                self.conns.remove(key);
                self.blocked = [false, false];
            }
        }
    }

    /// The requests taken since the last call, in order.
    pub fn take_ready(&mut self) -> Vec<Ready> {
        std::mem::take(&mut self.ready)
    }

    /// Answers the request of connection (`key`, `id`) and starts writing.
    pub fn respond(&mut self, key: usize, id: u64, answer: &Answer, timers: &mut Timers, now: Instant) {
        let Some((_, conn)) = self.conns.get_mut(key).filter(|(_, c)| c.wire.id == id) else {
            return;
        };
        conn.waits_for = 0;
        conn.wire.send(answer, false);
        self.budget.begin(now);
        self.step(key, timers, now);
    }

    /// Connection (`key`, `id`) waits until `waits_for` reloads have
    /// finished (see [`Self::reload_done`]).
    pub fn park(&mut self, key: usize, id: u64, waits_for: u64, timers: &mut Timers, now: Instant) {
        if let Some((_, conn)) = self.conns.get_mut(key).filter(|(_, c)| c.wire.id == id) {
            conn.waits_for = waits_for;
            conn.wire.deadline = now + PARK_TIMEOUT;
            timers.add(conn.wire.deadline, TimerKind::AdminConn(key, id));
        }
    }

    /// `done` reloads have finished, the last with `answer`: the parked
    /// requests that waited for it get it.
    pub fn reload_done(&mut self, done: u64, answer: &Answer, timers: &mut Timers, now: Instant) {
        let due: Vec<(usize, u64)> = self
            .conns
            .iter()
            .filter(|(_, (_, c))| c.waits_for != 0 && c.waits_for <= done)
            .map(|(k, (_, c))| (k, c.wire.id))
            .collect();
        for (key, id) in due {
            self.respond(key, id, answer, timers, now);
        }
    }

    /// A connection's timer entry: closes it at its deadline (a parked one
    /// is told its outcome did not come in time).
    pub fn on_timer(&mut self, key: usize, id: u64, now: Instant, timers: &mut Timers) {
        if key == SUMMARY_KEY {
            return self.attempts.on_timer(now);
        }
        // A slot may have become evictable.
        self.blocked = [false, false];
        let Some((_, conn)) = self.conns.get(key).filter(|(_, c)| c.wire.id == id) else {
            return;
        };
        if conn.wire.deadline > now {
            timers.add(conn.wire.deadline, TimerKind::AdminConn(key, id));
        } else if conn.waits_for != 0 {
            let late = super::request::error(503, "the reload has not finished in time; see the log");
            self.respond(key, id, &late, timers, now);
        } else {
            self.conns.remove(key);
        }
    }

    /// Connection (`key`, `id`) waits for the state file: it is kept until
    /// `until` at least (the loop answers it before then).
    pub fn hold(&mut self, key: usize, id: u64, until: Instant, timers: &mut Timers) {
        if let Some((_, conn)) = self.conns.get_mut(key).filter(|(_, c)| c.wire.id == id) {
            if until > conn.wire.deadline {
                conn.wire.deadline = until;
                timers.add(until, TimerKind::AdminConn(key, id));
            }
        }
    }
}

/// The most connections `from` may have open at once.
fn cap_of(from: Address) -> usize {
    match from {
        Address::Ip(_) => MAX_PER_ADDRESS,
        // The unix socket's clients are local users with access to a 0600
        // file: its 32 slots are shared as the stats port's are (a slot
        // given up only after 200 ms without a complete request), so a
        // burst of new local connections cannot push out an operator's
        // request before it is read.
        Address::Unix => usize::MAX,
    }
}
