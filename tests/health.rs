//! Health checks through real sockets: probes, rise/fall, send/expect,
//! passive failures, ip_hash and backups across down/up, descriptor hygiene.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn hc_service(hc: &str, backends: &[(SocketAddr, &str)], extra: &str) -> String {
    let mut c = format!(
        "[global]\nlog_level = \"debug\"\n[[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n{extra}\n[service.health_check]\n{hc}\n"
    );
    for (a, more) in backends {
        c.push_str(&format!("[[service.backend]]\naddress = \"{a}\"\n{more}\n"));
    }
    c
}

/// Which tagged backend serves a new client (reads the one-byte tag).
fn served_by(addr: SocketAddr) -> String {
    let mut c = connect(addr);
    String::from_utf8(read_n(&mut c, 1)).unwrap()
}

/// Same, for a client bound to a given loopback source IP.
fn served_by_from(addr: SocketAddr, src: &str) -> String {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&format!("{src}:0").parse::<SocketAddr>().unwrap().into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    let mut c: TcpStream = s.into();
    c.set_read_timeout(Some(SOON)).unwrap();
    String::from_utf8(read_n(&mut c, 1)).unwrap()
}

fn tagged_on(addr: SocketAddr, tag: &'static str) -> Backend {
    let l = wait_for("rebinding the backend port", SOON, || TcpListener::bind(addr).ok());
    Backend::spawn_on(l, move |mut s| {
        if s.write_all(tag.as_bytes()).is_ok() {
            echo_conn(s);
        }
    })
}

#[test]
fn killed_backend_goes_down_and_comes_back() {
    let a = Backend::tagged("A");
    let b = Backend::tagged("B");
    let (interval, timeout, rise, fall) = (200u64, 200u64, 2u64, 2u64);
    let hc = format!("interval_ms = {interval}\ntimeout_ms = {timeout}\nrise = {rise}\nfall = {fall}\n");
    let p = Running::start(&hc_service(&hc, &[(a.addr, ""), (b.addr, "")], ""));
    let addr = p.addr("svc");
    let b_addr = b.addr;
    // Both up: probes succeed for a while.
    thread::sleep(Duration::from_millis(interval * 2));
    assert_eq!(p.count_log("is DOWN"), 0);

    b.stop();
    drop(b);
    let t = Instant::now();
    let line = p.wait_log(&format!("backend={b_addr} is DOWN"), SOON);
    let took = t.elapsed();
    let bound = Duration::from_millis(interval * (fall + 1) + timeout);
    assert!(
        took < bound + Duration::from_secs(2),
        "down after {took:?} (expected about {bound:?})"
    );
    assert!(line.contains("refused"), "reason given: {line}");
    assert!(line.contains("after"), "time in old state given: {line}");

    // New clients avoid the down backend.
    for _ in 0..6 {
        assert_eq!(served_by(addr), "A");
    }

    let _b2 = tagged_on(b_addr, "B");
    let t = Instant::now();
    p.wait_log(&format!("backend={b_addr} is UP"), SOON);
    let took = t.elapsed();
    let bound = Duration::from_millis(interval * (rise + 1));
    assert!(
        took < bound + Duration::from_secs(2),
        "up after {took:?} (expected about {bound:?})"
    );
    let seen: String = (0..4).map(|_| served_by(addr)).collect();
    assert!(seen.contains('B'), "recovered backend gets clients again: {seen}");
}

#[test]
fn send_expect_marks_the_wrong_reply_down_and_keeps_the_right_one_up() {
    let good = Backend::spawn(|mut s| {
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf) {
            if &buf[..n] == b"PING\r\n" {
                let _ = s.write_all(b"+PONG\r\n");
            }
        }
    });
    let bad = Backend::spawn(|mut s| {
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"-ERR unknown\r\n");
    });
    let hc = "interval_ms = 100\ntimeout_ms = 500\nrise = 1\nfall = 2\nsend = 'PING\\r\\n'\nexpect = \"+PONG\"\n";
    let p = Running::start(&hc_service(hc, &[(good.addr, ""), (bad.addr, "")], ""));
    let line = p.wait_log(&format!("backend={} is DOWN", bad.addr), SOON);
    assert!(line.contains("unexpected reply"), "{line}");
    // Let the good one be probed many times more.
    let probes_before = good.accepted();
    wait_for("more probes of the good backend", SOON, || {
        (good.accepted() >= probes_before + 5).then_some(())
    });
    assert!(!p.log_text().contains(&format!("backend={} is DOWN", good.addr)));
}

