//! Step 4 of the data flow: one client/backend pair and its state machine (connecting, relaying, half-closed).
//!
//! Both sockets are registered once for read and write, edge-triggered. The
//! pair remembers the readiness each side has reported and not yet used up
//! (`readable`/`writable` turn false only on WouldBlock), so [`Pair::drive`]
//! can be called after any event, or again later, and moves every byte it
//! can without a syscall to change interest. A full buffer simply stops
//! reading from its sender: that is the backpressure. The moving itself, one
//! direction at a time, is in [`relay`].

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::balance::health::CheckResult;
use crate::flow::relay::{self, Stream};
use crate::io::buffer::{Buffer, Pools};
use crate::io::pipe::Pipe;
use crate::io::pump::{self, Flush};

pub use crate::flow::relay::DRIVE_BUDGET;

/// One socket of a pair, with the readiness it has and the half-closes done.
pub struct Side<S = TcpStream> {
    pub stream: S,
    pub readable: bool,
    pub writable: bool,
    /// The peer shut down its write half (we read EOF).
    pub read_eof: bool,
    /// We shut down our write half towards this peer.
    pub write_shut: bool,
    /// The poll reported the peer's FIN (read side closed, no error).
    pub rdhup: bool,
    /// The poll reported an error: read until the read itself says so.
    pub err: bool,
}

impl<S> Side<S> {
    pub fn new(stream: S) -> Side<S> {
        Side {
            stream,
            readable: false,
            writable: false,
            read_eof: false,
            write_shut: false,
            rdhup: false,
            err: false,
        }
    }

    /// Records what an event says this socket is ready for.
    pub fn on_event(&mut self, ev: &mio::event::Event) {
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.readable = true;
        }
        if ev.is_error() {
            self.err = true;
        } else if ev.is_read_closed() {
            self.rdhup = true;
        }
        if ev.is_writable() || ev.is_write_closed() || ev.is_error() {
            self.writable = true;
        }
    }
}

/// Where a pair is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a non-blocking connect to a backend to complete.
    Connecting,
    /// Relaying in both directions (possibly one already half-closed).
    Relaying,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Relaying => "relaying",
        })
    }
}

/// Why a pair ended; the `end=` field of the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions finished cleanly.
    Done,
    ClientReset,
    BackendReset,
    IdleTimeout,
    /// No backend could be chosen (counted as rejected).
    NoBackend,
    /// The client's IP already holds `max_connections_per_ip` (counted as
    /// rejected).
    IpLimit,
    /// Every backend tried failed to connect; the last reason.
    ConnectFailed(CheckResult),
    /// Out of file descriptors or another local resource.
    LocalError,
    /// The graceful-stop deadline passed.
    Shutdown,
    /// Closed through the admin API (`close` of its backend).
    Admin,
    /// The backend went down and its service has `close_on_down`.
    BackendDown,
}

impl End {
    /// Whether the pair ended abnormally, so the surviving peer should see a
    /// reset rather than a clean close.
    pub fn is_reset(self) -> bool {
        matches!(self, End::ClientReset | End::BackendReset)
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Done => f.write_str("done"),
            End::ClientReset => f.write_str("client_reset"),
            End::BackendReset => f.write_str("backend_reset"),
            End::IdleTimeout => f.write_str("idle_timeout"),
            End::NoBackend => f.write_str("no_backend"),
            End::IpLimit => f.write_str("ip_limit"),
            End::ConnectFailed(r) => write!(f, "connect_failed({r})"),
            End::LocalError => f.write_str("local_error"),
            End::Shutdown => f.write_str("shutdown"),
            End::Admin => f.write_str("admin_close"),
            End::BackendDown => f.write_str("backend_down"),
        }
    }
}

/// What one [`Pair::drive`] call achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes read from the client.
    pub from_client: u64,
    /// Bytes written to the backend.
    pub to_backend: u64,
    /// Bytes read from the backend.
    pub from_backend: u64,
    /// Bytes written to the client.
    pub to_client: u64,
    /// A side still has readable data: drive again on the next turn.
    pub again: bool,
    /// Both directions are finished.
    pub finished: bool,
}

/// A PROXY protocol header still to be written before any client byte.
pub struct Preamble {
    pub bytes: Vec<u8>,
    pub written: usize,
}

/// The bytes in flight in one direction: in a user-space buffer, or, once
/// the direction turned out to be bulk, in a kernel pipe (splice).
#[derive(Default)]
pub struct Flow {
    pub buf: Option<Buffer>,
    pub pipe: Option<Pipe>,
    /// A read filled a whole buffer: move to splice when the buffer drains.
    pub bulk: bool,
}

impl Flow {
    /// Nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_none() && self.pipe.as_ref().is_none_or(|p| p.len == 0)
    }

    fn release(&mut self, pools: &mut Pools) {
        if let Some(b) = self.buf.take() {
            pools.buffers.put(b);
        }
        if let (Some(p), Some(pipes)) = (self.pipe.take(), pools.pipes.as_mut()) {
            pipes.put(p);
        }
    }
}

