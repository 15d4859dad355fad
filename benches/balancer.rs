//! Micro benchmarks of the balancer: each strategy's pick with 3 and 100
//! backends, and the ip_hash lookup alone.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use easyproxy::balance::{hash_ip, Balancer};
use easyproxy::config::{BackendConfig, Strategy};

fn backends(n: usize) -> Vec<BackendConfig> {
    (0..n)
        .map(|i| BackendConfig {
            address: format!("10.0.{}.{}:3306", i / 250, i % 250),
            addr: format!("10.0.{}.{}:3306", i / 250, i % 250).parse().unwrap(),
            weight: 1 + (i % 4) as u32,
            backup: false,
            max_connections: 0,
        })
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 100] {
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastConn,
            Strategy::PowerOfTwo,
            Strategy::IpHash,
        ] {
            let mut b = Balancer::new(strategy, &backends(n), Instant::now());
            let mut ip = 0u32;
            g.bench_with_input(BenchmarkId::new(strategy.to_string(), n), &n, |bench, _| {
                bench.iter(|| {
                    ip = ip.wrapping_add(0x9e37_79b9);
                    black_box(b.pick(IpAddr::V4(Ipv4Addr::from(ip)), &[]))
                })
            });
        }
    }
    g.finish();
    c.bench_function("hash_ip", |bench| {
        let mut ip = 0u32;
        bench.iter(|| {
            ip = ip.wrapping_add(1);
            black_box(hash_ip(IpAddr::V4(Ipv4Addr::from(ip))))
        })
    });
}

criterion_group!(benches, picks);
criterion_main!(benches);
