//! Test harness, real MariaDB: starts a private `mariadbd` on a free
//! loopback port with a temporary data directory (`mariadb-install-db`),
//! runs SQL through the `mariadb` client over its unix socket as root, and
//! stops it on drop. Reusable: several servers can run at once (a primary
//! and a replica). Without `mariadbd` installed, [`MariaDb::start`] prints a
//! loud SKIPPED line and returns `None`; with `CI=true` it panics instead.
//! `EASYPROXY_TEST_MARIADBD` may name the server binary.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

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
        let client = find(&["mariadb", "mysql"]).expect("the mariadb client");
        let out = Command::new(client)
            .args(["--no-defaults", "-uroot", "-N", "-B"])
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
