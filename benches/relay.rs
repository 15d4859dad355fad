//! End-to-end benchmarks on loopback: a 64-byte ping-pong and a 1 MiB bulk
//! echo, each through the proxy and direct to the same echo backend, in the
//! same run; and the pump moving bytes between two socket pairs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use easyproxy::io::buffer::Buffer;
use easyproxy::io::pump;
use easyproxy::{Config, Proxy};

fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                s.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn proxy_in_front_of(backend: SocketAddr) -> SocketAddr {
    let text = format!(
        "[global]\nlog_level = \"error\"\n[[service]]\nname = \"bench\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"{backend}\"\n"
    );
    let config = Config::parse(&text).unwrap();
    let mut proxy = Proxy::new(config, None).unwrap();
    let addr = proxy.listen_addrs()[0].1;
    thread::spawn(move || proxy.run());
    addr
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn ping_pong(c: &mut Criterion) {
    let backend = echo_backend();
    let proxy = proxy_in_front_of(backend);
    let mut g = c.benchmark_group("ping_pong_64B");
    g.measurement_time(Duration::from_secs(3));
    for (name, addr) in [("direct", backend), ("proxy", proxy)] {
        let mut s = connect(addr);
        let msg = [7u8; 64];
        let mut got = [0u8; 64];
        g.bench_function(name, |b| {
            b.iter(|| {
                s.write_all(&msg).unwrap();
                s.read_exact(&mut got).unwrap();
            })
        });
    }
    g.finish();
}

fn bulk(c: &mut Criterion) {
    let backend = echo_backend();
    let proxy = proxy_in_front_of(backend);
    const SIZE: usize = 1 << 20;
    let mut g = c.benchmark_group("bulk_echo_1MiB");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for (name, addr) in [("direct", backend), ("proxy", proxy)] {
        let s = connect(addr);
        let mut w = s.try_clone().unwrap();
        let mut r = s;
        let data = vec![1u8; SIZE];
        let mut got = vec![0u8; SIZE];
        g.bench_function(name, |b| {
            b.iter(|| {
                let writer = thread::scope(|scope| {
                    let h = scope.spawn(|| w.write_all(&data).unwrap());
                    r.read_exact(&mut got).unwrap();
                    h.join()
                });
                writer.unwrap();
            })
        });
    }
    g.finish();
}

fn pump_through_socketpairs(c: &mut Criterion) {
    // writer -> (a, b) -> pump -> (c, d) -> reader
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let (mut cc, mut d) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    cc.set_nonblocking(true).unwrap();
    let chunk = vec![3u8; 16 * 1024];
    let mut sink = vec![0u8; 16 * 1024];
    let mut buf = Buffer::new(16 * 1024);
    let mut g = c.benchmark_group("pump");
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("fill_flush_16KiB", |bench| {
        bench.iter(|| {
            a.write_all(&chunk).unwrap();
            let mut moved = 0;
            while moved < chunk.len() {
                let (n, _) = pump::fill(&mut buf, &mut b, usize::MAX, pump::ShortRead::Empty);
                let (_, _) = pump::flush(&mut buf, &mut cc);
                moved += n;
            }
            d.read_exact(&mut sink).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, ping_pong, bulk, pump_through_socketpairs);
criterion_main!(benches);