#[test]
fn backend_that_never_answers_is_down_after_the_timeout() {
    // Accepts, reads, never replies.
    let mute = Backend::spawn(|mut s| {
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    });
    let good = Backend::tagged("G");
    let hc = "interval_ms = 100\ntimeout_ms = 200\nfall = 2\nexpect = \"G\"\n";
    let p = Running::start(&hc_service(hc, &[(mute.addr, ""), (good.addr, "")], ""));
    let line = p.wait_log(&format!("backend={} is DOWN", mute.addr), SOON);
    assert!(line.contains("timeout"), "{line}");
    assert_eq!(served_by(p.addr("svc")), "G");
}

#[test]
fn passive_failures_alone_take_a_backend_down() {
    let good = Backend::tagged("G");
    let dead = refused_addr();
    // The interval is so long that no probe runs during the test.
    let hc = "interval_ms = 600000\nfall = 2\n";
    let p = Running::start(&hc_service(hc, &[(dead, ""), (good.addr, "")], "retries = 1\n"));
    let addr = p.addr("svc");
    for _ in 0..4 {
        assert_eq!(served_by(addr), "G");
    }
    let line = p.wait_log(&format!("backend={dead} is DOWN"), SOON);
    assert!(line.contains("client connect") && line.contains("refused"), "{line}");
    let failed_connects = p.count_log(&format!("backend={dead}: connect failed"));
    for _ in 0..4 {
        assert_eq!(served_by(addr), "G");
    }
    assert_eq!(
        p.count_log(&format!("backend={dead}: connect failed")),
        failed_connects,
        "a down backend is not tried any more"
    );
}

#[test]
fn ip_hash_clients_return_to_their_backend_after_recovery() {
    let tags = ["A", "B", "C"];
    let backends: Vec<Backend> = tags.iter().map(|t| Backend::tagged(t)).collect();
    let list: Vec<(SocketAddr, &str)> = backends.iter().map(|b| (b.addr, "")).collect();
    let hc = "interval_ms = 100\ntimeout_ms = 200\nrise = 1\nfall = 1\n";
    let p = Running::start(&hc_service(hc, &list, "strategy = \"ip_hash\"\n"));
    let addr = p.addr("svc");
    let ips: Vec<String> = (2..40).map(|i| format!("127.0.0.{i}")).collect();
    let before: Vec<String> = ips.iter().map(|ip| served_by_from(addr, ip)).collect();
    // Take down the backend with the most clients.
    let victim = (0..3)
        .max_by_key(|&i| before.iter().filter(|t| *t == tags[i]).count())
        .unwrap();
    let victim_addr = backends[victim].addr;
    backends[victim].stop();
    p.wait_log(&format!("backend={victim_addr} is DOWN"), SOON);
    for (ip, was) in ips.iter().zip(&before) {
        let now = served_by_from(addr, ip);
        if was == tags[victim] {
            assert_ne!(&now, was, "{ip} still sent to the down backend");
        } else {
            assert_eq!(&now, was, "{ip} moved although its backend is up");
        }
    }
    let _back = tagged_on(victim_addr, tags[victim]);
    p.wait_log(&format!("backend={victim_addr} is UP"), SOON);
    for (ip, was) in ips.iter().zip(&before) {
        assert_eq!(&served_by_from(addr, ip), was, "{ip} did not return");
    }
}

#[test]
fn backups_switch_in_and_out() {
    let primary = Backend::tagged("P");
    let backup = Backend::tagged("B");
    let hc = "interval_ms = 100\ntimeout_ms = 200\nrise = 1\nfall = 1\n";
    let p = Running::start(&hc_service(
        hc,
        &[(primary.addr, ""), (backup.addr, "backup = true")],
        "",
    ));
    let addr = p.addr("svc");
    for _ in 0..3 {
        assert_eq!(served_by(addr), "P");
    }
    let primary_addr = primary.addr;
    primary.stop();
    p.wait_log(&format!("backend={primary_addr} is DOWN"), SOON);
    for _ in 0..3 {
        assert_eq!(served_by(addr), "B");
    }
    let _again = tagged_on(primary_addr, "P");
    p.wait_log(&format!("backend={primary_addr} is UP"), SOON);
    for _ in 0..3 {
        assert_eq!(served_by(addr), "P");
    }
}

