//! The engine through real sockets: relaying, half-close, big transfers,
//! backpressure, connect retries and timeouts, limits, PROXY headers, stop.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn round_trip() {
    let b = Backend::echo();
    let p = Running::start(&service_config("", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"hello"), b"hello");
    assert_eq!(roundtrip(&mut c, b"again"), b"again");
}

#[test]
fn backend_speaks_first_to_a_silent_client() {
    let b = Backend::spawn(|mut s| {
        s.write_all(b"220 greeting\r\n").unwrap();
        echo_conn(s);
    });
    let p = Running::start(&service_config("", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    assert_eq!(read_n(&mut c, 14), b"220 greeting\r\n");
}

#[test]
fn client_half_close_still_gets_the_full_reply() {
    // The backend reads until EOF, then answers with everything it got, twice.
    let b = Backend::spawn(|mut s| {
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        s.write_all(&all).unwrap();
        s.write_all(&all).unwrap();
    });
    let p = Running::start(&service_config("", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    let msg = pattern(7, 300_000);
    c.write_all(&msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 600_000);
    assert!(got[..300_000] == msg[..] && got[300_000..] == msg[..]);
    p.wait_log("end=done", SOON);
}

#[test]
fn backend_half_close_still_receives_from_the_client() {
    // The backend greets, shuts down its write half, then counts what arrives.
    let (tx, rx) = mpsc::channel();
    let b = Backend::spawn(move |mut s| {
        s.write_all(b"bye").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        tx.send(all).unwrap();
    });
    let p = Running::start(&service_config("", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap(); // EOF passed on
    assert_eq!(got, b"bye");
    let msg = pattern(3, 200_000);
    c.write_all(&msg).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let received = rx.recv_timeout(SOON).unwrap();
    assert!(received == msg);
    p.wait_log("end=done", SOON);
}

#[test]
fn sixty_four_mib_both_ways_with_checksum() {
    sixty_four_mib(true);
}

#[test]
fn sixty_four_mib_both_ways_with_checksum_without_splice() {
    sixty_four_mib(false);
}

#[test]
fn eight_mib_through_the_smallest_buffers() {
    transfer(false, 512, 8);
}

fn sixty_four_mib(splice: bool) {
    transfer(splice, 16384, 64);
}

/// `mib` MiB each way through an echo backend, checked with a hash.
fn transfer(splice: bool, buffer_size: usize, mib: usize) {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]).replace(
        "[global]\n",
        &format!("[global]\nsplice = {splice}\nbuffer_size = {buffer_size}\n"),
    );
    let p = Running::start(&cfg);
    let c = connect(p.addr("svc"));
    let mut w = c.try_clone().unwrap();
    let total: usize = mib << 20;
    let writer = thread::spawn(move || {
        let chunk = pattern(11, 1 << 20);
        let mut h = 0xcbf29ce484222325u64;
        for i in 0..mib {
            let mut part = chunk.clone();
            part[0] = i as u8;
            fnv(&mut h, &part);
            w.write_all(&part).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
        h
    });
    let mut r = c;
    r.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut h = 0xcbf29ce484222325u64;
    let mut n = 0;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = r.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        fnv(&mut h, &buf[..k]);
        n += k;
    }
    assert_eq!(n, total);
    assert_eq!(h, writer.join().unwrap());
}

#[test]
fn slow_backend_applies_backpressure() {
    // The backend accepts and never reads.
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let tx = std::sync::Mutex::new(tx);
    let b = Backend::spawn(move |s| {
        tx.lock().unwrap().send(s).unwrap();
    });
    let p = Running::start(&service_config("", &[b.addr]));
    let rss_before = p.rss_kib();
    let c = connect(p.addr("svc"));
    let _held = rx.recv_timeout(SOON).unwrap();
    c.set_nonblocking(true).unwrap();
    let chunk = vec![0x5au8; 1 << 16];
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    // Write until the path stays blocked for a while.
    while last_progress.elapsed() < Duration::from_millis(1500) && sent < (512 << 20) {
        match (&c).write(&chunk) {
            Ok(n) => {
                sent += n;
                last_progress = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("write failed: {e}"),
        }
    }
    // Kernel buffers on both legs plus one 16 KiB proxy buffer: far below
    // what an unbounded proxy would have swallowed.
    assert!(sent < (64 << 20), "the proxy kept reading: {sent} bytes accepted");
    let grown = p.rss_kib().saturating_sub(rss_before);
    assert!(grown < 8 * 1024, "proxy RSS grew by {grown} KiB");
}

#[test]
fn refused_connect_is_retried_on_another_backend() {
    let good = Backend::echo();
    let bad = refused_addr();
    let p = Running::start(&service_config("retries = 1\n", &[bad, good.addr]));
    for _ in 0..6 {
        let mut c = connect(p.addr("svc"));
        assert_eq!(roundtrip(&mut c, b"x"), b"x");
    }
    assert_eq!(good.accepted(), 6);
    p.wait_log("connect failed (refused", SOON);
}

/// A listener whose accept queue is full, so further SYNs are dropped and a
/// connect to it hangs.
fn black_hole() -> (socket2::Socket, Vec<TcpStream>) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue until a connect no longer completes.
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(c) => fillers.push(c),
            Err(_) => break,
        }
    }
    (s, fillers)
}

#[test]
fn connect_timeout_is_retried_on_another_backend() {
    let (hole, _fillers) = black_hole();
    let hole_addr = hole.local_addr().unwrap().as_socket().unwrap();
    let good = Backend::echo();
    let cfg = service_config("connect_timeout_ms = 300\nretries = 1\n", &[hole_addr, good.addr]);
    let p = Running::start(&cfg);
    // First client goes to the black hole first (round robin starts there).
    let mut c = connect(p.addr("svc"));
    c.write_all(b"early bytes").unwrap(); // sent before any backend answered
    let mut got = vec![0u8; 11];
    c.read_exact(&mut got).unwrap();
    assert_eq!(got, b"early bytes");
    p.wait_log("connect failed (timeout", SOON);
}

#[test]
fn all_backends_unreachable_closes_the_client_at_once() {
    let p = Running::start(&service_config("retries = 2\n", &[refused_addr(), refused_addr()]));
    let mut c = connect(p.addr("svc"));
    let t = Instant::now();
    assert!(closes_within(&mut c, SOON));
    assert!(t.elapsed() < Duration::from_secs(5));
    p.wait_log("end=connect_failed(refused)", SOON);
}

#[test]
fn idle_timeout_closes_a_quiet_pair() {
    let b = Backend::echo();
    let p = Running::start(&service_config("idle_timeout_ms = 300\n", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
    let t = Instant::now();
    assert!(closes_within(&mut c, SOON));
    assert!(t.elapsed() >= Duration::from_millis(250));
    p.wait_log("end=idle_timeout", SOON);
}

#[test]
fn max_connections_makes_extra_clients_wait_then_serves_them() {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]).replace("[global]\n", "[global]\nmax_connections = 2\n");
    let p = Running::start(&cfg);
    let addr = p.addr("svc");
    let mut c1 = connect(addr);
    let mut c2 = connect(addr);
    assert_eq!(roundtrip(&mut c1, b"1"), b"1");
    assert_eq!(roundtrip(&mut c2, b"2"), b"2");
    // The third connects (kernel backlog) but is not served yet.
    let mut c3 = connect(addr);
    c3.write_all(b"3").unwrap();
    c3.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut one = [0u8; 1];
    let e = c3.read(&mut one).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    drop(c1);
    c3.set_read_timeout(Some(SOON)).unwrap();
    c3.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"3");
}

/// `backlog` sizes the kernel queue where clients past max_connections
/// wait: Linux completes backlog + 1 handshakes there, drops the SYNs of the
/// rest (their clients retry a second later), and the queued ones are served
/// as soon as a slot frees up. A reload changes it in place.
#[test]
fn backlog_bounds_the_clients_waiting_past_max_connections() {
    let b = Backend::echo();
    let text = |backlog: u32| {
        service_config(&format!("backlog = {backlog}\n"), &[b.addr])
            .replace("[global]\n", "[global]\nmax_connections = 1\n")
    };
    let p = Running::start(&text(2));
    let addr = p.addr("svc");
    let mut held = connect(addr);
    assert_eq!(roundtrip(&mut held, b"x"), b"x");
    let try_connect = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect()
    };
    let mut waiting = try_connect(6);
    assert_eq!(waiting.len(), 3, "backlog 2 holds 3 waiting clients");
    p.reload(&text(5));
    p.wait_log("reload done", SOON);
    waiting.extend(try_connect(6));
    assert_eq!(waiting.len(), 6, "backlog 5 holds 6 waiting clients");
    drop(held);
    for (i, c) in waiting.iter_mut().enumerate() {
        let msg = format!("waiter {i}");
        assert_eq!(roundtrip(c, msg.as_bytes()), msg.as_bytes());
        // One slot: the next waiter is served once this one is gone.
        c.shutdown(std::net::Shutdown::Both).unwrap();
    }
}

