//! Unit tests of the prober: timer entries per probe, stale entries.

use super::*;
use crate::config::Config;
use mio::{Events, Poll};

/// Runs a bare event loop over `prober` until `end`; returns the most
/// timer entries seen at once.
fn run_until(end: Instant, prober: &mut Prober, services: &mut Slab<Service>, timers: &mut Timers) -> usize {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(64);
    let mut most = timers.len();
    while Instant::now() < end {
        let timeout = timers
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()));
        poll.poll(&mut events, timeout.map(|t| t.min(Duration::from_millis(50))))
            .unwrap();
        let now = Instant::now();
        for e in events.iter() {
            if let Some(Target::Probe(key)) = Target::from_token(e.token()) {
                prober.on_event(key, services, timers, now);
            }
        }
        while let Some((_, kind)) = timers.pop_expired(now) {
            if let TimerKind::Probe(key, tag) = kind {
                prober.on_timer(key, tag, services, timers, poll.registry(), now);
            }
        }
        most = most.max(timers.len());
    }
    most
}

#[test]
fn one_timer_entry_per_probe_with_a_timeout_far_above_the_interval() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_addr = open.local_addr().unwrap();
    std::thread::spawn(move || open.incoming().for_each(drop));
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "[[service]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n\
         [service.health_check]\ninterval_ms = 1\ntimeout_ms = 86400000\n\
         [[service.backend]]\naddress = \"{open_addr}\"\n[[service.backend]]\naddress = \"{refused}\"\n"
    );
    let cfg = Config::parse(&text).unwrap();
    let now = Instant::now();
    let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut services = Slab::new();
    let svc = services.insert(Service::new(cfg.services[0].clone(), listener, now));
    let (mut prober, mut timers) = (Prober::default(), Timers::default());
    prober.schedule_service(svc, &services[svc], &mut timers, now);
    let most = run_until(
        now + Duration::from_millis(500),
        &mut prober,
        &mut services,
        &mut timers,
    );
    let failed: Vec<u64> = services[svc]
        .balancer
        .backends
        .iter()
        .map(|(_, b)| b.failures)
        .collect();
    assert!(failed[1] >= 20, "the refusing backend was checked {} times", failed[1]);
    assert_eq!(failed[0], 0, "the open backend passes");
    assert!(most <= 2, "{most} timer entries for 2 probes");
}

#[test]
fn entries_of_removed_probes_are_not_live() {
    let mut text = String::from(
        "[[service]]\nname = \"s\"\nlisten = \"127.0.0.1:0\"\n[service.health_check]\ninterval_ms = 600000\n",
    );
    for port in 1..=5 {
        text.push_str(&format!("[[service.backend]]\naddress = \"127.0.0.1:{port}\"\n"));
    }
    let cfg = Config::parse(&text).unwrap();
    let now = Instant::now();
    let listener = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut services = Slab::new();
    let svc = services.insert(Service::new(cfg.services[0].clone(), listener, now));
    let (mut prober, mut timers) = (Prober::default(), Timers::default());
    // Every reload reschedules the service's probes.
    for _ in 0..10 {
        prober.schedule_service(svc, &services[svc], &mut timers, now);
    }
    assert_eq!(timers.len(), 50);
    timers.retain(|_, kind| match *kind {
        TimerKind::Probe(key, tag) => prober.timer_is_live(key, tag),
        _ => true,
    });
    assert_eq!(timers.len(), 5);
}
