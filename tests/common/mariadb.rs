//! Test harness, real MariaDB: starts a private `mariadbd` on a free
//! loopback port with a temporary data directory (`mariadb-install-db`),
//! runs SQL through the `mariadb` client over its unix socket as root, and
//! stops it on drop. Reusable: several servers can run at once; [`Pair`]
//! is a primary and a replica with real replication, promotion and the
//! SQL thread at hand, and [`Client`] a minimal MySQL client (the
//! project's own protocol code) for sessions through the proxy. Without `mariadbd` installed, [`MariaDb::start`] prints a
//! loud SKIPPED line and returns `None`; with `CI=true` it panics instead.
//! `EASYPROXY_TEST_MARIADBD` may name the server binary.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use easyproxy::health::mysql::auth::{auth_data, handshake_response, parse_auth_switch, parse_greeting, NATIVE};
use easyproxy::health::mysql::packets::{is_err, is_ok, ServerError};
use easyproxy::health::mysql::resultset::{Feed, ResultReader, Table};
use easyproxy::health::mysql::{frame, Packet, PacketReader, QUIT};

use super::{TempDir, SOON};

/// How long a fresh server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(90);

/// A running private MariaDB server.
pub struct MariaDb {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
    socket: PathBuf,
}

/// The first of `names` found in PATH (or /usr/sbin, /usr/bin).
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(PathBuf::from)
        .chain(["/usr/sbin".into(), "/usr/bin".into()]);
    let dirs: Vec<PathBuf> = dirs.collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