#[test]
fn taking_a_backend_down_keeps_its_open_connections() {
    let a = Backend::tagged("A");
    let hc = "interval_ms = 100\ntimeout_ms = 200\nfall = 1\n";
    let p = Running::start(&hc_service(hc, &[(a.addr, "")], ""));
    let mut c = connect(p.addr("svc"));
    assert_eq!(read_n(&mut c, 1), b"A");
    let a_addr = a.addr;
    a.stop(); // the listener closes; the open connection lives on
    p.wait_log(&format!("backend={a_addr} is DOWN"), SOON);
    assert_eq!(roundtrip(&mut c, b"still here"), b"still here");
}

#[test]
fn descriptor_count_stays_flat_across_many_probe_cycles() {
    let up = Backend::tagged("U");
    let dead = refused_addr();
    let mute = Backend::spawn(|mut s| {
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf);
    });
    let hc = "interval_ms = 5\ntimeout_ms = 20\nexpect = \"U\"\n";
    let p = Running::start(&hc_service(hc, &[(up.addr, ""), (dead, ""), (mute.addr, "")], ""));
    wait_for("a first round of probes", SOON, || (up.accepted() >= 5).then_some(()));
    let fds_before = p.open_fds();
    let start = up.accepted();
    wait_for("hundreds of probe cycles", Duration::from_secs(60), || {
        (up.accepted() >= start + 300).then_some(())
    });
    let fds_after = p.open_fds();
    assert!(
        fds_after <= fds_before + 3,
        "descriptors grew from {fds_before} to {fds_after}"
    );
    wait_for("the dead and the mute backend to be down", SOON, || {
        (p.count_log("is DOWN") >= 2).then_some(())
    });
}

/// A fake MySQL server: greets, reads the login, answers `auth_reply`
/// (payload), then expects COM_QUIT. Reports the user name it saw.
fn fake_mysql(auth_reply: &'static [u8], users: std::sync::mpsc::Sender<String>) -> Backend {
    let users = std::sync::Mutex::new(users);
    Backend::spawn(move |mut s| {
        let pkt = mysql::packet(0, &mysql::greeting("mysql_native_password", b"abcdefghijklmnopqrst"));
        if s.write_all(&pkt).is_err() {
            return;
        }
        let mut head = [0u8; 4];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let len = head[0] as usize | (head[1] as usize) << 8 | (head[2] as usize) << 16;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        let user: Vec<u8> = body[32..].iter().take_while(|&&b| b != 0).copied().collect();
        let _ = users.lock().unwrap().send(String::from_utf8_lossy(&user).to_string());
        let mut reply = vec![auth_reply.len() as u8, 0, 0, head[3] + 1];
        reply.extend_from_slice(auth_reply);
        s.write_all(&reply).unwrap();
        let mut quit = [0u8; 5];
        if s.read_exact(&mut quit).is_ok() {
            assert_eq!(quit, [1, 0, 0, 0, 1], "COM_QUIT");
        }
    })
}

#[test]
fn mysql_check_logs_in_and_quits() {
    let (tx, rx) = std::sync::mpsc::channel();
    let good = fake_mysql(b"\x00\x00\x00\x02\x00\x00\x00", tx.clone());
    let denied = fake_mysql(b"\xff\x15\x04#28000Access denied", tx);
    let hc = "interval_ms = 100\ntimeout_ms = 500\nrise = 1\nfall = 2\nmysql_user = \"easyproxy_check\"\n";
    let p = Running::start(&hc_service(hc, &[(good.addr, ""), (denied.addr, "")], ""));
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "easyproxy_check");
    let line = p.wait_log(&format!("backend={} is DOWN", denied.addr), SOON);
    assert!(line.contains("(health check: access denied)"), "{line}");
    let before = good.accepted();
    wait_for("more checks of the good server", SOON, || {
        (good.accepted() >= before + 5).then_some(())
    });
    assert!(!p.log_text().contains(&format!("backend={} is DOWN", good.addr)));
}

/// Frames `payload` as one MySQL packet.
fn mysql_packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![
        payload.len() as u8,
        (payload.len() >> 8) as u8,
        (payload.len() >> 16) as u8,
        seq,
    ];
    p.extend_from_slice(payload);
    p
}

