//! Admin API, access: the bearer token of TCP requests, and failed attempts slowed per address (and overall) so a token cannot be guessed quickly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AdminToken;

/// Failed attempts one address may make per window; past them it is told
/// to wait (429) without its token being looked at.
pub const FAILS_PER_IP: u32 = 10;
/// Failed attempts from all addresses together per window.
const FAILS_OVERALL: u32 = 100;
const WINDOW: Duration = Duration::from_secs(1);
/// Addresses remembered at most; the map never grows past this.
const MAX_TRACKED: usize = 4096;

/// What a TCP request's credentials amount to.
#[derive(Debug, PartialEq, Eq)]
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
    fn current(&mut self, now: Instant) -> &mut u32 {
        if now.saturating_duration_since(self.start) >= WINDOW {
            *self = Window { start: now, fails: 0 };
        }
        &mut self.fails
    }
}

/// Failed attempts per address and overall, over one-second windows.
pub struct Limiter {
    by_ip: HashMap<IpAddr, Window>,
    overall: Window,
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            by_ip: HashMap::new(),
            overall: Window { start: now, fails: 0 },
        }
    }

    /// Checks `bearer` (the header's token) from `ip` against `token`,
    /// counting a failure.
    pub fn check(&mut self, token: Option<&AdminToken>, bearer: Option<&[u8]>, ip: IpAddr, now: Instant) -> Verdict {
        if self.slowed(ip, now) {
            return Verdict::Slowed;
        }
        let verdict = match (token, bearer) {
            (Some(t), Some(b)) if t.matches(b) => return Verdict::Ok,
            (_, None) => Verdict::Missing,
            _ => Verdict::Wrong,
        };
        self.failed(ip, now);
        verdict
    }

    fn slowed(&mut self, ip: IpAddr, now: Instant) -> bool {
        if *self.overall.current(now) >= FAILS_OVERALL {
            return true;
        }
        self.by_ip.get_mut(&ip).is_some_and(|w| *w.current(now) >= FAILS_PER_IP)
    }

    fn failed(&mut self, ip: IpAddr, now: Instant) {
        *self.overall.current(now) += 1;
        if self.by_ip.len() >= MAX_TRACKED && !self.by_ip.contains_key(&ip) {
            self.by_ip
                .retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
        }
        if self.by_ip.len() < MAX_TRACKED || self.by_ip.contains_key(&ip) {
            let w = self.by_ip.entry(ip).or_insert(Window { start: now, fails: 0 });
            *w.current(now) += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_failures_a_second_then_slowed_even_with_the_right_token() {
        let now = Instant::now();
        let token = AdminToken::new("0123456789abcdef");
        let mut l = Limiter::new(now);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
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
    fn many_addresses_are_bounded_overall() {
        let now = Instant::now();
        let mut l = Limiter::new(now);
        for i in 0..FAILS_OVERALL {
            let ip = IpAddr::from([10, 1, (i >> 8) as u8, i as u8]);
            assert_eq!(l.check(None, Some(b"x"), ip, now), Verdict::Wrong);
        }
        assert_eq!(
            l.check(None, Some(b"x"), "10.9.9.9".parse().unwrap(), now),
            Verdict::Slowed
        );
        assert!(l.by_ip.len() <= MAX_TRACKED);
    }
}
