//! Configuration, step 2 for addresses: listen addresses parsed, backend host names resolved, clashes found.

use std::net::{SocketAddr, ToSocketAddrs};

/// A listen address must be a literal `IP:PORT` or `[IPv6]:PORT`.
pub(super) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an IP:PORT or [IPv6]:PORT address"))
}

/// Backends may also be `hostname:PORT`, resolved now (first address wins,
/// IPv4 preferred so `localhost` means what most people expect).
pub(super) fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {s:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?} resolved to no address"))
}

/// Two listen addresses that cannot both be bound: the same port on the
/// same address, or with a wildcard address of the same family (0.0.0.0:80
/// takes 127.0.0.1:80 too). Port 0 never clashes.
pub(super) fn listens_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}