/// A MySQL server gone wrong: greets, then answers the login with
/// auth-switch requests back to back for as long as the client listens.
fn auth_switch_flood() -> Backend {
    Backend::spawn(|mut s| {
        let greeting = mysql::greeting("mysql_native_password", b"abcdefghijklmnopqrst");
        if s.write_all(&mysql_packet(0, &greeting)).is_err() {
            return;
        }
        // Swallow whatever the client sends, so its writes never block.
        if let Ok(mut r) = s.try_clone() {
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
        // 64-byte packets: a reader that drops what follows the first packet
        // of a 4 KiB read still lands on a packet boundary.
        let mut switch = b"\xfemysql_native_password\x00".to_vec();
        switch.resize(60, b'x');
        switch[59] = 0;
        let burst: Vec<u8> = (0..1024u32)
            .flat_map(|i| mysql_packet((2 + 2 * i) as u8, &switch))
            .collect();
        while s.write_all(&burst).is_ok() {}
    })
}

fn two_services(first: &str, first_backend: SocketAddr, second: &str, second_backend: SocketAddr) -> String {
    format!(
        "[global]\nlog_level = \"info\"\n[stats]\nlisten = \"127.0.0.1:0\"\n\
         [[service]]\nname = \"first\"\nlisten = \"127.0.0.1:0\"\n{first}\n\
         [[service.backend]]\naddress = \"{first_backend}\"\n\
         [[service]]\nname = \"second\"\nlisten = \"127.0.0.1:0\"\n{second}\n\
         [[service.backend]]\naddress = \"{second_backend}\"\n"
    )
}

#[test]
fn a_flood_of_auth_switches_neither_stalls_other_traffic_nor_passes_the_check() {
    let flood = auth_switch_flood();
    let echo = Backend::echo();
    let hc = "[service.health_check]\ninterval_ms = 200\ntimeout_ms = 1000\nfall = 2\nmysql_user = \"check\"\n";
    let p = Running::start(&two_services(hc, flood.addr, "", echo.addr));
    let mut c = connect(p.addr("second"));
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msg = b"round trip 0123456789";
    let mut got = [0u8; 21];
    let (mut worst, mut trips) = (Duration::ZERO, 0u32);
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        let t = Instant::now();
        let ok = c.write_all(msg).is_ok() && c.read_exact(&mut got).is_ok();
        worst = worst.max(t.elapsed());
        if !ok {
            break;
        }
        assert_eq!(&got, msg);
        trips += 1;
        thread::sleep(Duration::from_millis(2));
    }
    eprintln!("echo round trips: {trips}, longest {worst:?}");
    assert!(
        worst < Duration::from_millis(100),
        "an echo round trip waited {worst:?} ({trips} done)"
    );
    let line = p.wait_log(&format!("backend={} is DOWN", flood.addr), SOON);
    assert!(line.contains("too many auth switches"), "{line}");
    let j = stats_json(p.stats_addr());
    let b = &j["services"][0]["backends"][0];
    assert_eq!(b["state"], "down", "{b}");
    assert_eq!(b["last_check"], "too many auth switches", "{b}");
}

