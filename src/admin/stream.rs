//! Admin API, transport: a client socket (TCP or unix) and who is at the other end, as the log names it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::stats::wire;

/// An admin client's socket.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Who sent a request: a TCP peer, or a local process on the unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The process's credentials as the kernel gave them, when it did.
    Unix {
        uid: Option<u32>,
        pid: Option<i32>,
    },
}

/// Who a limit applies to: one IPv4 address, one IPv6 /64 (a host is
/// usually given a whole /64 and may pick any address in it), or the unix
/// socket as a whole (its clients are local processes of the user it
/// belongs to). Failed token checks and connection slots are counted per
/// `Address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Ip(IpAddr),
    Unix,
}

impl Address {
    /// The address `ip` counts under (an IPv4-mapped IPv6 address as IPv4).
    pub fn of(ip: IpAddr) -> Address {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Address::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => Address::Ip(IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX)))),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Address::Ip(IpAddr::V6(a)) => write!(f, "{a}/64"),
            Address::Unix => f.write_str("the unix socket"),
        }
    }
}

impl Peer {
    /// The address its limits are counted against.
    pub fn address(&self) -> Address {
        match self {
            Peer::Tcp(a) => Address::of(a.ip()),
            Peer::Unix { .. } => Address::Unix,
        }
    }

    /// The credentials of the process at the other end of `s`.
    pub fn of_unix(s: &UnixStream) -> Peer {
        let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for writes of the sizes given.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Peer::Unix {
                uid: Some(cred.uid),
                pid: Some(cred.pid),
            }
        } else {
            Peer::Unix { uid: None, pid: None }
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix {
                uid: Some(uid),
                pid: Some(pid),
            } => write!(f, "unix(uid={uid},pid={pid})"),
            Peer::Unix { .. } => f.write_str("unix"),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl wire::Stream for Stream {
    fn shutdown_write(&self) {
        match self {
            Stream::Tcp(s) => s.shutdown_write(),
            Stream::Unix(s) => s.shutdown_write(),
        }
    }
}

impl Source for Stream {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(registry, token, interests),
            Stream::Unix(s) => s.register(registry, token, interests),
        }
    }

    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(registry, token, interests),
            Stream::Unix(s) => s.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(registry),
            Stream::Unix(s) => s.deregister(registry),
        }
    }
}
