//! Step 4 of the data flow: one client/backend pair and its relay state
//! machine (connecting, relaying, half-closed, closing).
//!
//! Both sockets are registered once for read and write, edge-triggered. The
//! pair remembers the readiness each side has reported and not yet used up
//! (`readable`/`writable` turn false only on WouldBlock), so [`Pair::drive`]
//! can be called after any event, or again later, and moves every byte it
//! can without a syscall to change interest. A full buffer simply stops
//! reading from its sender: that is the backpressure.

use std::fmt;
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use std::os::fd::AsRawFd;

use crate::balance::health::CheckResult;
use crate::io::buffer::{Buffer, Pools};
use crate::io::pipe::Pipe;
use crate::io::pump::{self, Fill, Flush};

/// Bytes read from one side per [`Pair::drive`] call before the pair yields
/// to others and is driven again on the next loop turn.
pub const DRIVE_BUDGET: usize = 256 * 1024;

/// One socket of a pair, with the readiness it has and the half-closes done.
pub struct Side {
    pub stream: TcpStream,
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

impl Side {
    pub fn new(stream: TcpStream) -> Side {
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
    /// What a short read on this socket means (see [`pump::ShortRead`]).
    fn short_read(&self) -> pump::ShortRead {
        if self.err {
            pump::ShortRead::Unknown
        } else if self.rdhup {
            pump::ShortRead::Eof
        } else {
            pump::ShortRead::Empty
        }
    }

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
    /// Every backend tried failed to connect; the last reason.
    ConnectFailed(CheckResult),
    /// Out of file descriptors or another local resource.
    LocalError,
    /// The graceful-stop deadline passed.
    Shutdown,
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
            End::ConnectFailed(r) => write!(f, "connect_failed({r})"),
            End::LocalError => f.write_str("local_error"),
            End::Shutdown => f.write_str("shutdown"),
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
pub struct Pair {
    /// Unique for the process's life; tells a reused slab slot from the old.
    pub id: u64,
    pub service: usize,
    pub client_addr: SocketAddr,
    pub started: Instant,
    pub phase: Phase,
    pub client: Side,
    /// Backend key in the service's balancer, while one is assigned.
    pub backend: Option<usize>,
    pub server: Option<Side>,
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

/// Which side of a pair failed.
enum Failed {
    Src,
    Dst,
}

impl Pair {
    pub fn new(id: u64, service: usize, client: TcpStream, client_addr: SocketAddr, now: Instant) -> Pair {
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

    /// Moves every byte it can in both directions, as far as the remembered
    /// readiness, the buffers and the budget allow.
    pub fn drive(&mut self, pools: &mut Pools) -> Result<Progress, End> {
        let mut p = Progress::default();
        let connected = self.phase == Phase::Relaying;

        // A PROXY header goes out before any client byte.
        let mut header_done = self.preamble.is_none();
        if let (Some(pre), Some(server), true) = (self.preamble.as_mut(), self.server.as_mut(), connected) {
            if server.writable {
                let (n, r) = pump::write_all_nb(&pre.bytes[pre.written..], &mut server.stream);
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

        // Client -> backend. Until connected (or while the header is still
        // going out) client bytes are only buffered, up to one buffer.
        let dst = self.server.as_mut().filter(|_| connected && header_done);
        let (read, wrote, again) = pump_direction(&mut self.client, dst, &mut self.up, self.down.is_empty(), pools)
            .map_err(|f| match f {
                Failed::Src => End::ClientReset,
                Failed::Dst => End::BackendReset,
            })?;
        p.from_client = read;
        p.to_backend += wrote;
        p.again |= again;
        self.bytes_from_client += read;

        // Backend -> client.
        if connected {
            if let Some(server) = self.server.as_mut() {
                let (read, wrote, again) = pump_direction(
                    server,
                    Some(&mut self.client),
                    &mut self.down,
                    self.up.is_empty(),
                    pools,
                )
                .map_err(|f| match f {
                    Failed::Src => End::BackendReset,
                    Failed::Dst => End::ClientReset,
                })?;
                p.from_backend = read;
                p.to_client = wrote;
                p.again |= again;
                self.bytes_to_client += wrote;
            }
        }

        p.finished = connected && self.is_finished();
        Ok(p)
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

/// Relays one direction: flush what is buffered, read more while there is
/// room, readiness and budget, and repeat. Takes a buffer (or, for a bulk
/// direction, a pipe) from its pool only while bytes are in flight, and
/// passes EOF on as a write shutdown once everything before it was delivered.
///
/// `reverse_empty` says the opposite direction holds no buffered bytes: when
/// that direction has also ended, the pair is about to close, and the close
/// itself sends the FIN, so the shutdown syscall is skipped.
fn pump_direction(
    src: &mut Side,
    mut dst: Option<&mut Side>,
    flow: &mut Flow,
    reverse_empty: bool,
    pools: &mut Pools,
) -> Result<(u64, u64, bool), Failed> {
    let splice = flow.bulk && flow.buf.is_none() && dst.is_some() && pools.pipes.as_ref().is_some_and(|p| !p.starved);
    if splice && flow.pipe.is_none() {
        flow.pipe = pools.pipes.as_mut().and_then(|p| p.get());
    }
    let (read, wrote) = match (flow.pipe.as_mut(), dst.as_deref_mut()) {
        (Some(pipe), Some(d)) => splice_direction(src, d, pipe)?,
        _ => copy_direction(src, dst.as_deref_mut(), flow, pools)?,
    };
    if flow.pipe.as_ref().is_some_and(|p| p.len == 0) {
        if let (Some(p), Some(pipes)) = (flow.pipe.take(), pools.pipes.as_mut()) {
            pipes.put(p);
        }
    }
    if src.read_eof && flow.is_empty() {
        if let Some(d) = dst {
            if !d.write_shut {
                d.write_shut = true;
                let closing_anyway = d.read_eof && reverse_empty && src.write_shut;
                if !closing_anyway {
                    // NotConnected just means the peer is already fully gone;
                    // the next read or write on it reports that properly.
                    let _ = d.stream.shutdown(Shutdown::Write);
                }
            }
        }
    }
    let again = src.readable && !src.read_eof && read >= DRIVE_BUDGET;
    Ok((read as u64, wrote as u64, again))
}

/// The user-space path: socket -> buffer -> socket.
fn copy_direction(
    src: &mut Side,
    mut dst: Option<&mut Side>,
    flow: &mut Flow,
    pools: &mut Pools,
) -> Result<(usize, usize), Failed> {
    let mut read = 0usize;
    let mut wrote = 0usize;
    let slot = &mut flow.buf;
    loop {
        if let (Some(buf), Some(d)) = (slot.as_mut(), dst.as_deref_mut()) {
            if !buf.is_empty() && d.writable {
                // After the source's EOF these are the last bytes: they may
                // wait in the kernel for the FIN that follows at once.
                let (n, r) = if src.read_eof {
                    pump::flush(buf, &mut pump::LastBytes(&d.stream))
                } else {
                    pump::flush(buf, &mut d.stream)
                };
                wrote += n;
                match r {
                    Ok(Flush::Drained) => {}
                    Ok(Flush::WouldBlock) => d.writable = false,
                    Err(_) => return Err(Failed::Dst),
                }
            }
        }
        if !src.readable || src.read_eof || read >= DRIVE_BUDGET {
            break;
        }
        let buf = slot.get_or_insert_with(|| pools.buffers.get());
        if buf.is_full() {
            break;
        }
        let short = src.short_read();
        let (n, r) = pump::fill(buf, &mut src.stream, DRIVE_BUDGET - read, short);
        // Each turn reads something or ends: WouldBlock, EOF and errors
        // leave the loop at the checks above.
        read += n;
        match r {
            Ok(Fill::WouldBlock) => src.readable = false,
            Ok(Fill::Eof) => src.read_eof = true,
            Ok(Fill::Full) => flow.bulk = true,
            Ok(Fill::Budget) => {}
            Err(_) => {
                if let Some(b) = slot.take() {
                    pools.buffers.put(b);
                }
                return Err(Failed::Src);
            }
        }
    }
    if slot.as_ref().is_some_and(|b| b.is_empty()) {
        if let Some(b) = slot.take() {
            pools.buffers.put(b);
        }
    }
    Ok((read, wrote))
}

/// The bulk path (Linux): socket -> pipe -> socket with splice, no copy.
fn splice_direction(src: &mut Side, dst: &mut Side, pipe: &mut Pipe) -> Result<(usize, usize), Failed> {
    use std::io::ErrorKind::WouldBlock;
    let mut read = 0usize;
    let mut wrote = 0usize;
    loop {
        let mut progress = false;
        if pipe.len > 0 && dst.writable {
            match pipe.drain_to(dst.stream.as_raw_fd()) {
                Ok(n) => {
                    wrote += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == WouldBlock => dst.writable = false,
                Err(_) => return Err(Failed::Dst),
            }
        }
        if src.readable && !src.read_eof && read < DRIVE_BUDGET && pipe.len < pipe.cap {
            match pipe.fill_from(src.stream.as_raw_fd(), pipe.cap - pipe.len) {
                Ok(0) => src.read_eof = true,
                Ok(n) => {
                    read += n;
                    progress = true;
                }
                // With bytes in the pipe, EAGAIN may mean the pipe is full
                // (it counts page slots, not bytes): keep the readiness and
                // read again once the pipe has drained.
                Err(e) if e.kind() == WouldBlock => {
                    if pipe.len == 0 {
                        src.readable = false;
                    }
                }
                Err(_) => return Err(Failed::Src),
            }
        }
        if !progress {
            return Ok((read, wrote));
        }
    }
}