/// A backlog the kernel will cap is said in the log, not silently shrunk.
#[test]
fn a_backlog_above_somaxconn_is_logged() {
    let b = Backend::echo();
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let p = Running::start(&service_config("backlog = 65535\n", &[b.addr]));
    if cap < 65535 {
        p.wait_log(&format!("backlog 65535 is capped at {cap} by net.core.somaxconn"), SOON);
    } else {
        assert!(!p.log_text().contains("somaxconn"));
    }
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
}

#[test]
fn tiny_fd_limit_neither_crashes_nor_spins_and_recovers() {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]);
    // Run under a shell that lowers RLIMIT_NOFILE first.
    let mut p = Running::start_with(&cfg, |cmd| under_ulimit(cmd, "-n 24"));
    let addr = p.addr("svc");
    // Far more clients than descriptors.
    let mut clients: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(addr).unwrap()).collect();
    for c in clients.iter_mut() {
        let _ = c.write_all(b"ping");
    }
    let ticks_before = p.cpu_ticks();
    thread::sleep(Duration::from_secs(2));
    let ticks = p.cpu_ticks() - ticks_before;
    // A spinning loop burns ~200 ticks in 2 s; allow a lot of noise.
    assert!(ticks < 80, "proxy used {ticks} ticks in 2 s while out of descriptors");
    assert!(p.is_running());
    wait_for("the out-of-descriptors warning", SOON, || {
        let log = p.log_text();
        (log.contains("Too many open files") || log.contains("pausing accepts")).then_some(())
    });
    drop(clients);
    // It recovers: new clients are served.
    let mut c = wait_for("a client to be served after recovery", SOON, || {
        let mut c = TcpStream::connect(addr).ok()?;
        c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        c.write_all(b"ok?").ok()?;
        let mut got = [0u8; 3];
        c.read_exact(&mut got).ok()?;
        (&got == b"ok?").then_some(c)
    });
    assert_eq!(roundtrip(&mut c, b"more"), b"more");
}