/// Whether `mariadbd` can run here; `None` (after a SKIPPED line) when
/// not, unless CI=true, where a missing server fails the test.
pub fn available(test: &str) -> Option<PathBuf> {
    // EASYPROXY_TEST_MARIADBD names another server binary (a path that
    // does not exist shows what happens without one).
    let found = match std::env::var_os("EASYPROXY_TEST_MARIADBD") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => find(&["mariadbd", "mysqld"]),
    };
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: mariadbd is not installed, and CI=true requires it (see .ci/run)");
        }
        // Straight to stderr: the test harness captures eprintln!.
        let line = format!(
            "\n******** SKIPPED {test}: mariadbd is not installed \
             (apt-get install mariadb-server mariadb-client) ********\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    }
    found
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl MariaDb {
    /// Installs a data directory and starts a server on it; `extra` are
    /// further `mariadbd` options (`--server-id=2`, `--log-bin`, ...).
    /// `None` when MariaDB is not installed (see [`available`]).
    pub fn start(test: &str, extra: &[&str]) -> Option<MariaDb> {
        let server = available(test)?;
        let dir = TempDir::new();
        let data = dir.path("data");
        // A temp dir of its own: servers bootstrapped at the same time would
        // otherwise collide on temporary table names in /tmp.
        let tmp = dir.path("tmp");
        std::fs::create_dir_all(&tmp).expect("create the server's tmpdir");
        let install = find(&["mariadb-install-db", "mysql_install_db"]).expect("mariadb-install-db");
        let out = Command::new(install)
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (port, socket) = (free_port(), dir.path("mysqld.sock"));
        let child = Command::new(server)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path("mysqld.pid").display()))
            .arg(format!("--log-error={}", dir.path("error.log").display()))
            .args(["--user=root", "--innodb-buffer-pool-size=32M", "--skip-name-resolve"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadbd");
        let mut db = MariaDb {
            child,
            port,
            dir,
            socket,
        };
        db.wait_ready();
        Some(db)
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while self.try_sql("SELECT 1").is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("mariadbd exited ({status}): {}", self.error_log());
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "mariadbd not ready: {}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's error log (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path("error.log")).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs SQL as root; the output, tab-separated without headers.
    pub fn try_sql(&self, sql: &str) -> Result<String, String> {
        self.root_client(&["-N", "-B"], sql)
    }

    /// Runs SQL as root over the unix socket with the client options `args`.
    fn root_client(&self, args: &[&str], sql: &str) -> Result<String, String> {
        let client = find(&["mariadb", "mysql"]).expect("the mariadb client");
        let out = Command::new(client)
            .args(["--no-defaults", "-uroot"])
            .args(args)
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs SQL as `user` over TCP to 127.0.0.1, as the proxy connects.
    pub fn try_sql_tcp(&self, user: &str, password: &str, sql: &str) -> Result<String, String> {
        let client = find(&["mariadb", "mysql"]).expect("the mariadb client");
        let out = Command::new(client)
            .args(["--no-defaults", "-N", "-B", "--protocol=TCP", "-h127.0.0.1"])
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={user}"))
            .arg(format!("--password={password}"))
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    /// Runs SQL as root; panics on failure.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A `SHOW GLOBAL STATUS` counter.
    pub fn status(&self, name: &str) -> u64 {
        let row = self.sql(&format!("SHOW GLOBAL STATUS LIKE '{name}'"));
        row.split('\t')
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name}: {row:?}"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // The process this harness started, by its id: a clean shutdown.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Replication: a primary/replica pair, promotion, the SQL thread.

/// The replication user (created on the primary, replicated).
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "Repl-pw1";
/// The health-check user: a password, and `REPLICA MONITOR` for
/// `SHOW SLAVE STATUS`.
pub const CHECK_USER: &str = "check";
pub const CHECK_PASSWORD: &str = "Ch3ck-pw";
/// The application user: everything on database `app` (table `app.t`),
/// nothing that writes past `read_only`.
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "App-pw1";

/// How long replication may take to start or catch up.
const REPLICATION_LIMIT: Duration = Duration::from_secs(60);

impl MariaDb {
    /// `SHOW SLAVE STATUS` as (column, value) pairs; empty when the server
    /// replicates from nothing.
    pub fn slave_status(&self) -> Vec<(String, String)> {
        let text = self
            .root_client(&["-E"], "SHOW SLAVE STATUS")
            .unwrap_or_else(|e| panic!("SHOW SLAVE STATUS: {e}"));
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }

    /// One `SHOW SLAVE STATUS` column ("" when absent).
    pub fn slave_field(&self, name: &str) -> String {
        self.slave_status()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// Replicates from `source` (GTID, from this server's slave position)
    /// and waits until both replication threads run.
    pub fn replicate_from(&self, source: &MariaDb) {
        self.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, \
             MASTER_USER='{REPL_USER}', MASTER_PASSWORD='{REPL_PASSWORD}', \
             MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; START SLAVE",
            source.port
        ));
        self.wait_replicating();
    }

    /// Waits until `Slave_IO_Running` and `Slave_SQL_Running` are both Yes.
    pub fn wait_replicating(&self) {
        let start = Instant::now();
        loop {
            let st = self.slave_status();
            let field = |n: &str| st.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
            if field("Slave_IO_Running") == Some("Yes") && field("Slave_SQL_Running") == Some("Yes") {
                return;
            }
            assert!(
                start.elapsed() < REPLICATION_LIMIT,
                "replication did not start on port {}: {st:?}\n{}",
                self.port,
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until this replica has applied everything `source` has
    /// written so far (`MASTER_GTID_WAIT` on the source's binlog position).
    pub fn wait_caught_up(&self, source: &MariaDb) {
        let pos = source.sql("SELECT @@gtid_binlog_pos");
        let secs = REPLICATION_LIMIT.as_secs();
        let got = self.sql(&format!("SELECT MASTER_GTID_WAIT('{pos}', {secs})"));
        assert_eq!(got, "0", "replica on port {} did not reach {pos}", self.port);
    }

    /// Makes this replica a primary: replication stopped and forgotten,
    /// writable.
    pub fn promote(&self) {
        self.sql("STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0");
    }

    /// Makes this server read-only (a demoted primary).
    pub fn demote(&self) {
        self.sql("SET GLOBAL read_only = 1");
    }

    pub fn set_read_only(&self, on: bool) {
        self.sql(&format!("SET GLOBAL read_only = {}", u8::from(on)));
    }

    /// Stops the replication SQL thread (the IO thread keeps fetching):
    /// a replica that falls behind for good.
    pub fn stop_sql_thread(&self) {
        self.sql("STOP SLAVE SQL_THREAD");
        let start = Instant::now();
        while self.slave_field("Slave_SQL_Running") != "No" {
            assert!(start.elapsed() < REPLICATION_LIMIT, "SQL thread did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the SQL thread again and waits until both threads run.
    pub fn start_sql_thread(&self) {
        self.sql("START SLAVE SQL_THREAD");
        self.wait_replicating();
    }
}

/// A primary and a replica with real replication (GTID): two servers with
/// their own `server_id`, binary logs on both (`--log-slave-updates`, so
/// either can be the primary), the replica `read_only`. The users
/// [`REPL_USER`], [`CHECK_USER`] and [`APP_USER`] (and database `app` with
/// table `t`) are created on the primary and reach the replica by
/// replication. The field names say how the pair was set up: after
/// [`Pair::switchover`], `replica` is the primary.
pub struct Pair {
    pub primary: MariaDb,
    pub replica: MariaDb,
}

impl Pair {
    /// Starts both servers and replication; `None` (after a SKIPPED line)
    /// when MariaDB is not installed, as [`MariaDb::start`].
    pub fn start(test: &str) -> Option<Pair> {
        // One pair installed at a time: `mariadb-install-db` runs of
        // several tests at once can collide on their temporary files.
        static INSTALL: Mutex<()> = Mutex::new(());
        let common = ["--log-bin=mysql-bin", "--log-slave-updates", "--binlog-format=ROW"];
        let guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let primary = MariaDb::start(test, &[&common[..], &["--server-id=1"]].concat())?;
        let replica = MariaDb::start(test, &[&common[..], &["--server-id=2", "--read-only=1"]].concat())?;
        drop(guard);
        primary.sql(&format!(
            "CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'; \
             GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'; \
             CREATE USER '{CHECK_USER}'@'%' IDENTIFIED BY '{CHECK_PASSWORD}'; \
             GRANT REPLICA MONITOR ON *.* TO '{CHECK_USER}'@'%'; \
             CREATE DATABASE app; \
             CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, port INT NOT NULL); \
             CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
             GRANT ALL ON app.* TO '{APP_USER}'@'%'"
        ));
        replica.replicate_from(&primary);
        replica.wait_caught_up(&primary);
        Some(Pair { primary, replica })
    }

    /// A planned failover: the primary turns read-only, the replica
    /// applies what it had not yet, then is promoted (replication reset,
    /// writable). Returns when the replica is writable.
    pub fn switchover(&self) {
        self.primary.demote();
        self.replica.wait_caught_up(&self.primary);
        self.replica.promote();
    }
}

// ---------------------------------------------------------------------------
// A minimal MySQL client over TCP, built on the project's own packet, auth
// and result-set code: logs in (mysql_native_password or whatever the
// server asks for, auth switches included) and runs text queries. It is
// what an application does through the proxy, and it can hold a session
// open to see the proxy close it.

/// One client session.
pub struct Client {
    stream: TcpStream,
    reader: PacketReader,
    quit: bool,
}

impl Client {
    /// Connects to `addr` and logs in as `user`; the server's message on
    /// failure.
    pub fn login(addr: SocketAddr, user: &str, password: &str) -> Result<Client, String> {
        let stream = TcpStream::connect_timeout(&addr, SOON).map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_read_timeout(Some(SOON)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut c = Client {
            stream,
            reader: PacketReader::new(),
            quit: false,
        };
        let greeting = c.packet()?;
        if is_err(&greeting.payload) {
            c.quit = true;
            return Err(ServerError::parse(&greeting.payload).to_string());
        }
        let g = parse_greeting(&greeting.payload).map_err(|t| format!("greeting: {}", t.0))?;
        let plugin = if g.plugin.is_empty() { NATIVE.to_vec() } else { g.plugin };
        let data = auth_data(&plugin, password, &g.nonce).map_err(|e| format!("{e:?}"))?;
        c.send(&handshake_response(1, g.capabilities, user, &plugin, &data))?;
        let mut reply = c.packet()?;
        if reply.payload.first() == Some(&0xfe) {
            let (plugin, nonce) = parse_auth_switch(&reply.payload);
            let data = auth_data(&plugin, password, &nonce).map_err(|e| format!("{e:?}"))?;
            c.send(&frame(reply.seq.wrapping_add(1), &data))?;
            reply = c.packet()?;
        }
        if is_ok(&reply.payload) {
            Ok(c)
        } else {
            c.quit = true;
            match is_err(&reply.payload) {
                true => Err(ServerError::parse(&reply.payload).to_string()),
                false => Err(format!("unexpected login answer {:?}", reply.payload)),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| format!("write: {e}"))
    }

    fn packet(&mut self) -> Result<Packet, String> {
        loop {
            if let Some(p) = self.reader.next_packet().map_err(|e| format!("{e:?}"))? {
                return Ok(p);
            }
            let mut buf = [0u8; 16384];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("connection closed (EOF)".into()),
                Ok(n) => self.reader.extend(&buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Runs `sql` (COM_QUERY): its result set, empty for a statement
    /// without one; the server's message on error.
    pub fn query(&mut self, sql: &str) -> Result<Table, String> {
        let mut payload = vec![0x03];
        payload.extend_from_slice(sql.as_bytes());
        self.send(&frame(0, &payload))?;
        let mut answer = ResultReader::new();
        loop {
            let p = self.packet()?;
            match answer.feed(&p.payload).map_err(|m| m.0.to_string())? {
                Feed::More => {}
                Feed::Done(table) => return Ok(table),
                Feed::Failed(e) => return Err(e.to_string()),
            }
        }
    }

    /// The first column of the first row of `sql`'s answer.
    pub fn value(&mut self, sql: &str) -> Result<String, String> {
        let table = self.query(sql)?;
        match table.rows.first().and_then(|r| r.first()) {
            Some(Some(v)) => Ok(v.clone()),
            Some(None) => Ok("NULL".into()),
            None => Err(format!("{sql}: no rows")),
        }
    }

    /// The port of the server this session reached (`SELECT @@port`).
    pub fn server_port(&mut self) -> Result<u16, String> {
        let v = self.value("SELECT @@port")?;
        v.parse().map_err(|_| format!("@@port: {v:?}"))
    }

    /// Whether the other side closes the session (EOF or reset) within
    /// `limit`, without sending anything.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(limit));
        let mut b = [0u8; 1024];
        let closed = match self.stream.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        let _ = self.stream.set_read_timeout(Some(SOON));
        if closed {
            self.quit = true;
        }
        closed
    }
}

impl Drop for Client {
    /// COM_QUIT, so the server counts no aborted client.
    fn drop(&mut self) {
        if !self.quit {
            let _ = self.stream.write_all(&QUIT);
            let mut b = [0u8; 64];
            let _ = self.stream.set_read_timeout(Some(Duration::from_secs(1)));
            while matches!(self.stream.read(&mut b), Ok(n) if n > 0) {}
        }
    }
}

/// One client session through `addr`: logs in as [`APP_USER`] and returns
/// the port of the server it reached.
pub fn app_port(addr: SocketAddr) -> Result<u16, String> {
    Client::login(addr, APP_USER, APP_PASSWORD)?.server_port()
}

/// One client session through `addr` that writes a row (`INSERT INTO
/// app.t`): the port of the server that took it.
pub fn app_write(addr: SocketAddr) -> Result<u16, String> {
    let mut c = Client::login(addr, APP_USER, APP_PASSWORD)?;
    c.query("INSERT INTO app.t (port) VALUES (@@port)")?;
    c.server_port()
}
