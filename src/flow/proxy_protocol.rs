//! The PROXY protocol header (v1 text, v2 binary) that starts a backend
//! connection when `send_proxy` is set, carrying the client's address and the
//! address it connected to.

use std::net::{IpAddr, SocketAddr};

use crate::config::SendProxy;

const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

/// Both addresses in one family: IPv4-mapped IPv6 becomes IPv4 when both are.
fn same_family(src: SocketAddr, dst: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        _ => a,
    };
    let (s, d) = (unmap(src), unmap(dst));
    match (s, d) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => Some((s, d)),
        _ if src.is_ipv6() && dst.is_ipv6() => Some((src, dst)),
        _ => None,
    }
}

/// The header for a client `src` that connected to `dst`; empty for `None`.
pub fn header(kind: SendProxy, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    match kind {
        SendProxy::None => Vec::new(),
        SendProxy::V1 => v1(src, dst),
        SendProxy::V2 => v2(src, dst),
    }
}

fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    match same_family(src, dst) {
        Some((s, d)) => {
            let fam = if s.is_ipv4() { "TCP4" } else { "TCP6" };
            format!("PROXY {fam} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port()).into_bytes()
        }
        None => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY command
    match same_family(src, dst) {
        Some((SocketAddr::V4(s), SocketAddr::V4(d))) => {
            out.push(0x11); // TCP over IPv4
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        Some((SocketAddr::V6(s), SocketAddr::V6(d))) => {
            out.push(0x21); // TCP over IPv6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            out.push(0x00); // UNSPEC
            out.extend_from_slice(&0u16.to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_v4_and_v6() {
        let h = header(
            SendProxy::V1,
            "1.2.3.4:5678".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 1.2.3.4 10.0.0.1 5678 80\r\n");
        let h = header(
            SendProxy::V1,
            "[::1]:5678".parse().unwrap(),
            "[2001:db8::1]:80".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP6 ::1 2001:db8::1 5678 80\r\n");
        let h = header(
            SendProxy::V1,
            "[::ffff:1.2.3.4]:1".parse().unwrap(),
            "[::ffff:5.6.7.8]:2".parse().unwrap(),
        );
        assert_eq!(h, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
        let h = header(SendProxy::V1, "1.2.3.4:1".parse().unwrap(), "[::1]:2".parse().unwrap());
        assert_eq!(h, b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_v4() {
        let h = header(
            SendProxy::V2,
            "1.2.3.4:5678".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 1, 2, 3, 4, 10, 0, 0, 1, 0x16, 0x2e, 0, 80]);
        assert_eq!(h, want);
    }

    #[test]
    fn v2_v6_length() {
        let h = header(SendProxy::V2, "[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap());
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
    }
}