#[test]
fn smooth_weighted_round_robin_sequence_end_to_end() {
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let cfg = format!(
        "[[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n\
         [[service.backend]]\naddress = \"{}\"\nweight = 3\n\
         [[service.backend]]\naddress = \"{}\"\nweight = 1\n",
        a.addr, b.addr
    );
    let p = Running::start(&cfg);
    let seq: String = (0..8)
        .map(|_| {
            let mut c = connect(p.addr("svc"));
            String::from_utf8(read_n(&mut c, 1)).unwrap()
        })
        .collect();
    assert_eq!(seq, "AABAAABA");
}

#[test]
fn ip_hash_sticks_to_one_backend() {
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let c_ = Backend::tagged("C");
    let p = Running::start(&service_config("strategy = \"iphash\"\n", &[a.addr, b.addr, c_.addr]));
    let first = {
        let mut c = connect(p.addr("svc"));
        read_n(&mut c, 1)
    };
    for _ in 0..10 {
        let mut c = connect(p.addr("svc"));
        assert_eq!(read_n(&mut c, 1), first);
    }
}

/// Runs one client through a `send_proxy` service and returns the client's
/// local address, the proxy's address and what the backend received first.
fn proxy_header_seen(kind: &str, header_len: usize) -> (std::net::SocketAddr, std::net::SocketAddr, Vec<u8>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let b = Backend::spawn(move |mut s| {
        let mut got = vec![0u8; header_len + 5];
        s.read_exact(&mut got).unwrap();
        tx.lock().unwrap().send(got).unwrap();
    });
    let p = Running::start(&service_config(&format!("send_proxy = \"{kind}\"\n"), &[b.addr]));
    let addr = p.addr("svc");
    let mut c = connect(addr);
    c.write_all(b"hello").unwrap();
    let got = rx.recv_timeout(SOON).unwrap();
    (c.local_addr().unwrap(), addr, got)
}

