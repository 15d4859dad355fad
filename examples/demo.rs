//! Sample backends and a sample client for `scripts/demo.sh`.
//!
//!   cargo run --example demo -- backend 127.0.0.1:17001 alpha
//!   cargo run --example demo -- client 127.0.0.1:17000 12

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["backend", addr, name] => backend(addr, name),
        ["client", addr, n] => client(addr, n.parse().unwrap_or(10)),
        _ => {
            eprintln!("usage: demo backend ADDR NAME | demo client ADDR COUNT");
            std::process::exit(2);
        }
    }
}

/// Greets each client with its name, then echoes in upper case.
fn backend(addr: &str, name: &str) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("backend {name}: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    eprintln!("backend {name} listening on {addr}");
    for s in l.incoming().flatten() {
        let name = name.to_string();
        thread::spawn(move || serve(s, &name));
    }
}

fn serve(mut s: TcpStream, name: &str) {
    if s.write_all(format!("hello from {name}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// Opens `n` connections one after another and shows who answered.
fn client(addr: &str, n: usize) {
    for i in 0..n {
        let mut s = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("client {i}: cannot connect to {addr}: {e}");
                std::process::exit(1);
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let msg = format!("message {i} through easyproxy\n");
        s.write_all(msg.as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        if let Err(e) = s.read_to_string(&mut reply) {
            eprintln!("client {i}: {e}");
            std::process::exit(1);
        }
        println!("client {i:2}: {}", reply.trim_end().replace('\n', " | "));
    }
}
