//! Bytes in flight, bulk variant (Linux): zero-copy relaying with splice(2). A
//! direction that keeps filling whole buffers moves its bytes socket -> pipe
//! -> socket inside the kernel instead of through a user-space buffer. Pipes
//! are pooled: a pair holds one only while bytes are in it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking pipe and how many bytes it holds.
pub struct Pipe {
    rd: OwnedFd,
    wr: OwnedFd,
    /// Bytes in the pipe.
    pub len: usize,
    /// Bytes the pipe is sized for.
    pub cap: usize,
}

impl Pipe {
    /// A new pipe sized for about `size` bytes (the kernel rounds to pages).
    pub fn new(size: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        let set = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
        let cap = if set > 0 {
            set as usize
        } else {
            // SAFETY: as above.
            let got = unsafe { libc::fcntl(wr.as_raw_fd(), libc::F_GETPIPE_SZ) };
            if got > 0 {
                got as usize
            } else {
                65536
            }
        };
        Ok(Pipe { rd, wr, len: 0, cap })
    }

    /// Moves up to `max` bytes from socket `src` into the pipe; 0 means EOF.
    pub fn fill_from(&mut self, src: RawFd, max: usize) -> io::Result<usize> {
        let n = splice(src, self.wr.as_raw_fd(), max)?;
        self.len += n;
        Ok(n)
    }

    /// Moves what the pipe holds to socket `dst`.
    pub fn drain_to(&mut self, dst: RawFd) -> io::Result<usize> {
        let n = splice(self.rd.as_raw_fd(), dst, self.len)?;
        self.len -= n.min(self.len);
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the duration of the call;
        // null offsets are allowed for pipes and sockets.
        let r = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Empty pipes kept for reuse, so a bulk transfer costs no pipe2 per burst.
pub struct PipePool {
    size: usize,
    free: Vec<Pipe>,
    max_free: usize,
    /// Creating a pipe failed (e.g. out of descriptors): user-space copying
    /// goes on, and splicing is retried only after pipes come back.
    pub starved: bool,
}

impl PipePool {
    pub fn new(size: usize, max_free: usize) -> PipePool {
        PipePool {
            size,
            free: Vec::new(),
            max_free,
            starved: false,
        }
    }

    /// Pipe size handed out from now on, and idle pipes kept.
    pub fn set_size(&mut self, size: usize, max_free: usize) {
        if size != self.size {
            self.size = size;
            self.free.clear();
        }
        self.max_free = max_free;
        self.free.truncate(max_free);
    }

    /// An empty pipe, or `None` when none can be had now.
    pub fn get(&mut self) -> Option<Pipe> {
        if let Some(p) = self.free.pop() {
            return Some(p);
        }
        match Pipe::new(self.size) {
            Ok(p) => Some(p),
            Err(_) => {
                self.starved = true;
                None
            }
        }
    }

    /// Idle pipes kept at most.
    pub fn max_free(&self) -> usize {
        self.max_free
    }

    /// Closes every idle pipe (their descriptors are wanted elsewhere).
    pub fn shrink(&mut self) {
        self.free.clear();
    }

    /// Takes a pipe back; one that still holds bytes is closed instead.
    pub fn put(&mut self, pipe: Pipe) {
        self.starved = false;
        if pipe.len == 0 && self.free.len() < self.max_free {
            self.free.push(pipe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn splices_socket_to_socket() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        let mut pipe = Pipe::new(16384).unwrap();
        assert!(pipe.cap >= 16384);
        a.write_all(b"zero copy").unwrap();
        let mut got = 0;
        while got < 9 {
            got += pipe.fill_from(b.as_raw_fd(), pipe.cap - pipe.len).unwrap_or(0);
        }
        assert_eq!(pipe.len, 9);
        assert_eq!(pipe.drain_to(c.as_raw_fd()).unwrap(), 9);
        let mut buf = [0u8; 9];
        d.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"zero copy");
        b.set_nonblocking(true).unwrap();
        let e = pipe.fill_from(b.as_raw_fd(), 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(a);
        let mut eof = None;
        for _ in 0..1000 {
            match pipe.fill_from(b.as_raw_fd(), 100) {
                Ok(n) => {
                    eof = Some(n);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
            }
        }
        assert_eq!(eof, Some(0), "EOF reads as 0");
    }

    #[test]
    fn pool_keeps_only_empty_pipes() {
        let mut pool = PipePool::new(4096, 2);
        let mut p = pool.get().unwrap();
        p.len = 10;
        pool.put(p);
        assert!(pool.free.is_empty());
        let p = pool.get().unwrap();
        pool.put(p);
        assert_eq!(pool.free.len(), 1);
    }
}
