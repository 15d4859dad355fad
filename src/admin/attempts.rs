//! Admin API, refused attempts in the log: the first one of an address logged at once (a few per interval), the rest counted per address and written as a summary every 10 s, in a bounded number of lines whatever the number of addresses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::stream::Address;

/// How often the counts are written out (while there are any).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Attempts logged in full, as they come, per interval (the first of each
/// address).
const AT_ONCE: usize = 10;
/// Summary lines naming one address per interval; the rest share a line.
const LINES: usize = 10;
/// Addresses counted one by one per interval; past them, together.
const MAX_ADDRESSES: usize = 4096;

/// What happened to an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 401, a wrong token.
    Wrong,
    /// 401, no bearer token.
    Missing,
    /// 429, too many failures lately.
    Slowed,
    /// A connection closed because its address had too many open (`cap`).
    Crowded { cap: usize },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    wrong: u64,
    missing: u64,
    slowed: u64,
    crowded: u64,
    /// The connection cap named in the summary.
    cap: usize,
    /// Of these, logged in full already.
    logged: u64,
}

impl Counts {
    fn failed(&self) -> u64 {
        self.wrong + self.missing + self.slowed
    }

    fn total(&self) -> u64 {
        self.failed() + self.crowded
    }

    fn add(&mut self, kind: Kind) {
        match kind {
            Kind::Wrong => self.wrong += 1,
            Kind::Missing => self.missing += 1,
            Kind::Slowed => self.slowed += 1,
            Kind::Crowded { cap } => {
                self.crowded += 1;
                self.cap = cap;
            }
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.wrong += o.wrong;
        self.missing += o.missing;
        self.slowed += o.slowed;
        self.crowded += o.crowded;
        self.cap = self.cap.max(o.cap);
        self.logged += o.logged;
    }

    /// "3 wrong token, 1 no bearer token", or "wrong token" alone.
    fn reasons(&self) -> String {
        let parts: Vec<(u64, &str)> = [
            (self.wrong, "wrong token"),
            (self.missing, "no bearer token"),
            (self.slowed, "answered 429"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
        match parts.as_slice() {
            [(_, what)] => what.to_string(),
            _ => parts
                .iter()
                .map(|(n, what)| format!("{n} {what}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The refused attempts of the interval under way.
pub struct Attempts {
    /// When the interval under way ends (`None`: nothing counted).
    until: Option<Instant>,
    by_address: HashMap<Address, Counts>,
    /// Attempts from addresses past [`MAX_ADDRESSES`].
    others: Counts,
    at_once_left: usize,
    /// The end of a newly begun interval, for the loop's timer.
    arm: Option<Instant>,
}

impl Attempts {
    pub fn new() -> Attempts {
        Attempts {
            until: None,
            by_address: HashMap::new(),
            others: Counts::default(),
            at_once_left: AT_ONCE,
            arm: None,
        }
    }

    /// Counts an attempt from `from`; `true`: log it in full now (the
    /// first of its address this interval, while fewer than [`AT_ONCE`]
    /// were). The summary of an interval that is over is written first.
    pub fn note(&mut self, from: Address, kind: Kind, now: Instant) -> bool {
        if self.until.is_some_and(|until| now >= until) {
            self.flush();
        }
        if self.until.is_none() {
            self.until = Some(now + INTERVAL);
            self.arm = self.until;
        }
        let room = self.by_address.len() < MAX_ADDRESSES;
        let counts = match self.by_address.get_mut(&from) {
            Some(c) => c,
            None if room => self.by_address.entry(from).or_default(),
            None => &mut self.others,
        };
        let first = counts.total() == 0;
        counts.add(kind);
        if first && self.at_once_left > 0 {
            self.at_once_left -= 1;
            counts.logged += 1;
            return true;
        }
        false
    }

    /// The end of the interval just begun, once: the loop is to call
    /// [`Self::on_timer`] then.
    pub fn take_timer(&mut self) -> Option<Instant> {
        self.arm.take()
    }

    /// The interval's timer: writes the summary if the interval is over
    /// (the timer of an interval whose summary the next attempt already
    /// wrote finds the next interval under way, which has its own).
    pub fn on_timer(&mut self, now: Instant) {
        if self.until.is_some_and(|until| now >= until) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        for line in self.summary() {
            log::warn!("{line}");
        }
        *self = Attempts::new();
    }

    /// The summary lines: the addresses with the most attempts one line
    /// each (those whose only attempt was logged in full left out), the
    /// rest in one.
    fn summary(&self) -> Vec<String> {
        let secs = INTERVAL.as_secs();
        let mut top: Vec<(Address, Counts)> = self
            .by_address
            .iter()
            .filter(|(_, c)| c.total() > c.logged)
            .map(|(a, c)| (*a, *c))
            .collect();
        top.sort_unstable_by(|(a, x), (b, y)| y.total().cmp(&x.total()).then(a.cmp(b)));
        let mut lines: Vec<String> = top.iter().take(LINES).map(|(a, c)| line(a, c, secs)).collect();
        let mut rest = self.others;
        let mut more = 0;
        for (_, c) in top.iter().skip(LINES) {
            rest.merge(c);
            more += 1;
        }
        if rest.total() > 0 {
            let who = match (more, self.others.total() > 0) {
                (0, _) => format!("addresses past the {MAX_ADDRESSES} counted one by one"),
                (n, false) => format!("{n} more addresses"),
                (n, true) => format!("{n} more addresses and others past the {MAX_ADDRESSES} counted one by one"),
            };
            let mut what = Vec::new();
            if rest.failed() > 0 {
                what.push(format!(
                    "{} ({})",
                    plural(rest.failed(), "failed attempt"),
                    rest.reasons()
                ));
            }
            if rest.crowded > 0 {
                what.push(format!(
                    "{} closed (too many open at once)",
                    plural(rest.crowded, "connection")
                ));
            }
            lines.push(format!(
                "admin: and {} from {who} in the last {secs} s",
                what.join(" and ")
            ));
        }
        lines
    }
}

/// One address's summary line.
fn line(from: &Address, c: &Counts, secs: u64) -> String {
    let closed = format!("closed in the last {secs} s (more than {} open at once)", c.cap);
    match (c.failed(), c.crowded) {
        (failed, 0) => format!(
            "admin: {} from {from} in the last {secs} s ({})",
            plural(failed, "failed attempt"),
            c.reasons()
        ),
        (0, n) => format!("admin: {} from {from} {closed}", plural(n, "connection")),
        (failed, n) => format!(
            "admin: {} from {from} in the last {secs} s ({}); {n} of its connections {closed}",
            plural(failed, "failed attempt"),
            c.reasons(),
        ),
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ip: &str) -> Address {
        Address::of(ip.parse().unwrap())
    }

    #[test]
    fn the_first_is_logged_at_once_the_rest_summed_up_once_per_interval() {
        let now = Instant::now();
        let mut a = Attempts::new();
        let ip = at("10.0.0.5");
        assert!(a.note(ip, Kind::Missing, now));
        assert_eq!(a.take_timer(), Some(now + INTERVAL));
        assert_eq!(a.take_timer(), None, "one timer per interval");
        for _ in 0..100 {
            assert!(!a.note(ip, Kind::Wrong, now));
        }
        for _ in 0..22 {
            a.note(ip, Kind::Slowed, now);
        }
        assert_eq!(
            a.summary(),
            ["admin: 123 failed attempts from 10.0.0.5 in the last 10 s (100 wrong token, 1 no bearer token, 22 answered 429)"]
        );
        a.on_timer(now + INTERVAL / 2);
        assert_eq!(a.summary().len(), 1, "not before the interval is over");
        a.on_timer(now + INTERVAL);
        assert!(a.summary().is_empty(), "written and forgotten");
        // A lone failure is logged at once and not summed up again.
        assert!(a.note(ip, Kind::Wrong, now + INTERVAL));
        assert!(a.summary().is_empty());
    }

    #[test]
    fn lines_are_bounded_whatever_the_number_of_addresses() {
        let now = Instant::now();
        let mut a = Attempts::new();
        let mut at_once = 0;
        for i in 0..(MAX_ADDRESSES as u32 + 500) {
            let ip = Address::of(std::net::IpAddr::from(i.to_be_bytes()));
            for _ in 0..=(i % 3) {
                at_once += usize::from(a.note(ip, Kind::Wrong, now));
            }
        }
        a.note(at("10.9.9.9"), Kind::Crowded { cap: 4 }, now);
        a.note(at("10.9.9.9"), Kind::Crowded { cap: 4 }, now);
        assert_eq!(at_once, AT_ONCE);
        let lines = a.summary();
        assert_eq!(lines.len(), LINES + 1, "{lines:#?}");
        assert!(lines[0].starts_with("admin: 3 failed attempts from "), "{}", lines[0]);
        let last = lines.last().unwrap();
        assert!(
            last.contains(" more addresses and others past the 4096 counted one by one in the last 10 s"),
            "{last}"
        );
        assert!(last.contains("2 connections closed"), "{last}");
        assert!(a.by_address.len() <= MAX_ADDRESSES);
    }

    #[test]
    fn crowded_connections_have_their_own_words() {
        let now = Instant::now();
        let mut a = Attempts::new();
        let ip = at("2001:db8::7");
        for _ in 0..5 {
            a.note(ip, Kind::Crowded { cap: 4 }, now);
        }
        assert_eq!(
            a.summary(),
            ["admin: 5 connections from 2001:db8::/64 closed in the last 10 s (more than 4 open at once)"]
        );
        a.note(ip, Kind::Wrong, now);
        assert_eq!(
            a.summary(),
            ["admin: 1 failed attempt from 2001:db8::/64 in the last 10 s (wrong token); 5 of its connections closed in the last 10 s (more than 4 open at once)"]
        );
        // An interval that is over is written by the next attempt too.
        assert!(a.note(ip, Kind::Wrong, now + INTERVAL));
        assert_eq!(a.take_timer(), Some(now + 2 * INTERVAL));
    }
}
