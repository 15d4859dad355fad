//! Step 4 of the data flow: relaying one direction (buffer copy or splice, then the half-close).
//!
//! Written against the [`Stream`] trait, so the state machine runs in unit
//! tests on scripted peers; for `mio::net::TcpStream` it monomorphises to the
//! same syscalls as a direct implementation (read, write, `send` with
//! `MSG_MORE`, splice, `shutdown(Write)`).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};

use mio::net::TcpStream;

use crate::flow::session::{End, Flow, Side};
use crate::io::buffer::Pools;
use crate::io::pipe::Pipe;
use crate::io::pump::{self, Fill, Flush};

/// Bytes read from one side per [`Pair::drive`](crate::flow::session::Pair::drive)
/// call before the pair yields to others and is driven again on the next loop turn.
pub const DRIVE_BUDGET: usize = 256 * 1024;

/// What the relay needs from a connected stream besides reading and writing.
pub trait Stream: Read + Write {
    /// Shuts down the write half: the peer reads EOF after what was sent.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// The descriptor to splice from and to; `None` keeps the direction on
    /// the buffer path.
    fn splice_fd(&self) -> Option<RawFd>;
    /// Writes bytes that the FIN follows at once, so that both may leave in
    /// one segment (`MSG_MORE`, see [`pump::LastBytes`]).
    fn write_last(&mut self, b: &[u8]) -> io::Result<usize>;
}

impl Stream for TcpStream {
    #[inline]
    fn shutdown_write(&mut self) -> io::Result<()> {
        TcpStream::shutdown(self, Shutdown::Write)
    }

    #[inline]
    fn splice_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }

    #[inline]
    fn write_last(&mut self, b: &[u8]) -> io::Result<usize> {
        pump::LastBytes(&*self).write(b)
    }
}

/// Writes through [`Stream::write_last`].
struct Last<'a, S>(&'a mut S);

impl<S: Stream> Write for Last<'_, S> {
    #[inline]
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write_last(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Which end of a direction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Reading from the sender.
    Src,
    /// Writing to the receiver.
    Dst,
}

impl Failed {
    /// How the pair's end is called when the sender is `src` and the
    /// receiver `dst`.
    pub(crate) fn name(self, src: End, dst: End) -> End {
        match self {
            Failed::Src => src,
            Failed::Dst => dst,
        }
    }
}

/// What one [`pump_direction`] call moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    /// Bytes read from the sender.
    pub read: u64,
    /// Bytes written to the receiver.
    pub wrote: u64,
    /// The sender still has data and the budget stopped the reading: drive
    /// again on the next turn.
    pub again: bool,
}

/// What a short read on this side means (see [`pump::ShortRead`]).
fn short_read<S>(side: &Side<S>) -> pump::ShortRead {
    if side.err {
        pump::ShortRead::Unknown
    } else if side.rdhup {
        pump::ShortRead::Eof
    } else {
        pump::ShortRead::Empty
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
pub(crate) fn pump_direction<S: Stream>(
    src: &mut Side<S>,
    mut dst: Option<&mut Side<S>>,
    flow: &mut Flow,
    reverse_empty: bool,
    pools: &mut Pools,
) -> Result<Moved, Failed> {
    let fds = dst
        .as_deref()
        .and_then(|d| src.stream.splice_fd().zip(d.stream.splice_fd()));
    let splice = flow.bulk && flow.buf.is_none() && fds.is_some() && pools.pipes.as_ref().is_some_and(|p| !p.starved);
    if splice && flow.pipe.is_none() {
        flow.pipe = pools.pipes.as_mut().and_then(|p| p.get());
    }
    let (read, wrote) = match (flow.pipe.as_mut(), dst.as_deref_mut(), fds) {
        (Some(pipe), Some(d), Some(fds)) => splice_direction(src, d, pipe, fds)?,
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
                    let _ = d.stream.shutdown_write();
                }
            }
        }
    }
    Ok(Moved {
        read: read as u64,
        wrote: wrote as u64,
        again: src.readable && !src.read_eof && read >= DRIVE_BUDGET,
    })
}

/// The user-space path: socket -> buffer -> socket.
fn copy_direction<S: Stream>(
    src: &mut Side<S>,
    mut dst: Option<&mut Side<S>>,
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
                    pump::flush(buf, &mut Last(&mut d.stream))
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
        let short = short_read(src);
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
/// `fds` are the source's and the destination's descriptors.
fn splice_direction<S>(
    src: &mut Side<S>,
    dst: &mut Side<S>,
    pipe: &mut Pipe,
    (src_fd, dst_fd): (RawFd, RawFd),
) -> Result<(usize, usize), Failed> {
    use std::io::ErrorKind::WouldBlock;
    let mut read = 0usize;
    let mut wrote = 0usize;
    loop {
        let mut progress = false;
        if pipe.len > 0 && dst.writable {
            match pipe.drain_to(dst_fd) {
                Ok(n) => {
                    wrote += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == WouldBlock => dst.writable = false,
                Err(_) => return Err(Failed::Dst),
            }
        }
        if src.readable && !src.read_eof && read < DRIVE_BUDGET && pipe.len < pipe.cap {
            match pipe.fill_from(src_fd, pipe.cap - pipe.len) {
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

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
