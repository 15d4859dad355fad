//! Opens N idle TCP connections to an address and holds them, for memory
//! measurements (`scripts/compare.sh`).
//!
//!   cargo run --release --example idle -- 127.0.0.1:18102 5000 30
//!
//! Prints `ready N` once all are connected, then holds them for SECONDS.

use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 {
        eprintln!("usage: idle ADDR COUNT SECONDS");
        std::process::exit(2);
    }
    let addr = &args[0];
    let n: usize = args[1].parse().unwrap_or(1000);
    let secs: u64 = args[2].parse().unwrap_or(30);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => {
                eprintln!("connection {i}: {e}");
                std::process::exit(1);
            }
        }
    }
    println!("ready {}", held.len());
    std::thread::sleep(Duration::from_secs(secs));
}
