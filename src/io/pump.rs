//! Moving bytes socket -> buffer -> socket.
//!
//! Written against `Read`/`Write` so it is tested without sockets. Each call
//! loops until the operation would block (or the buffer is full/empty, or the
//! per-call budget is spent) and says which of those stopped it, so that the
//! edge-triggered caller knows exactly what readiness it has used up.

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::AsRawFd;

use crate::io::buffer::Buffer;

/// Why [`fill`] stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The source has nothing more for now: readiness is used up.
    WouldBlock,
    /// The buffer has no room left: readiness is kept for later.
    Full,
    /// The per-call byte budget is spent: readiness is kept for later.
    Budget,
    /// The peer shut down its write half.
    Eof,
}

/// Why [`flush`] stopped writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything buffered was written.
    Drained,
    /// The destination takes no more for now: writability is used up.
    WouldBlock,
}

/// What a read that returns less than it asked for tells about the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortRead {
    /// Nothing: read again until WouldBlock or EOF (always correct).
    Unknown,
    /// The socket is empty for now. Sound for a TCP socket under
    /// edge-triggered epoll (the kernel returns less only when its queue is
    /// empty, and new data raises a new edge) while no FIN was reported.
    Empty,
    /// The socket is empty and the peer's FIN has arrived: end of stream.
    /// Sound once the poll reported the read side closed without an error,
    /// since TCP queues a FIN only after all data before it.
    Eof,
}

