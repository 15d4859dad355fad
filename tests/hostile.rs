//! Hostile and broken clients: many misbehaving connections at once must
//! each close only their own pair, leak nothing, and leave the proxy serving.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn stats(addr: SocketAddr) -> Value {
    stats_json(addr)
}

fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

/// One misbehaving client; `kind` picks the misbehaviour.
fn misbehave(addr: SocketAddr, kind: usize) {
    let Ok(mut s) = TcpStream::connect(addr) else { return };
    s.set_read_timeout(Some(SOON)).unwrap();
    match kind % 6 {
        0 => {} // connect and vanish
        1 => {
            let _ = s.write_all(&pattern(kind as u64, 10_000));
            reset(s);
        }
        2 => {
            let msg = pattern(kind as u64, 50_000);
            s.write_all(&msg).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            assert!(got == msg, "a well-behaved client among the bad ones got wrong bytes");
        }
        3 => {
            // Sends a lot, reads a little, then resets mid-stream.
            let mut w = s.try_clone().unwrap();
            let h = thread::spawn(move || {
                let _ = w.write_all(&pattern(3, 2 << 20));
            });
            let mut buf = [0u8; 1000];
            let _ = s.read(&mut buf);
            reset(s);
            let _ = h.join();
        }
        4 => {
            // Half a PROXY-looking / TLS-looking garbage blob, then a close.
            let _ = s.write_all(b"\x16\x03\x01\x00\xffPROXY TCP4 garbage\r\n\x00\x00");
            thread::sleep(Duration::from_millis(20));
        }
        _ => {
            thread::sleep(Duration::from_millis(50));
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn storm(splice: bool) {
    let b = Backend::echo();
    let cfg = service_config("", &[b.addr])
        .replace("[global]\n", &format!("[global]\nsplice = {splice}\n"))
        .replace("log_level = \"debug\"", "log_level = \"info\"")
        .replace("[[service]]", "[stats]\nlisten = \"127.0.0.1:0\"\n\n[[service]]");
    let mut p = Running::start(&cfg);
    let addr = p.addr("svc");
    let st = p.stats_addr();
    let fds_before = p.open_fds();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..30 {
                    misbehave(addr, t * 31 + i);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    wait_for("every pair to close", SOON, || {
        let j = stats(st);
        (j["connections"]["active"] == 0 && j["buffers_in_use"] == 0).then_some(())
    });
    assert!(p.is_running());
    let j = stats(st);
    assert_eq!(j["connections"]["total"], 240);
    if !splice {
        // Every descriptor came back (the stats client of the check is gone too).
        wait_for("descriptors to return", SOON, || {
            (p.open_fds() <= fds_before).then_some(())
        });
    }
    let mut c = connect(addr);
    assert_eq!(roundtrip(&mut c, b"still serving"), b"still serving");
}

#[test]
fn a_storm_of_broken_clients_leaks_nothing() {
    storm(false);
}

#[test]
fn a_storm_of_broken_clients_leaks_nothing_with_splice() {
    storm(true);
}

#[test]
fn timer_entries_of_closed_connections_do_not_pile_up() {
    // Each connection arms a minute-long connect deadline that outlives it;
    // thousands of short connections must not leave thousands of entries.
    let b = Backend::echo();
    let cfg = service_config("connect_timeout_ms = 60000\n", &[b.addr])
        .replace("log_level = \"debug\"", "log_level = \"info\"")
        .replace("[[service]]", "[stats]\nlisten = \"127.0.0.1:0\"\n\n[[service]]");
    let p = Running::start(&cfg);
    let addr = p.addr("svc");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..2000 {
                    let mut c = connect(addr);
                    assert_eq!(roundtrip(&mut c, b"x"), b"x");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let j = stats(p.stats_addr());
    assert_eq!(j["connections"]["total"], 8000);
    let pending = j["timers_pending"].as_u64().unwrap();
    eprintln!("timers pending: {pending}");
    assert!(
        pending <= 4096 + 64,
        "{pending} timer entries after 8000 closed connections"
    );
}
