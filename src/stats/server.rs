//! Listen and accept: the stats listener, its connection slots, their deadlines and eviction.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::Interest;
use slab::Slab;

use super::budget::{drive, enqueue, Budget, Queue, Work};
use super::cache::Cache;
use super::conn::Conn;
use super::wire::{self, EVICT_MIN_AGE};
use super::Source;
use crate::config::StatsConfig;
use crate::io::socket;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// Stats connections open at once.
pub const MAX_CONNS: usize = 64;
/// Accepts per loop turn.
const ACCEPT_BATCH: usize = 64;

/// The stats listener and its connections.
///
/// `GET /` (and `/statistic`) is a self-refreshing HTML page, `/stats` JSON,
/// `/metrics` Prometheus text. Every connection answers one request and
/// closes. A peer outside `stats.allow` is closed at accept, before
/// anything is read. Answers come from the [`Cache`] (each view rendered at
/// most once per `stats.cache_ms`, and again at once after a change), and
/// one loop turn does at most a [`Budget`] of stats work: a connection that
/// hits it is queued and stepped again next turn ([`Self::wants_accept`]
/// tells the loop not to sleep meanwhile).
///
/// Hostile clients are bounded: the request head is capped, each
/// connection has a deadline, and when all slots are taken a new client
/// takes the slot of one that is done (answer sent, waiting for the client
/// to close), else of the oldest one that has sat on its slot for a while
/// without a complete request, else of the oldest one not reading its
/// answer; with none of these, new clients wait in the listen backlog. A
/// request that arrived with its connection is answered in the turn that
/// accepts it, budget permitting.
pub struct StatsServer {
    listener: TcpListener,
    pub accept_ready: bool,
    /// Every slot is taken and none can be given up yet: accepting waits
    /// until a connection ends or grows old enough to evict.
    blocked: bool,
    conns: Slab<Conn>,
    queue: Queue,
    next_id: u64,
    cfg: StatsConfig,
    cache: Cache,
    budget: Budget,
}

impl StatsServer {
    pub fn bind(cfg: &StatsConfig) -> io::Result<StatsServer> {
        Ok(StatsServer {
            listener: socket::bind(cfg.listen, socket::BACKLOG)?,
            accept_ready: true,
            blocked: false,
            conns: Slab::new(),
            queue: Queue::new(),
            next_id: 1,
            cfg: cfg.clone(),
            cache: Cache::new(cfg.cache),
            budget: Budget::default(),
        })
    }

    /// A reload's `[stats]`: timeout, `allow` and `cache_ms` apply to the
    /// next request (a moved listener means a new server, which warns when
    /// registered).
    pub fn configure(&mut self, cfg: &StatsConfig) {
        if cfg.cache != self.cfg.cache {
            self.cache.set_max_age(cfg.cache);
        }
        if cfg.listen == self.cfg.listen {
            warn_if_open(cfg);
        }
        self.cfg = cfg.clone();
    }

    /// Registers the listener with the poll; warns when it is open to
    /// anyone who can reach it.
    pub fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        warn_if_open(&self.cfg);
        registry.register(&mut self.listener, Target::StatsListener.token(), Interest::READABLE)
    }

    /// Stops listening and drops every stats connection.
    pub fn close(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.listener);
        self.conns.clear();
        self.queue.clear();
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Whether [`Self::accept`] has work: clients to accept and room (or a
    /// slot to free), or connections queued for want of budget.
    pub fn wants_accept(&self) -> bool {
        (self.accept_ready && !self.blocked) || !self.queue.is_empty()
    }

    /// Once per loop turn: steps the queued connections, then accepts
    /// waiting clients (closing those outside `allow`) and answers the ones
    /// whose request is already there; when every slot is taken, frees one
    /// if it can (see `StatsServer`) or leaves the rest in the backlog.
    pub fn accept(
        &mut self,
        src: &Source<'_>,
        registry: &mio::Registry,
        timers: &mut Timers,
        now: Instant,
    ) -> io::Result<()> {
        self.budget.begin(now);
        self.run_queue(src, timers, now);
        for _ in 0..ACCEPT_BATCH {
            if self.conns.len() >= MAX_CONNS && self.victim(now).is_none() {
                self.blocked = true;
                return Ok(());
            }
            let (mut stream, peer) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return Ok(());
                }
                Err(e) if socket::is_transient_accept_error(&e) => continue,
                Err(e) => return Err(e),
            };
            if !self.allowed(peer) {
                log::debug!("stats: {peer} is not in stats.allow; closed");
                continue; // dropping the stream closes it
            }
            if self.conns.len() >= MAX_CONNS {
                self.evict_one(now);
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if registry
                .register(&mut stream, Target::StatsClient(key).token(), interest)
                .is_err()
            {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let conn = entry.insert(Conn::new(id, stream, now, now + self.cfg.timeout));
            // First wake-up when the slot becomes evictable; the timer then
            // moves on to the deadline.
            timers.add(conn.deadline.min(now + EVICT_MIN_AGE), TimerKind::StatsConn(key, id));
            self.step_or_queue(key, src, timers, now);
        }
        Ok(())
    }

    /// Whether `peer` may talk to the stats port.
    fn allowed(&self, peer: SocketAddr) -> bool {
        self.cfg.allow.is_empty() || self.cfg.allow.iter().any(|c| c.contains(peer.ip()))
    }

    /// The connections, their queue and what a step works with.
    fn split<'a, 'b>(
        &'a mut self,
        src: &'a Source<'b>,
        timers: &'a mut Timers,
        now: Instant,
    ) -> (&'a mut Slab<Conn>, &'a mut Queue, Work<'a, 'b>) {
        let w = Work {
            src,
            cache: &mut self.cache,
            budget: &mut self.budget,
            timers,
            now,
        };
        (&mut self.conns, &mut self.queue, w)
    }

    /// Steps connection `key` now, or queues it behind those already
    /// waiting for budget (first come, first served).
    fn step_or_queue(&mut self, key: usize, src: &Source<'_>, timers: &mut Timers, now: Instant) {
        let (conns, queue, mut w) = self.split(src, timers, now);
        let closed = if queue.is_empty() {
            drive(conns, queue, key, &mut w)
        } else {
            enqueue(conns, queue, key);
            false
        };
        if closed {
            self.blocked = false;
        }
    }

    /// Steps each queued connection once, in order; those that run out of
    /// budget again go to the back.
    fn run_queue(&mut self, src: &Source<'_>, timers: &mut Timers, now: Instant) {
        let (conns, queue, mut w) = self.split(src, timers, now);
        let mut closed = false;
        for _ in 0..queue.len() {
            let Some((key, id)) = queue.pop_front() else { break };
            let Some(conn) = conns.get_mut(key).filter(|c| c.id == id) else {
                continue; // closed meanwhile
            };
            conn.queued = false;
            closed |= drive(conns, queue, key, &mut w);
        }
        if closed {
            self.blocked = false;
        }
    }

    /// Frees a slot: a connection already answered, else the oldest one
    /// that has waited EVICT_MIN_AGE without a complete request, else the
    /// oldest that has not taken its answer in that time.
    fn evict_one(&mut self, now: Instant) -> bool {
        match self.victim(now) {
            Some(k) => {
                log::debug!("stats: {} connections open, closing one to make room", self.conns.len());
                self.conns.remove(k);
                true
            }
            None => false,
        }
    }

    /// The connection [`Self::evict_one`] would close.
    fn victim(&self, now: Instant) -> Option<usize> {
        wire::victim(self.conns.iter(), now)
    }

    /// Readiness on a stats connection: read the request, answer, drain,
    /// close, as far as this turn's budget goes.
    pub fn on_event(&mut self, key: usize, src: &Source<'_>, timers: &mut Timers, now: Instant) {
        self.budget.begin(now);
        self.step_or_queue(key, src, timers, now);
    }

    pub fn on_timer(&mut self, key: usize, id: u64, now: Instant, timers: &mut Timers) {
        // A slot may have become evictable, or frees up now.
        self.blocked = false;
        let Some(conn) = self.conns.get(key) else { return };
        if conn.id != id {
            return;
        }
        if conn.deadline <= now {
            self.conns.remove(key);
        } else {
            timers.add(conn.deadline, TimerKind::StatsConn(key, id));
        }
    }
}

