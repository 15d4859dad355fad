//! Unit tests of the strategies: exact sequences, spreads, consistency.

use super::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;

fn cfg(addr: &str, weight: u32, backup: bool) -> BackendConfig {
    BackendConfig {
        address: addr.to_string(),
        addr: addr.parse().unwrap(),
        weight,
        backup,
        max_connections: 0,
    }
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn lb(strategy: Strategy, weights: &[u32]) -> Balancer {
    let cfgs: Vec<_> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| cfg(&format!("127.0.0.1:{}", 1000 + i), w, false))
        .collect();
    Balancer::new(strategy, &cfgs, Instant::now())
}

#[test]
fn smooth_wrr_exact_sequence() {
    // nginx's documented sequence for weights 5, 1, 1.
    let mut b = lb(Strategy::RoundRobin, &[5, 1, 1]);
    let seq: Vec<usize> = (0..14).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    // 3:1 interleaves, never four in a row.
    let mut b = lb(Strategy::RoundRobin, &[3, 1]);
    let seq: Vec<usize> = (0..8).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    assert_eq!(seq, vec![0, 0, 1, 0, 0, 0, 1, 0]);
}

#[test]
fn wrr_skips_down_and_tried() {
    let mut b = lb(Strategy::RoundRobin, &[1, 1, 1]);
    b.set_up(1, false, Instant::now());
    let seq: Vec<usize> = (0..4).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    assert_eq!(seq, vec![0, 2, 0, 2]);
    assert_eq!(b.pick(ip(1), &[0, 2]), None);
}

#[test]
fn random_spread_follows_weights() {
    let mut b = lb(Strategy::Random, &[1, 3]);
    let mut counts = [0u32; 2];
    for _ in 0..40000 {
        counts[b.pick(ip(1), &[]).unwrap()] += 1;
    }
    let share = counts[1] as f64 / 40000.0;
    assert!((0.70..0.80).contains(&share), "{counts:?}");
}

#[test]
fn least_conn_prefers_fewest_per_weight_and_rotates_ties() {
    let mut b = lb(Strategy::LeastConn, &[1, 1, 2]);
    b.backends[0].active = 2;
    b.backends[1].active = 1;
    b.backends[2].active = 3; // 1.5 per weight
    assert_eq!(b.pick(ip(1), &[]), Some(1));
    b.backends[1].active = 2;
    b.backends[2].active = 4; // all equal per weight: rotate
    let picks: Vec<usize> = (0..3).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    let mut sorted = picks.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2], "ties rotate: {picks:?}");
}

#[test]
fn power_of_two_never_picks_the_busier_of_two() {
    let mut b = lb(Strategy::PowerOfTwo, &[1, 1]);
    b.backends[0].active = 10;
    let mut counts = [0u32; 2];
    for _ in 0..1000 {
        counts[b.pick(ip(1), &[]).unwrap()] += 1;
    }
    // Backend 0 wins only when both picks land on it (~1/4).
    assert!(counts[1] > 650 && counts[0] > 150, "{counts:?}");
}

#[test]
fn ip_hash_is_sticky_and_consistent() {
    let mut b = lb(Strategy::IpHash, &[1, 1, 1, 1]);
    let before: HashMap<u32, usize> = (0..2000).map(|i| (i, b.pick(ip(i), &[]).unwrap())).collect();
    for i in 0..2000 {
        assert_eq!(b.pick(ip(i), &[]), Some(before[&i]));
    }
    let per: Vec<usize> = (0..4).map(|k| before.values().filter(|&&v| v == k).count()).collect();
    assert!(per.iter().all(|&c| c > 250), "spread {per:?}");
    let now = Instant::now();
    b.set_up(2, false, now);
    for i in 0..2000 {
        let k = b.pick(ip(i), &[]).unwrap();
        if before[&i] == 2 {
            assert_ne!(k, 2);
        } else {
            assert_eq!(k, before[&i], "client {i} moved without cause");
        }
    }
    b.set_up(2, true, now);
    for i in 0..2000 {
        assert_eq!(b.pick(ip(i), &[]), Some(before[&i]), "client {i} did not return");
    }
}

#[test]
fn ip_hash_ignores_port_and_maps_v4_in_v6() {
    let v4: IpAddr = "10.1.2.3".parse().unwrap();
    let v6: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    assert_eq!(hash_ip(v4), hash_ip(v6));
}

#[test]
fn backups_only_when_no_primary_is_up() {
    let now = Instant::now();
    let cfgs = vec![cfg("127.0.0.1:1", 1, false), cfg("127.0.0.1:2", 1, true)];
    for strategy in [
        Strategy::RoundRobin,
        Strategy::Random,
        Strategy::LeastConn,
        Strategy::PowerOfTwo,
        Strategy::IpHash,
    ] {
        let mut b = Balancer::new(strategy, &cfgs, now);
        for i in 0..20 {
            assert_eq!(b.pick(ip(i), &[]), Some(0), "{strategy}");
        }
        b.set_up(0, false, now);
        for i in 0..20 {
            assert_eq!(b.pick(ip(i), &[]), Some(1), "{strategy}");
        }
        b.set_up(0, true, now);
        assert_eq!(b.pick(ip(1), &[]), Some(0), "{strategy}");
    }
}

#[test]
fn max_connections_excludes_full_backends() {
    let now = Instant::now();
    let mut c = cfg("127.0.0.1:1", 1, false);
    c.max_connections = 1;
    let mut b = Balancer::new(Strategy::RoundRobin, &[c, cfg("127.0.0.1:2", 1, false)], now);
    b.backends[0].active = 1;
    for _ in 0..5 {
        assert_eq!(b.pick(ip(1), &[]), Some(1));
    }
    b.backends[1].cfg.max_connections = 1;
    b.backends[1].active = 1;
    assert_eq!(b.pick(ip(1), &[]), None);
}

#[test]
fn drained_and_maint_backends_take_no_new_clients_and_backups_step_in() {
    let cfgs = [
        cfg("127.0.0.1:1", 1, false),
        cfg("127.0.0.1:2", 1, false),
        cfg("127.0.0.1:3", 1, true),
    ];
    let mut b = Balancer::new(Strategy::RoundRobin, &cfgs, Instant::now());
    b.backends[0].admin = AdminState::Drain;
    let seq: Vec<usize> = (0..3).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    assert_eq!(seq, vec![1, 1, 1]);
    b.backends[1].admin = AdminState::Maint;
    assert_eq!(b.pick(ip(1), &[]), Some(2), "no primary usable: the backup");
    b.backends[0].admin = AdminState::Ready;
    assert_eq!(b.pick(ip(1), &[]), Some(0));
}

#[test]
fn runtime_weight_overrides_the_file_and_resets_the_cycle() {
    let mut b = lb(Strategy::RoundRobin, &[1, 1]);
    assert_eq!(b.pick(ip(1), &[]), Some(0));
    b.backends[0].weight_override = Some(3);
    b.reweight();
    let seq: Vec<usize> = (0..8).map(|_| b.pick(ip(1), &[]).unwrap()).collect();
    assert_eq!(seq, vec![0, 0, 1, 0, 0, 0, 1, 0]);
    assert_eq!(b.backends[0].effective_weight(), 3);
    b.backends[0].weight_override = None;
    assert_eq!(b.backends[0].effective_weight(), 1);
}