#[test]
fn probe_timer_entries_stay_bounded_with_a_timeout_far_above_the_interval() {
    // Accepts, never says a word: a bare connect check passes at once.
    let quiet = TcpListener::bind("127.0.0.1:0").unwrap();
    let quiet_addr = quiet.local_addr().unwrap();
    thread::spawn(move || {
        for s in quiet.incoming() {
            drop(s);
        }
    });
    // Accepts, reads, never answers: a check expecting a reply stays open.
    let mute = Backend::spawn(|mut s| {
        let mut buf = [0u8; 64];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let hc = "[service.health_check]\ninterval_ms = 1\ntimeout_ms = 86400000\n";
    let cfg = two_services(hc, quiet_addr, &format!("{hc}expect = \"x\"\n"), mute.addr);
    // Plus a backend that refuses, so failing checks cycle too.
    let dead = refused_addr();
    let cfg = cfg.replacen(
        "[[service]]\nname = \"second\"",
        &format!("[[service.backend]]\naddress = \"{dead}\"\n[[service]]\nname = \"second\""),
        1,
    );
    let p = Running::start(&cfg);
    let stats = p.stats_addr();
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        thread::sleep(Duration::from_millis(250));
        samples.push(stats_json(stats)["timers_pending"].as_u64().unwrap());
    }
    let j = stats_json(stats);
    let checks = j["services"][0]["backends"][1]["failures"].as_u64().unwrap();
    let worst = samples.iter().copied().max().unwrap();
    eprintln!(
        "timers pending: max {worst}, last {:?}; failed checks of the refusing backend: {checks}",
        samples.last()
    );
    assert!(checks > 1000, "checks ran only {checks} times");
    assert!(worst < 100, "timer entries grew to {worst}: {samples:?}");
    // A check that has not finished is not overlapped by the next one.
    assert_eq!(mute.accepted(), 1, "checks of the mute backend overlapped");
}

/// Backend connects that fail on this host (no ephemeral port left:
/// EADDRNOTAVAIL) are not the backend's fault: with `fall = 1` the backend
/// stays up, and once ports are free again the next client is served at
/// once (before, the backend went DOWN and every client got `no_backend`
/// until the next probe).
///
/// Runs in a network namespace of its own (a thread that called
/// unshare(CLONE_NEWNET); the processes and threads it starts inherit it),
/// whose ephemeral port range is narrowed to a few ports. Needs root, as
/// CI has; elsewhere it says so and returns.
#[test]
fn local_connect_errors_never_take_a_backend_down() {
    let result = thread::spawn(|| {
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let setup = std::process::Command::new("sh")
            .args([
                "-c",
                "ip link set lo up && echo '40000 40011' > /proc/sys/net/ipv4/ip_local_port_range",
            ])
            .status()?;
        if !setup.success() {
            return Err(std::io::Error::other("cannot set up the namespace"));
        }
        narrow_port_range_scenario();
        Ok(())
    })
    .join()
    .unwrap();
    if let Err(e) = result {
        eprintln!("SKIPPED local_connect_errors_never_take_a_backend_down: no network namespace here ({e})");
    }
}

fn narrow_port_range_scenario() {
    let echo = Backend::echo();
    let cfg = format!(
        "[stats]\nlisten = \"127.0.0.1:0\"\n{}",
        hc_service(
            "interval_ms = 600000\nrise = 1\nfall = 1",
            &[(echo.addr, "")],
            "retries = 0"
        )
    );
    let p = Running::start(&cfg);
    let addr = p.addr("svc");
    // Clients use ports outside the narrow range, so only the proxy's
    // backend connects compete for it.
    let client = |port: u16| -> Option<TcpStream> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        s.bind(&SocketAddr::from(([127, 0, 0, 1], port)).into()).ok()?;
        s.connect(&addr.into()).ok()?;
        let mut c: TcpStream = s.into();
        c.set_read_timeout(Some(SOON)).ok()?;
        c.write_all(b"ping").ok()?;
        let mut got = [0u8; 4];
        c.read_exact(&mut got).ok().map(|_| c)
    };
    let mut held = Vec::new();
    for port in 51000..51040 {
        match client(port) {
            Some(c) => held.push(c),
            None => break,
        }
    }
    assert!(held.len() < 40, "the port range never ran out");
    p.wait_log("Cannot assign requested address", SOON);
    drop(held);
    let mut served = None;
    for port in 52000..52100 {
        if let Some(c) = client(port) {
            served = Some(c);
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served.is_some(), "a client is served once ports are free");
    assert_eq!(p.count_log("is DOWN"), 0, "{}", p.log_text());
    let s = stats_json(p.stats_addr());
    assert_eq!(s["services"][0]["backends"][0]["state"], "up");
    assert_eq!(s["services"][0]["backends"][0]["failures"], 0);
    assert!(s["connections"]["local_errors"].as_u64().unwrap() > 0, "{s}");
}

/// With `close_on_down`, a client still connecting to a backend that goes
/// down is sent to another backend, not closed.
#[test]
fn close_on_down_sends_connecting_clients_elsewhere() {
    // A listener whose backlog is full drops SYNs: connects to it hang,
    // and its health check times out.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    sock.listen(1).unwrap();
    let stuck = sock.local_addr().unwrap().as_socket().unwrap();
    let _queued: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&stuck, Duration::from_millis(300)).ok())
        .collect();
    let b = Backend::tagged("B");
    let p = Running::start(&hc_service(
        "interval_ms = 1000\ntimeout_ms = 800\nrise = 1\nfall = 1",
        &[(stuck, ""), (b.addr, "")],
        "close_on_down = true\nconnect_timeout_ms = 20000",
    ));
    let mut c = connect(p.addr("svc")); // round robin: the first client goes to the stuck one
    c.set_read_timeout(Some(SOON)).unwrap();
    assert_eq!(String::from_utf8(read_n(&mut c, 1)).unwrap(), "B", "{}", p.log_text());
    assert!(p.log_text().contains(&format!("backend={stuck} is DOWN")));
}