/// Reads from `src` into `buf` until it would block, the buffer is full, EOF,
/// or `budget` bytes were read. Returns the bytes read and why it stopped; an
/// error carries the bytes read before it. `short` says what a short read
/// means, to save the extra read that would only say WouldBlock or EOF.
pub fn fill<R: Read + ?Sized>(
    buf: &mut Buffer,
    src: &mut R,
    budget: usize,
    short: ShortRead,
) -> (usize, io::Result<Fill>) {
    let mut total = 0;
    loop {
        if buf.is_full() {
            return (total, Ok(Fill::Full));
        }
        if total >= budget {
            return (total, Ok(Fill::Budget));
        }
        let space = buf.space();
        let asked = space.len();
        match src.read(space) {
            Ok(0) => return (total, Ok(Fill::Eof)),
            Ok(n) => {
                buf.commit(n);
                total += n;
                if n < asked {
                    match short {
                        ShortRead::Unknown => {}
                        ShortRead::Empty => return (total, Ok(Fill::WouldBlock)),
                        ShortRead::Eof => return (total, Ok(Fill::Eof)),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (total, Ok(Fill::WouldBlock)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (total, Err(e)),
        }
    }
}

/// Writes `bytes` to `dst` until all are written or it would block; returns
/// how many were written.
pub fn write_all_nb<W: Write + ?Sized>(bytes: &[u8], dst: &mut W) -> (usize, io::Result<Flush>) {
    let mut done = 0;
    while let Some(rest) = bytes.get(done..).filter(|r| !r.is_empty()) {
        match dst.write(rest) {
            Ok(0) => return (done, Err(ErrorKind::WriteZero.into())),
            // A writer claiming more than it was given is not believed.
            Ok(n) => done += n.min(rest.len()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (done, Ok(Flush::WouldBlock)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(Flush::Drained))
}

/// A socket written with `MSG_MORE`: the kernel holds a partial segment back
/// until the next write, shutdown or close. Used for the last bytes before a
/// FIN, so that data and FIN leave as one segment instead of two (which also
/// saves the peer one ACK).
pub struct LastBytes<'a, S: AsRawFd>(pub &'a S);

impl<S: AsRawFd> Write for LastBytes<'_, S> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        // SAFETY: `b` is a valid readable slice for `b.len()` bytes and the
        // descriptor is owned by the stream borrowed for this call.
        let n = unsafe {
            libc::send(
                self.0.as_raw_fd(),
                b.as_ptr().cast(),
                b.len(),
                libc::MSG_NOSIGNAL | libc::MSG_MORE,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes what `buf` holds to `dst` until drained or it would block.
pub fn flush<W: Write + ?Sized>(buf: &mut Buffer, dst: &mut W) -> (usize, io::Result<Flush>) {
    let (n, r) = write_all_nb(buf.data(), dst);
    buf.consume(n);
    (n, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted peer: each step is what one read/write call returns.
    enum Step {
        Data(&'static [u8]),
        Take(usize),
        Block,
        Intr,
        Fail,
    }

    struct Script(Vec<Step>, Vec<u8>);

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            match self.0.remove(0) {
                Step::Data(d) => {
                    let n = d.len().min(out.len());
                    out[..n].copy_from_slice(&d[..n]);
                    Ok(n)
                }
                Step::Block => Err(ErrorKind::WouldBlock.into()),
                Step::Intr => Err(ErrorKind::Interrupted.into()),
                Step::Fail | Step::Take(_) => Err(ErrorKind::ConnectionReset.into()),
            }
        }
    }

    impl Write for Script {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            match self.0.remove(0) {
                Step::Take(n) => {
                    let n = n.min(b.len());
                    self.1.extend_from_slice(&b[..n]);
                    Ok(n)
                }
                Step::Block => Err(ErrorKind::WouldBlock.into()),
                Step::Intr => Err(ErrorKind::Interrupted.into()),
                _ => Err(ErrorKind::BrokenPipe.into()),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn fill_until_would_block() {
        let mut b = Buffer::new(16);
        let mut s = Script(
            vec![Step::Data(b"ab"), Step::Intr, Step::Data(b"cd"), Step::Block],
            vec![],
        );
        assert_eq!(
            fill(&mut b, &mut s, 1 << 20, ShortRead::Unknown).1.unwrap(),
            Fill::WouldBlock
        );
        assert_eq!(b.data(), b"abcd");
    }

    #[test]
    fn short_read_counts_as_drained_only_when_asked() {
        let mut b = Buffer::new(16);
        let mut s = Script(vec![Step::Data(b"ab"), Step::Data(b"cd")], vec![]);
        assert_eq!(
            fill(&mut b, &mut s, 1 << 20, ShortRead::Empty).1.unwrap(),
            Fill::WouldBlock
        );
        assert_eq!(s.0.len(), 1, "no second read after a short one");
        let mut s = Script(vec![Step::Data(b"ab"), Step::Block], vec![]);
        assert_eq!(
            fill(&mut b, &mut s, 1 << 20, ShortRead::Unknown).1.unwrap(),
            Fill::WouldBlock
        );
        assert!(s.0.is_empty());
        let mut s = Script(vec![Step::Data(b"ab"), Step::Data(b"never read")], vec![]);
        assert_eq!(fill(&mut b, &mut s, 1 << 20, ShortRead::Eof).1.unwrap(), Fill::Eof);
        assert_eq!(s.0.len(), 1);
    }

    #[test]
    fn fill_stops_when_full_and_keeps_the_rest() {
        let mut b = Buffer::new(4);
        let mut s = Script(vec![Step::Data(b"abcdef"), Step::Data(b"gh")], vec![]);
        let (n, r) = fill(&mut b, &mut s, 1 << 20, ShortRead::Unknown);
        assert_eq!((n, r.unwrap()), (4, Fill::Full));
        assert_eq!(s.0.len(), 1, "no read is attempted into a full buffer");
    }

    #[test]
    fn fill_eof_and_error_and_budget() {
        let mut b = Buffer::new(16);
        let mut s = Script(vec![Step::Data(b"ab")], vec![]);
        assert_eq!(
            fill(&mut b, &mut s, 1 << 20, ShortRead::Unknown).map_ok(),
            (2, Fill::Eof)
        );
        let mut s = Script(vec![Step::Data(b"x"), Step::Fail], vec![]);
        let (n, r) = fill(&mut b, &mut s, 1 << 20, ShortRead::Unknown);
        assert_eq!(n, 1);
        assert!(r.is_err());
        let mut b = Buffer::new(16);
        let mut s = Script(vec![Step::Data(b"abc"), Step::Data(b"def")], vec![]);
        assert_eq!(fill(&mut b, &mut s, 2, ShortRead::Unknown).1.unwrap(), Fill::Budget);
    }

    #[test]
    fn flush_partial_then_block() {
        let mut b = Buffer::new(16);
        b.push(b"hello world");
        let mut s = Script(vec![Step::Take(5), Step::Intr, Step::Take(1), Step::Block], vec![]);
        let (n, r) = flush(&mut b, &mut s);
        assert_eq!((n, r.unwrap()), (6, Flush::WouldBlock));
        assert_eq!(b.data(), b"world");
        let mut s = Script(vec![Step::Take(100)], vec![]);
        assert_eq!(flush(&mut b, &mut s).1.unwrap(), Flush::Drained);
        assert_eq!(s.1, b"world");
        assert!(b.is_empty());
    }

    #[test]
    fn flush_error() {
        let mut b = Buffer::new(16);
        b.push(b"x");
        let mut s = Script(vec![Step::Fail], vec![]);
        assert!(flush(&mut b, &mut s).1.is_err());
    }

    /// Segments a TCP socket has received so far (Linux TCP_INFO).
    fn segs_in(s: &std::net::TcpStream) -> u32 {
        // SAFETY: tcp_info is plain old data; the kernel fills at most `len`
        // bytes of it for a descriptor the stream owns.
        unsafe {
            let mut info: libc::tcp_info = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
            let rc = libc::getsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            );
            assert_eq!(rc, 0);
            info.tcpi_segs_in
        }
    }

    /// The last bytes before a shutdown travel with the FIN: the reader sees
    /// all of them, then EOF, in one segment after the SYN-ACK (three
    /// without MSG_MORE: SYN-ACK, data, FIN).
    #[test]
    fn last_bytes_leave_with_the_fin() {
        use std::io::Read;
        use std::net::{Shutdown, TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let mut b = Buffer::new(64);
        b.push(b"last words");
        assert_eq!(flush(&mut b, &mut LastBytes(&server)).1.unwrap(), Flush::Drained);
        server.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"last words");
        assert_eq!(segs_in(&client), 2, "data and FIN in one segment");
    }

    trait MapOk {
        fn map_ok(self) -> (usize, Fill);
    }
    impl MapOk for (usize, io::Result<Fill>) {
        fn map_ok(self) -> (usize, Fill) {
            (self.0, self.1.unwrap())
        }
    }
}
