//! The relay path allocates nothing per connection once pools are warm:
//! the proxy runs in a thread of this test whose heap allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use easyproxy::{Config, Proxy};

struct Counting;

static PROXY_ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNT_HERE: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNT_HERE.try_with(|c| c.get()).unwrap_or(false) {
            PROXY_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn one_connection(addr: std::net::SocketAddr) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"ping").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ping");
}

#[test]
fn steady_state_connections_allocate_nothing_in_the_proxy() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    thread::spawn(move || {
        for s in backend.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    });
    let text = format!(
        "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n[[service.backend]]\naddress = \"{backend_addr}\"\n"
    );
    let mut proxy = Proxy::new(Config::parse(&text).unwrap(), None).unwrap();
    let addr = proxy.listen_addrs()[0].1;
    thread::spawn(move || {
        COUNT_HERE.with(|c| c.set(true));
        let _ = proxy.run();
    });
    // Warm up the pools, the slab and the client map.
    for _ in 0..50 {
        one_connection(addr);
    }
    thread::sleep(Duration::from_millis(100));
    let before = PROXY_ALLOCS.load(Ordering::Relaxed);
    let start = Instant::now();
    for _ in 0..500 {
        one_connection(addr);
    }
    thread::sleep(Duration::from_millis(100));
    let allocs = PROXY_ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("proxy allocations for 500 connections: {allocs}");
    assert!(
        allocs < 10,
        "{allocs} allocations in the proxy for 500 connections ({:?})",
        start.elapsed()
    );
}
