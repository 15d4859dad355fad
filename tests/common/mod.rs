//! Shared test harness: runs the real binary on a config in a temp dir,
//! collects its log lines, and provides small backends on 127.0.0.1:0.
#![allow(dead_code)]

pub mod admin;
pub mod mariadb;
pub mod mysql;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for anything that should happen "soon" on a noisy machine.
pub const SOON: Duration = Duration::from_secs(10);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_easyproxy")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("easyproxy-test-{}-{}", std::process::id(), n));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some, or panics after `limit`.
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A running easyproxy process.
pub struct Running {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: TempDir,
    pub config: PathBuf,
}

impl Running {
    /// Starts easyproxy on `config` (TOML text) and waits for every
    /// service to listen.
    pub fn start(config: &str) -> Running {
        Running::start_with(config, |c| c)
    }

    /// Like [`start`], letting the caller adjust the command (e.g. a shell
    /// wrapper that lowers limits).
    pub fn start_with(config: &str, adjust: impl FnOnce(Command) -> Command) -> Running {
        let dir = TempDir::new();
        let path = dir.path("easyproxy.toml");
        std::fs::write(&path, config).unwrap();
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&path);
        let mut cmd = adjust(cmd);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn easyproxy");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        thread::spawn(move || {
            let mut reader = std::io::BufReader::new(stderr);
            let mut line = String::new();
            while let Ok(n) = std::io::BufRead::read_line(&mut reader, &mut line) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push(line.trim_end().to_string());
                line.clear();
            }
        });
        let r = Running {
            child,
            logs,
            dir,
            config: path,
        };
        let services = config.matches("[[service]]").count();
        r.wait_log("started", SOON);
        wait_for("services to listen", SOON, || {
            (r.logs
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(" listening on "))
                .count()
                >= services)
                .then_some(())
        });
        r
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The address service `name` listens on, from its start-up log line.
    pub fn addr(&self, name: &str) -> SocketAddr {
        let needle = format!("service {name} listening on ");
        let line = self.wait_log(&needle, SOON);
        let at = line.find(&needle).unwrap() + needle.len();
        line[at..].trim().parse().unwrap()
    }

    /// The newest address of service `name` (after a reload moved it).
    pub fn last_addr(&self, name: &str) -> SocketAddr {
        let needle = format!("service {name} listening on ");
        let line = self
            .logs
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| l.contains(&needle))
            .cloned()
            .unwrap();
        let at = line.find(&needle).unwrap() + needle.len();
        line[at..].trim().parse().unwrap()
    }

    pub fn stats_addr(&self) -> SocketAddr {
        let needle = "stats listening on http://";
        let line = self.wait_log(needle, SOON);
        let at = line.find(needle).unwrap() + needle.len();
        line[at..].trim().trim_end_matches('/').parse().unwrap()
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> String {
        wait_for(&format!("log line {needle:?}"), limit, || {
            self.logs.lock().unwrap().iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// Waits until `count` log lines contain `needle`.
    pub fn wait_log_count(&self, needle: &str, count: usize, limit: Duration) {
        wait_for(&format!("{count} log lines {needle:?}"), limit, || {
            (self.count_log(needle) >= count).then_some(())
        })
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.logs.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Rewrites the config file and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        std::fs::write(&self.config, config).unwrap();
        self.signal(libc::SIGHUP);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                panic!("easyproxy did not exit within {limit:?}; log:\n{}", self.log_text());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_field(self.pid(), "VmRSS:")
    }

    /// User + system CPU time in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- easyproxy log ----\n{}", self.log_text());
        }
    }
}

/// The soft and hard RLIMIT_NOFILE of a process (hard: u64::MAX when
/// unlimited).
pub fn fd_limits(pid: i32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut f = line.split_whitespace().skip(3);
    let soft = f.next().unwrap().parse().unwrap();
    let hard = f.next().unwrap().parse().unwrap_or(u64::MAX);
    (soft, hard)
}

pub fn proc_status_field(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wraps `cmd` in `sh -c "ulimit <limit> && exec cmd ..."`, for tests that
/// run easyproxy under a lowered RLIMIT_NOFILE.
pub fn under_ulimit(cmd: Command, limit: &str) -> Command {
    let prog = cmd.get_program().to_string_lossy().to_string();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().to_string()).collect();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit {limit} && exec {prog} {}", args.join(" ")));
    sh
}

/// A backend listening on 127.0.0.1:0 that serves each connection in a thread.
pub struct Backend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Backend {
    pub fn spawn<F>(handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Backend::spawn_on(listener, handler)
    }

    pub fn spawn_on<F>(listener: TcpListener, handler: F) -> Backend
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let handler = Arc::new(handler);
        let (acc, st) = (accepted.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || loop {
            if st.load(Ordering::SeqCst) {
                return;
            }
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    acc.fetch_add(1, Ordering::SeqCst);
                    let h = handler.clone();
                    thread::spawn(move || h(s));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                Err(_) => return,
            }
        });
        Backend { addr, accepted, stop }
    }

    /// Echoes everything back; shuts down writing after the client does.
    pub fn echo() -> Backend {
        Backend::spawn(echo_conn)
    }

    /// Sends `tag` on accept, then echoes.
    pub fn tagged(tag: &'static str) -> Backend {
        Backend::spawn(move |mut s| {
            if s.write_all(tag.as_bytes()).is_ok() {
                echo_conn(s);
            }
        })
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the listening socket.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn echo_conn(mut s: TcpStream) {
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = s.shutdown(Shutdown::Write);
}

/// An address where nothing listens (connects are refused).
pub fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Connects with a read timeout set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s
}

/// Sends `msg` and reads the same number of bytes back.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    got
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    s.read_exact(&mut got).unwrap();
    got
}

/// Whether the peer closed (EOF or reset) within `limit`.
pub fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// A minimal config with one service in front of `backends`.
pub fn service_config(extra_service: &str, backends: &[SocketAddr]) -> String {
    let mut c = String::from(
        "[global]\nlog_level = \"debug\"\nshutdown_timeout_ms = 5000\n\n[[service]]\nname = \"svc\"\nlisten = \"127.0.0.1:0\"\n",
    );
    c.push_str(extra_service);
    c.push('\n');
    for b in backends {
        c.push_str(&format!("[[service.backend]]\naddress = \"{b}\"\n"));
    }
    c
}

/// `easyproxy --check -c FILE` on `text`: (exit code, stdout, stderr).
pub fn check_text(text: &str) -> (i32, String, String) {
    let dir = TempDir::new();
    let path = dir.path("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin())
        .arg("--check")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The `/stats` JSON of the stats listener at `addr`.
pub fn stats_json(addr: SocketAddr) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(SOON)).unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// FNV-1a over a byte stream, for checksums of large transfers.
pub fn fnv(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100000001b3);
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
