//! Configuration, step 2 for `stats.allow`: an address block (`10.0.0.0/8`, `::1/128`, a bare IP) parsed and matched.

use std::fmt;
use std::net::IpAddr;

/// A block of addresses: the network address and its prefix length. IPv4
/// blocks also match IPv4-mapped IPv6 peers (`::ffff:10.1.2.3`), and a
/// mapped block (`::ffff:10.0.0.0/104`) is kept as the IPv4 block it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `IP/PREFIX` or a bare `IP` (the one address). The address
    /// must be the block's first one: `10.0.0.1/8` is a mistake, named.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let hint = "expected IP/PREFIX or an IP, e.g. \"10.0.0.0/8\", \"::1/128\", \"192.168.1.7\"";
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: not an address block ({hint})"))?;
        let max = max_prefix(addr);
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be a number from 0 to {max}"))?,
        };
        let cidr = Cidr { addr, prefix }.unmapped();
        let network = cidr.network();
        if network != cidr.addr {
            return Err(format!(
                "{s:?}: has bits set past the /{prefix} prefix (the block is {})",
                Cidr { addr: network, ..cidr }
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    /// An IPv4-mapped IPv6 block covering only mapped addresses, as IPv4.
    fn unmapped(self) -> Cidr {
        match self.addr {
            IpAddr::V6(v6) if self.prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => Cidr {
                    addr: IpAddr::V4(v4),
                    prefix: self.prefix - 96,
                },
                None => self,
            },
            _ => self,
        }
    }

    /// The block's first address.
    fn network(&self) -> IpAddr {
        mask(self.addr, self.prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// 32 for IPv4, 128 for IPv6.
fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip` with every bit past the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & keep).into())
        }
        IpAddr::V6(v6) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & keep).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_and_bare_addresses_parse() {
        assert_eq!(Cidr::parse("127.0.0.0/8").unwrap().to_string(), "127.0.0.0/8");
        assert_eq!(Cidr::parse("::1/128").unwrap().to_string(), "::1/128");
        assert_eq!(Cidr::parse("192.168.1.7").unwrap().to_string(), "192.168.1.7/32");
        assert_eq!(Cidr::parse("fe80::1").unwrap().to_string(), "fe80::1/128");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        assert_eq!(Cidr::parse("::ffff:10.0.0.0/104").unwrap().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn matching() {
        let lo = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(lo.contains(ip("127.0.0.1")));
        assert!(lo.contains(ip("127.255.255.255")));
        assert!(!lo.contains(ip("128.0.0.1")));
        assert!(lo.contains(ip("::ffff:127.0.0.1")), "a mapped peer matches IPv4 rules");
        assert!(!lo.contains(ip("::1")));
        let one = Cidr::parse("::1/128").unwrap();
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        assert!(!one.contains(ip("127.0.0.1")));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));
        let net = Cidr::parse("2001:db8::/32").unwrap();
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        let host = Cidr::parse("10.1.2.3").unwrap();
        assert!(host.contains(ip("10.1.2.3")) && !host.contains(ip("10.1.2.4")));
    }

    #[test]
    fn mistakes_are_named() {
        for (bad, says) in [
            ("10.0.0.300/8", "not an address block"),
            ("localhost", "not an address block"),
            ("", "not an address block"),
            ("10.0.0.0/", "prefix length must be a number from 0 to 32"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("::1/129", "from 0 to 128"),
            ("10.0.0.0/-1", "from 0 to 32"),
            ("10.0.0.0/8/8", "from 0 to 32"),
            ("10.0.0.1/8", "the block is 10.0.0.0/8"),
            ("2001:db8::1/32", "the block is 2001:db8::/32"),
        ] {
            let e = Cidr::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }
}