/// A backend that reads one CRLF-terminated line (a PROXY v1 header) and the
/// five bytes after it, and hands both over.
fn header_line_backend() -> (Backend, mpsc::Receiver<(String, [u8; 5])>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let backend = Backend::spawn(move |s| {
        let mut r = std::io::BufReader::new(s);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut r, &mut line).unwrap();
        let mut rest = [0u8; 5];
        r.read_exact(&mut rest).unwrap();
        tx.lock().unwrap().send((line, rest)).unwrap();
    });
    (backend, rx)
}

#[test]
fn proxy_protocol_v1_header_bytes() {
    let expected = |client: std::net::SocketAddr, proxy: std::net::SocketAddr| {
        format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            client.ip(),
            proxy.ip(),
            client.port(),
            proxy.port()
        )
    };
    let (backend, rx) = header_line_backend();
    let p = Running::start(&service_config("send_proxy = \"v1\"\n", &[backend.addr]));
    let addr = p.addr("svc");
    let mut c = connect(addr);
    c.write_all(b"hello").unwrap();
    let (line, rest) = rx.recv_timeout(SOON).unwrap();
    assert_eq!(line, expected(c.local_addr().unwrap(), addr));
    assert_eq!(&rest, b"hello");
}

#[test]
fn proxy_protocol_v2_header_bytes() {
    let (client, proxy, got) = proxy_header_seen("v2", 28);
    let mut want = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
    ];
    want.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    want.extend_from_slice(&client.port().to_be_bytes());
    want.extend_from_slice(&proxy.port().to_be_bytes());
    want.extend_from_slice(b"hello");
    assert_eq!(got, want);
}

#[test]
fn sigterm_drains_open_connections_then_exits_zero() {
    let b = Backend::echo();
    let mut p = Running::start(&service_config("", &[b.addr]));
    let addr = p.addr("svc");
    let mut c = connect(addr);
    assert_eq!(roundtrip(&mut c, b"before"), b"before");
    p.signal(libc::SIGTERM);
    p.wait_log("stopping", SOON);
    // No new clients...
    wait_for("the listener to close", SOON, || {
        TcpStream::connect(addr).is_err().then_some(())
    });
    // ...but the open one still works.
    assert_eq!(roundtrip(&mut c, b"during"), b"during");
    assert!(p.is_running());
    drop(c);
    let status = p.wait_exit(SOON);
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_deadline_closes_what_is_left() {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]).replace("shutdown_timeout_ms = 5000", "shutdown_timeout_ms = 300");
    let mut p = Running::start(&cfg);
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(SOON);
    assert!(status.success());
    assert!(closes_within(&mut c, SOON));
    // The log reader thread may still be catching up with the last lines.
    p.wait_log("end=shutdown", SOON);
}

#[test]
fn second_sigterm_stops_at_once() {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr]).replace("shutdown_timeout_ms = 5000", "shutdown_timeout_ms = 60000");
    let mut p = Running::start(&cfg);
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
    p.signal(libc::SIGTERM);
    p.wait_log("stopping", SOON);
    p.signal(libc::SIGINT);
    let status = p.wait_exit(SOON);
    assert!(status.success());
}

#[test]
fn sighup_does_not_kill() {
    let b = Backend::echo();
    let mut p = Running::start(&service_config("", &[b.addr]));
    p.signal(libc::SIGHUP);
    p.wait_log("reload", SOON);
    assert!(p.is_running());
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
}

