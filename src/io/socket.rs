//! Sockets, under every step of the flow: binding listeners with a real
//! backlog, opening non-blocking backend connections, and telling apart the
//! accept errors that mean "out of descriptors, back off" from the rest.

use std::io;
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Listen backlog of the stats listener (services have `backlog`).
pub const BACKLOG: u32 = 1024;

/// Binds a non-blocking listener on `addr` with SO_REUSEADDR; up to
/// `backlog` handshaken clients wait in the kernel until accepted.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux, which
    // saves a setsockopt per client.
    let socket = nodelay_socket(addr)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog_arg(backlog))?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Changes the backlog of a listening socket in place (Linux accepts a
/// second listen(2) for that); connections already queued stay queued.
pub fn set_backlog(l: &TcpListener, backlog: u32) -> io::Result<()> {
    SockRef::from(l).listen(backlog_arg(backlog))
}

/// The kernel's cap on listen backlogs, if it can be read.
pub fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Says so in the log when the kernel will quietly use a smaller backlog
/// than the one configured.
pub fn warn_if_capped(service: &str, backlog: u32) {
    if let Some(cap) = somaxconn().filter(|&cap| backlog > cap) {
        log::warn!("service {service}: backlog {backlog} is capped at {cap} by net.core.somaxconn");
    }
}

/// A non-blocking TCP socket for `addr`'s family with TCP_NODELAY set.
fn nodelay_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_nodelay(true)?;
    Ok(socket)
}

fn backlog_arg(backlog: u32) -> i32 {
    i32::try_from(backlog).unwrap_or(i32::MAX)
}

/// Starts a non-blocking connect to `addr` with TCP_NODELAY set.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = nodelay_socket(addr)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Where a non-blocking connect stands: `Ok(true)` connected, `Ok(false)`
/// still in progress, `Err` failed. Complete means no pending error and a
/// peer address; `clean_writable` says the last event was writable without
/// an error, which on Linux alone proves completion (EPOLLOUT is reported on
/// a connecting socket only once the handshake is done).
pub fn connect_finished(stream: &TcpStream, clean_writable: bool) -> io::Result<bool> {
    if cfg!(target_os = "linux") && clean_writable {
        return Ok(true);
    }
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes the next close of `stream` send a reset instead of a FIN.
pub fn set_reset_on_close(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(std::time::Duration::ZERO));
}

/// Out of descriptors or kernel memory: retrying at once would spin.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// A connect failed for a reason on this machine, not the backend's: out
/// of descriptors or memory, or no local port left for the destination
/// (EADDRNOTAVAIL). Such a failure says nothing about the backend's health.
pub fn is_local_connect_error(e: &io::Error) -> bool {
    is_resource_exhaustion(e) || matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE))
}

/// Errors about one failed handshake that say nothing about the listener.
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
        || e.kind() == io::ErrorKind::ConnectionAborted
        || e.kind() == io::ErrorKind::ConnectionReset
        || matches!(e.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_port_zero_and_refuse_busy_address() {
        let l = bind("127.0.0.1:0".parse().unwrap(), BACKLOG).unwrap();
        let addr = l.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(
            bind(addr, BACKLOG).is_err(),
            "a listening address cannot be bound twice"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let l = bind("127.0.0.1:0".parse().unwrap(), BACKLOG).unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }

    /// Connections the kernel completes on `addr` while nobody accepts,
    /// out of `n` tried: each try gives up after 300 ms (a SYN dropped by a
    /// full queue is retried by the client only after a second).
    pub(crate) fn completed_connects(addr: SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
        (0..n)
            .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300)).ok())
            .collect()
    }

    #[test]
    fn backlog_bounds_the_queue_and_can_grow_in_place() {
        let l = bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = l.local_addr().unwrap();
        // Linux queues backlog + 1 handshaken connections.
        let first = completed_connects(addr, 6);
        assert_eq!(first.len(), 3, "backlog 2 queues 3");
        set_backlog(&l, 6).unwrap();
        let more = completed_connects(addr, 6);
        assert_eq!(more.len(), 4, "backlog 6 queues 7, 3 already there");
        let mut accepted = 0;
        while l.accept().is_ok() {
            accepted += 1;
        }
        assert_eq!(accepted, 7, "queued connections survive the change");
    }
}
