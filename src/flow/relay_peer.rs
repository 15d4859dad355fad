//! Step 4 of the data flow, test support: a scripted stream standing in for a socket in the relay tests.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::RawFd;

use crate::flow::relay::Stream;

/// What one read of a [`Peer`] returns.
pub enum In {
    /// Bytes that arrived together; a read takes as many as fit.
    Data(Vec<u8>),
    /// The peer shut down its write half: every read from now on says 0.
    Eof,
    /// The connection was reset: every read from now on fails.
    Reset,
}

/// A scripted peer: reads come from `input` (WouldBlock once it is empty);
/// writes are accepted up to `room` bytes, then WouldBlock.
#[derive(Default)]
pub struct Peer {
    input: VecDeque<In>,
    /// Bytes of the first `Data` already read.
    pos: usize,
    pub room: usize,
    /// Writes fail with ConnectionReset.
    broken: bool,
    pub written: Vec<u8>,
    /// How many bytes of `written` came through `write_last` (`MSG_MORE`).
    pub last: usize,
    /// `written.len()` at each `shutdown_write`.
    pub shut_at: Vec<usize>,
    pub reads: usize,
    pub writes: usize,
}

impl Peer {
    pub fn new() -> Peer {
        Peer {
            room: usize::MAX,
            ..Peer::default()
        }
    }

    pub fn sends(mut self, b: &[u8]) -> Peer {
        self.input.push_back(In::Data(b.to_vec()));
        self
    }

    pub fn then(mut self, i: In) -> Peer {
        self.input.push_back(i);
        self
    }

    pub fn takes(mut self, n: usize) -> Peer {
        self.room = n;
        self
    }

    pub fn broken() -> Peer {
        Peer {
            broken: true,
            ..Peer::new()
        }
    }

    /// More input arrives (the test then raises readability).
    pub fn arrive(&mut self, i: In) {
        self.input.push_back(i);
    }
}

impl Read for Peer {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.reads += 1;
        match self.input.front() {
            None => Err(ErrorKind::WouldBlock.into()),
            Some(In::Eof) => Ok(0),
            Some(In::Reset) => Err(ErrorKind::ConnectionReset.into()),
            Some(In::Data(d)) => {
                let rest = &d[self.pos..];
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                if self.pos == d.len() {
                    self.input.pop_front();
                    self.pos = 0;
                }
                Ok(n)
            }
        }
    }
}

impl Write for Peer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        assert!(self.shut_at.is_empty(), "write after shutdown_write");
        if self.broken {
            return Err(ErrorKind::ConnectionReset.into());
        }
        if self.room == 0 {
            return Err(ErrorKind::WouldBlock.into());
        }
        let n = b.len().min(self.room);
        self.room -= n;
        self.written.extend_from_slice(&b[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for Peer {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shut_at.push(self.written.len());
        Ok(())
    }

    fn splice_fd(&self) -> Option<RawFd> {
        None
    }

    fn write_last(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.write(b)?;
        self.last += n;
        Ok(n)
    }
}