#[test]
fn access_log_line_per_closed_connection() {
    let b = Backend::echo();
    let p = Running::start(&service_config("", &[b.addr]));
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"12345"), b"12345");
    let local = c.local_addr().unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    let line = p.wait_log(&format!("close client={local}"), SOON);
    assert!(line.contains("service=svc"), "{line}");
    assert!(line.contains(&format!("backend={}", b.addr)), "{line}");
    assert!(line.contains("from_client=5") && line.contains("to_client=5"), "{line}");
    assert!(line.contains("duration_ms=") && line.contains("end=done"), "{line}");
}

#[test]
fn no_backend_available_is_rejected_at_once() {
    // One backend with max_connections = 1: the second client is rejected.
    let b = Backend::echo();
    let cfg = format!(
        "[[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n\
         [[service.backend]]\naddress = \"{}\"\nmax_connections = 1\n",
        b.addr
    );
    let p = Running::start(&cfg);
    let mut c1 = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c1, b"x"), b"x");
    let mut c2 = connect(p.addr("svc"));
    assert!(closes_within(&mut c2, SOON));
    p.wait_log("end=no_backend", SOON);
}

#[test]
fn client_reset_closes_the_backend_side() {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let b = Backend::spawn(move |mut s| {
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
        // Wait for the proxy to close its side after the client's reset.
        s.set_read_timeout(Some(SOON)).unwrap();
        let r = s.read(&mut buf);
        tx.lock().unwrap().send(matches!(r, Ok(0) | Err(_))).unwrap();
    });
    let p = Running::start(&service_config("", &[b.addr]));
    let c = connect(p.addr("svc"));
    (&c).write_all(b"hi").unwrap();
    wait_for("backend accept", SOON, || (b.accepted() == 1).then_some(()));
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    assert!(rx.recv_timeout(SOON).unwrap(), "backend side was not closed");
    p.wait_log("end=client_reset", SOON);
}

#[test]
fn listener_backlog_test_helper_really_blocks() {
    // Guards the connect-timeout test: a connect to the black hole must hang.
    let (hole, _f) = black_hole();
    let addr = hole.local_addr().unwrap().as_socket().unwrap();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err());
    let _unused: Option<TcpListener> = None;
}

#[test]
fn service_max_connections_makes_extra_clients_wait() {
    let b = Backend::echo();
    let p = Running::start(&service_config("max_connections = 1\n", &[b.addr]));
    let addr = p.addr("svc");
    let mut c1 = connect(addr);
    assert_eq!(roundtrip(&mut c1, b"1"), b"1");
    let mut c2 = connect(addr);
    c2.write_all(b"2").unwrap();
    c2.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut one = [0u8; 1];
    assert!(c2.read(&mut one).is_err(), "the second client must wait in the backlog");
    drop(c1);
    c2.set_read_timeout(Some(SOON)).unwrap();
    c2.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"2");
}

#[test]
fn proxy_header_and_early_bytes_reach_the_backend_that_finally_answers() {
    let (good, rx) = header_line_backend();
    let cfg = service_config("send_proxy = \"v1\"\nretries = 1\n", &[refused_addr(), good.addr]);
    let p = Running::start(&cfg);
    let mut c = connect(p.addr("svc"));
    c.write_all(b"early").unwrap();
    let (line, rest) = rx.recv_timeout(SOON).unwrap();
    assert!(line.starts_with("PROXY TCP4 127.0.0.1 127.0.0.1 "), "{line}");
    assert_eq!(&rest, b"early");
    p.wait_log("connect failed (refused", SOON);
}

