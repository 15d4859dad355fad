//! Admin API, access: the bearer token of TCP requests, and failed attempts slowed per address (an IPv4 address, an IPv6 /64) so a token cannot be guessed quickly, while another address's failures never refuse a right token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::stream::Address;
use crate::config::AdminToken;

/// Failed attempts one address may make per window; past them it is told
/// to wait (429) without its token being looked at.
pub const FAILS_PER_IP: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);
/// Addresses remembered at most; the map never grows past this.
const MAX_TRACKED: usize = 4096;

/// What a TCP request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// No `Authorization: Bearer` header.
    Missing,
    Wrong,
    /// Too many failures lately: not checked.
    Slowed,
}

/// A failure count over one window.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    fails: u32,
}

impl Window {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.start) < WINDOW
    }

    fn current(&mut self, now: Instant) -> &mut u32 {
        if !self.live(now) {
            *self = Window { start: now, fails: 0 };
        }
        &mut self.fails
    }
}

/// Failed attempts per address, over one-second windows.
///
/// Only failures make an entry, so an address that has not failed is never
/// refused: its token is always checked. The table holds at most
/// [`MAX_TRACKED`] addresses. When it is full, entries whose window is
/// over go first (they hold nothing); when every entry failed within the
/// last second, the one with the fewest failures gives up its place and
/// the newcomer takes over its count and window ("space saving", as in
/// bounded heavy-hitter counting). So making room never gives anyone a
/// fresh start: an attacker who cycles through more addresses than the
/// table holds finds them counted from the lowest count in the table (at
/// the limit, when all it holds are slowed attackers), not from zero. The
/// price is paid only while more than 4096 addresses fail within one
/// second: an address that fails once then may be slowed for the rest of
/// that second, for counts that are partly other addresses'. A right token
/// from an address that has not failed goes through whatever the table
/// holds.
pub struct Limiter {
    by_address: HashMap<Address, Window>,
}

impl Limiter {
    pub fn new() -> Limiter {
        Limiter {
            by_address: HashMap::new(),
        }
    }

    /// Checks `bearer` (the header's token) from `from` against `token`,
    /// counting a failure.
    pub fn check(&mut self, token: Option<&AdminToken>, bearer: Option<&[u8]>, from: Address, now: Instant) -> Verdict {
        if self.slowed(from, now) {
            return Verdict::Slowed;
        }
        let verdict = match (token, bearer) {
            (Some(t), Some(b)) if t.matches(b) => return Verdict::Ok,
            (_, None) => Verdict::Missing,
            _ => Verdict::Wrong,
        };
        self.failed(from, now);
        verdict
    }

    fn slowed(&mut self, from: Address, now: Instant) -> bool {
        self.by_address
            .get_mut(&from)
            .is_some_and(|w| *w.current(now) >= FAILS_PER_IP)
    }

    fn failed(&mut self, from: Address, now: Instant) {
        if let Some(w) = self.by_address.get_mut(&from) {
            *w.current(now) += 1;
            return;
        }
        let mut entry = Window { start: now, fails: 0 };
        if self.by_address.len() >= MAX_TRACKED {
            // One pass: drop what is over, and find the live entry with
            // the fewest failures in case that is not enough.
            let mut fewest: Option<(Address, Window)> = None;
            self.by_address.retain(|a, w| {
                let live = w.live(now);
                if live && fewest.is_none_or(|(_, f)| w.fails < f.fails) {
                    fewest = Some((*a, *w));
                }
                live
            });
            if self.by_address.len() >= MAX_TRACKED {
                if let Some((a, w)) = fewest {
                    self.by_address.remove(&a);
                    entry = w;
                }
            }
        }
        entry.fails = entry.fails.saturating_add(1);
        self.by_address.insert(from, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn at(ip: &str) -> Address {
        Address::of(ip.parse().unwrap())
    }

    #[test]
    fn ten_failures_a_second_then_slowed_even_with_the_right_token() {
        let now = Instant::now();
        let token = AdminToken::new("0123456789abcdef");
        let mut l = Limiter::new();
        let (ip, other) = (at("10.0.0.1"), at("10.0.0.2"));
        assert_eq!(l.check(Some(&token), None, ip, now), Verdict::Missing);
        for _ in 1..FAILS_PER_IP {
            assert_eq!(l.check(Some(&token), Some(b"guess"), ip, now), Verdict::Wrong);
        }
        let good = Some(&b"0123456789abcdef"[..]);
        assert_eq!(l.check(Some(&token), good, ip, now), Verdict::Slowed);
        assert_eq!(l.check(Some(&token), good, other, now), Verdict::Ok, "per address");
        assert_eq!(
            l.check(Some(&token), good, ip, now + WINDOW),
            Verdict::Ok,
            "next second"
        );
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let now = Instant::now();
        let mut l = Limiter::new();
        for i in 0..FAILS_PER_IP {
            let ip = format!("2001:db8:1:2::{i:x}");
            assert_eq!(l.check(None, Some(b"x"), at(&ip), now), Verdict::Wrong);
        }
        assert_eq!(
            l.check(None, Some(b"x"), at("2001:db8:1:2:ffff::1"), now),
            Verdict::Slowed
        );
        assert_eq!(l.check(None, Some(b"x"), at("2001:db8:1:3::1"), now), Verdict::Wrong);
        assert_eq!(at("::ffff:10.0.0.1"), at("10.0.0.1"));
        assert_eq!(at("2001:db8:1:2::9").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn many_failing_addresses_never_refuse_a_right_token_from_another() {
        let now = Instant::now();
        let token = AdminToken::new("0123456789abcdef");
        let good = Some(&b"0123456789abcdef"[..]);
        let mut l = Limiter::new();
        for i in 0..(2 * MAX_TRACKED as u32) {
            let ip = Address::of(IpAddr::from([10, 1, (i >> 8) as u8, i as u8]));
            l.check(Some(&token), Some(b"x"), ip, now);
            assert!(l.by_address.len() <= MAX_TRACKED);
        }
        assert_eq!(l.check(Some(&token), good, at("192.168.1.1"), now), Verdict::Ok);
    }

    #[test]
    fn a_full_table_gives_no_fresh_start() {
        let now = Instant::now();
        let mut l = Limiter::new();
        let slowed = |l: &mut Limiter, ip: Address| {
            while l.check(None, Some(b"x"), ip, now) != Verdict::Slowed {}
        };
        let attacker = |i: usize| Address::of(IpAddr::from([10, 2, (i >> 8) as u8, i as u8]));
        for i in 0..MAX_TRACKED {
            slowed(&mut l, attacker(i));
        }
        // A newcomer takes over a slowed entry: slowed after one failure.
        let fresh = at("172.16.0.1");
        assert_eq!(l.check(None, Some(b"x"), fresh, now), Verdict::Wrong);
        assert_eq!(l.check(None, Some(b"x"), fresh, now), Verdict::Slowed);
        // Once the second is over, room is made from entries that are over.
        let later = now + WINDOW;
        assert_eq!(l.check(None, Some(b"x"), at("172.16.0.2"), later), Verdict::Wrong);
        assert_eq!(l.by_address.len(), 1);
    }
}