/// Warns when `[stats]` listens beyond loopback with no `allow` list: it
/// shows every client IP and the backend layout.
fn warn_if_open(cfg: &StatsConfig) {
    if cfg.allow.is_empty() && !cfg.listen.ip().to_canonical().is_loopback() {
        log::warn!(
            "[stats] listens on {} without stats.allow: anyone who can reach it sees every client IP \
             and the backend layout (set allow = [\"CIDR\", ...])",
            cfg.listen
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::wire::Stage;
    use mio::net::TcpStream;
    use std::time::Duration;

    /// A server with one connection per given stage, accepted at the given
    /// offsets (ms) before `now`.
    fn server_with(stages: Vec<(Stage, u64)>, now: Instant) -> (StatsServer, Vec<std::net::TcpStream>) {
        let cfg = StatsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            timeout: Duration::from_secs(10),
            allow: Vec::new(),
            cache: Duration::from_secs(1),
        };
        let mut server = StatsServer::bind(&cfg).unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut clients = Vec::new();
        for (stage, ago) in stages {
            clients.push(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap());
            let (accepted, _) = l.accept().unwrap();
            let since = now - Duration::from_millis(ago);
            let id = server.next_id;
            server.next_id += 1;
            let mut conn = Conn::new(id, TcpStream::from_std(accepted), since, since + cfg.timeout);
            conn.stage = stage;
            server.conns.insert(conn);
        }
        (server, clients)
    }

    fn stages_left(server: &StatsServer) -> Vec<&'static str> {
        server
            .conns
            .iter()
            .map(|(_, c)| match c.stage {
                Stage::Reading => "reading",
                Stage::Writing => "writing",
                Stage::Draining(_) => "draining",
                Stage::Parked => "parked",
            })
            .collect()
    }

    #[test]
    fn eviction_order_answered_then_stale_senders_then_stale_readers() {
        let now = Instant::now() + Duration::from_secs(5);
        let (mut s, _c) = server_with(
            vec![
                (Stage::Writing, 1000),
                (Stage::Reading, 1000),
                (Stage::Reading, 50),
                (Stage::Draining(0), 10),
            ],
            now,
        );
        assert!(s.evict_one(now));
        assert_eq!(
            stages_left(&s),
            ["writing", "reading", "reading"],
            "the answered one goes first"
        );
        assert!(s.evict_one(now));
        assert_eq!(stages_left(&s), ["writing", "reading"], "then the stale sender");
        assert_eq!(
            s.conns.iter().nth(1).map(|(_, c)| c.accepted),
            Some(now - Duration::from_millis(50))
        );
        assert!(s.evict_one(now));
        assert_eq!(
            stages_left(&s),
            ["reading"],
            "then one not reading its answer for 200 ms"
        );
        assert!(!s.evict_one(now), "a young connection keeps its slot");
        assert!(s.evict_one(now + EVICT_MIN_AGE), "until it has had it for 200 ms");
    }
}