/// IPv6 on either side: a service listening on [::1] relays to an IPv4
/// backend and tells it with PROXY v1 that the client came over TCP6; an
/// IPv4 service relays to an IPv6 backend.
#[test]
fn ipv6_listeners_and_backends() {
    let Ok(v6_listener) = std::net::TcpListener::bind("[::1]:0") else {
        // A machine without IPv6 loopback cannot run this one.
        eprintln!("ipv6_listeners_and_backends: no [::1] here, not run");
        return;
    };
    let (v4_backend, rx) = header_line_backend();
    let v6_echo = Backend::spawn_on(v6_listener, echo_conn);
    let cfg = format!(
        "[global]\nlog_level = \"debug\"\n\n\
         [[service]]\nname = \"v6in\"\nlisten = \"[::1]:0\"\nsend_proxy = \"v1\"\n\
         [[service.backend]]\naddress = \"{}\"\n\n\
         [[service]]\nname = \"v6out\"\nlisten = \"127.0.0.1:0\"\n\
         [[service.backend]]\naddress = \"{}\"\n",
        v4_backend.addr, v6_echo.addr
    );
    let p = Running::start(&cfg);
    let front = p.addr("v6in");
    assert!(front.is_ipv6(), "{front}");
    let mut c = connect(front);
    c.write_all(b"hello").unwrap();
    let (line, rest) = rx.recv_timeout(SOON).unwrap();
    let client_port = c.local_addr().unwrap().port();
    assert_eq!(line, format!("PROXY TCP6 ::1 ::1 {client_port} {}\r\n", front.port()));
    assert_eq!(&rest, b"hello");
    let mut c = connect(p.addr("v6out"));
    assert_eq!(roundtrip(&mut c, b"over v6"), b"over v6");
}

/// After a burst of bulk transfers the proxy keeps at most 64 idle pipes
/// (128 descriptors), as a reload-built pool does; the pool built at start
/// once kept up to 256 (512 descriptors).
#[test]
fn idle_pipes_after_a_burst_are_bounded() {
    // More than 64 pairs holding a pipe at once: each sends more than the
    // kernel's socket buffers on the way (a few MiB) can absorb.
    const CLIENTS: usize = 72;
    let gate = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS + 1));
    let g = gate.clone();
    // Reads nothing until every client is connected, so every pair holds
    // a full pipe at once; then drains and closes.
    // A small receive buffer (inherited by accepted sockets) keeps the
    // kernel from absorbing the transfers.
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.set_recv_buffer_size(4096).unwrap();
    l.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(1024).unwrap();
    let sink = Backend::spawn_on(l.into(), move |mut s| {
        g.wait();
        let _ = std::io::copy(&mut s, &mut std::io::sink());
    });
    let p = Running::start(&service_config("", &[sink.addr]));
    let addr = p.addr("svc");
    let base = p.open_fds();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || {
                let mut c = connect(addr);
                c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
                c.write_all(&vec![7u8; 8 << 20]).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                let _ = c.read_to_end(&mut rest);
            })
        })
        .collect();
    wait_for("every pair to hold its pipe", SOON, || {
        (sink.accepted() == CLIENTS && p.open_fds() >= base + 2 * CLIENTS + 2 * 64).then_some(())
    });
    gate.wait();
    for c in clients {
        c.join().unwrap();
    }
    p.wait_log_count("close client=", CLIENTS, SOON);
    let fds = p.open_fds();
    assert!(fds <= base + 2 * 64, "{fds} descriptors open, {base} before the burst");
}

/// A connection from `ip` (a 127/8 source address) to `addr`.
fn connect_from(ip: &str, addr: std::net::SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{ip}:0").parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// One IP at its `max_connections_per_ip` gets further connections closed
/// at once (`end=ip_limit`), and another IP is served without delay.
#[test]
fn one_ip_at_its_limit_does_not_delay_another() {
    let echo = Backend::echo();
    let p = Running::start(&service_config("max_connections_per_ip = 3", &[echo.addr]));
    let addr = p.addr("svc");
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_from("127.0.0.1", addr)).collect();
    for c in &mut held {
        assert_eq!(roundtrip(c, b"hold"), b"hold");
    }
    let mut fourth = connect_from("127.0.0.1", addr);
    assert!(
        closes_within(&mut fourth, SOON),
        "the fourth connection of one IP is closed"
    );
    p.wait_log("end=ip_limit", SOON);
    let started = Instant::now();
    let mut other = connect_from("127.0.0.2", addr);
    assert_eq!(roundtrip(&mut other, b"other ip"), b"other ip");
    assert!(started.elapsed() < SOON);
    // A slot given back is free again for the first IP.
    drop(held.pop());
    wait_for("the slot to come back", SOON, || {
        let mut c = connect_from("127.0.0.1", addr);
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        c.write_all(b"again").ok()?;
        let mut got = [0u8; 5];
        c.read_exact(&mut got).ok().map(|_| ())
    });
}