/// One client connection and the backend connection serving it.
pub struct Pair<S = TcpStream> {
    /// Unique for the process's life; tells a reused slab slot from the old.
    pub id: u64,
    pub service: usize,
    pub client_addr: SocketAddr,
    pub started: Instant,
    pub phase: Phase,
    pub client: Side<S>,
    /// Backend key in the service's balancer, while one is assigned.
    pub backend: Option<usize>,
    pub server: Option<Side<S>>,
    /// Backends that already failed to connect for this client.
    pub tried: Vec<usize>,
    pub connect_deadline: Option<Instant>,
    /// Why the last connect attempt failed.
    pub last_connect_error: CheckResult,
    pub connect_started: Option<Instant>,
    /// Client -> backend bytes in flight.
    pub up: Flow,
    /// Backend -> client bytes in flight.
    pub down: Flow,
    pub preamble: Option<Preamble>,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub last_active: Instant,
    pub idle_timeout: Option<Duration>,
    /// Earliest timer entry outstanding for this pair.
    pub timer_at: Option<Instant>,
}

impl<S> Pair<S> {
    pub fn new(id: u64, service: usize, client: S, client_addr: SocketAddr, now: Instant) -> Pair<S> {
        Pair {
            id,
            service,
            client_addr,
            started: now,
            phase: Phase::Connecting,
            client: Side::new(client),
            backend: None,
            server: None,
            tried: Vec::new(),
            connect_deadline: None,
            last_connect_error: CheckResult::None,
            connect_started: None,
            up: Flow::default(),
            down: Flow::default(),
            preamble: None,
            bytes_from_client: 0,
            bytes_to_client: 0,
            last_active: now,
            idle_timeout: None,
            timer_at: None,
        }
    }

    /// The next instant this pair needs attention, if any.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Connecting => self.connect_deadline,
            Phase::Relaying => self.idle_timeout.map(|d| self.last_active + d),
        }
    }

    /// Both directions have ended and everything was delivered.
    fn is_finished(&self) -> bool {
        let Some(server) = &self.server else { return false };
        self.client.read_eof
            && self.up.is_empty()
            && server.write_shut
            && server.read_eof
            && self.down.is_empty()
            && self.client.write_shut
    }

    /// Gives the pair's buffers and pipes back to their pools.
    pub fn release_buffers(&mut self, pools: &mut Pools) {
        self.up.release(pools);
        self.down.release(pools);
    }
}

impl<S: Stream> Pair<S> {
    /// Moves every byte it can in both directions, as far as the remembered
    /// readiness, the buffers and the budget allow.
    pub fn drive(&mut self, pools: &mut Pools) -> Result<Progress, End> {
        let mut p = Progress::default();
        let connected = self.phase == Phase::Relaying;
        let header_done = self.send_preamble(connected, &mut p)?;

        // Client -> backend. Until connected (or while the header is still
        // going out) client bytes are only buffered, up to one buffer.
        let dst = self.server.as_mut().filter(|_| connected && header_done);
        let up = relay::pump_direction(&mut self.client, dst, &mut self.up, self.down.is_empty(), pools)
            .map_err(|f| f.name(End::ClientReset, End::BackendReset))?;
        p.from_client = up.read;
        p.to_backend += up.wrote;
        p.again |= up.again;
        self.bytes_from_client += up.read;

        // Backend -> client.
        if connected {
            if let Some(server) = self.server.as_mut() {
                let down = relay::pump_direction(
                    server,
                    Some(&mut self.client),
                    &mut self.down,
                    self.up.is_empty(),
                    pools,
                )
                .map_err(|f| f.name(End::BackendReset, End::ClientReset))?;
                p.from_backend = down.read;
                p.to_client = down.wrote;
                p.again |= down.again;
                self.bytes_to_client += down.wrote;
            }
        }

        p.finished = connected && self.is_finished();
        Ok(p)
    }

    /// Writes what is left of the PROXY header, which goes out before any
    /// client byte; says whether none is left.
    fn send_preamble(&mut self, connected: bool, p: &mut Progress) -> Result<bool, End> {
        let mut header_done = self.preamble.is_none();
        if let (Some(pre), Some(server), true) = (self.preamble.as_mut(), self.server.as_mut(), connected) {
            if server.writable {
                let rest = pre.bytes.get(pre.written..).unwrap_or_default();
                let (n, r) = pump::write_all_nb(rest, &mut server.stream);
                pre.written += n;
                p.to_backend += n as u64;
                match r {
                    Ok(Flush::Drained) => header_done = true,
                    Ok(Flush::WouldBlock) => server.writable = false,
                    Err(_) => return Err(End::BackendReset),
                }
            }
        }
        if header_done {
            self.preamble = None;
        }
        Ok(header_done)
    }
}
