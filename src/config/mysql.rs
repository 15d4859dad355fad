//! Configuration, step 2 per `[service.health_check]`, MySQL keys: the
//! password (inline or read from its file at load, i.e. at start and at each
//! reload, off the event loop), the wanted role, the replication lag limit and
//! the extra query. The password is a [`Secret`]: no `Debug`, `--check` or log
//! output ever shows it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::RawHealthCheck;
use super::validate::Validator;

/// Longest password, in bytes: it must fit one RSA-OAEP block of a 2048-bit
/// key with its NUL (214 bytes).
pub const MAX_PASSWORD: usize = 200;
/// Longest `mysql_query`, in bytes.
pub const MAX_QUERY: usize = 4096;
/// Most bytes read from `mysql_password_file`.
const MAX_PASSWORD_FILE: u64 = 4096;

/// A MySQL/MariaDB server's role: the one a check wants (`role`), or the one
/// a check saw (writable: primary, read-only: replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// A password. `Debug` prints `***` (or `""` when empty) so no log line or
/// dump of the configuration shows it; there is no `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(s: &str) -> Secret {
        Secret(s.into())
    }

    /// The password itself, for the login only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(|s| Secret(s.into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// The MySQL keys of one health check, validated.
pub(super) struct MysqlKeys {
    pub(super) password: Secret,
    pub(super) password_file: Option<PathBuf>,
    pub(super) role: Option<Role>,
    pub(super) max_replication_lag: Option<Duration>,
    pub(super) query: Option<String>,
}

impl Validator {
    /// `mysql_password`/`mysql_password_file`, `role`,
    /// `max_replication_lag_ms` and `mysql_query`; all need `mysql_user`.
    pub(super) fn mysql_keys(&mut self, key: &str, h: &mut RawHealthCheck, has_user: bool) -> MysqlKeys {
        let (password, password_file) = self.password(key, h.mysql_password.take(), h.mysql_password_file.take());
        let role = self.role(&format!("{key}.role"), h.role.as_deref());
        let lag = self.ms(
            &format!("{key}.max_replication_lag_ms"),
            h.max_replication_lag_ms,
            0,
            true,
        );
        let query = self.query(&format!("{key}.mysql_query"), h.mysql_query.take());
        let keys = MysqlKeys {
            password,
            password_file,
            role,
            max_replication_lag: (!lag.is_zero()).then_some(lag),
            query,
        };
        self.mysql_needs_user(key, &keys, has_user);
        if keys.max_replication_lag.is_some() && keys.role != Some(Role::Replica) {
            self.warn(
                &format!("{key}.max_replication_lag_ms"),
                "is used only with role = \"replica\"",
            );
        }
        keys
    }

    /// Every MySQL key set without `mysql_user` is an error.
    fn mysql_needs_user(&mut self, key: &str, keys: &MysqlKeys, has_user: bool) {
        if has_user {
            return;
        }
        let set = [
            (
                "mysql_password",
                !keys.password.is_empty() || keys.password_file.is_some(),
            ),
            ("role", keys.role.is_some()),
            ("max_replication_lag_ms", keys.max_replication_lag.is_some()),
            ("mysql_query", keys.query.is_some()),
        ];
        for (name, _) in set.iter().filter(|(_, on)| *on) {
            self.err(&format!("{key}.{name}"), "needs mysql_user");
        }
    }

    /// The password, inline or from its file; both is an error.
    fn password(&mut self, key: &str, inline: Option<Secret>, file: Option<PathBuf>) -> (Secret, Option<PathBuf>) {
        let (text, file) = match (inline, file) {
            (Some(_), Some(_)) => {
                self.err(
                    &format!("{key}.mysql_password_file"),
                    "cannot be combined with mysql_password",
                );
                return (Secret::default(), None);
            }
            (Some(p), None) => (p.0.into(), None),
            (None, Some(path)) => match read_password_file(&path) {
                Ok((p, warning)) => {
                    if let Some(w) = warning {
                        self.warn(&format!("{key}.mysql_password_file"), w);
                    }
                    (p, Some(path))
                }
                Err(e) => {
                    self.err(&format!("{key}.mysql_password_file"), e);
                    return (Secret::default(), Some(path));
                }
            },
            (None, None) => return (Secret::default(), None),
        };
        if text.len() > MAX_PASSWORD || text.contains(['\0', '\n', '\r']) {
            // Never the password itself in the message.
            self.err(
                &format!("{key}.mysql_password"),
                format!("must be at most {MAX_PASSWORD} bytes on one line, without NUL"),
            );
            return (Secret::default(), file);
        }
        (Secret::new(&text), file)
    }

    /// `role`: `any` (or absent) is `None`.
    fn role(&mut self, key: &str, role: Option<&str>) -> Option<Role> {
        match role.unwrap_or("any") {
            "any" => None,
            "primary" => Some(Role::Primary),
            "replica" => Some(Role::Replica),
            other => {
                self.err(key, format!("unknown role {other:?} (any | primary | replica)"));
                None
            }
        }
    }

    /// `mysql_query`: empty means none.
    fn query(&mut self, key: &str, query: Option<String>) -> Option<String> {
        let query = query.filter(|q| !q.trim().is_empty())?;
        if query.len() > MAX_QUERY || query.contains('\0') {
            self.err(key, format!("must be at most {MAX_QUERY} bytes without NUL"));
            return None;
        }
        Some(query)
    }
}

/// Reads a password file: its first line (without the line end), and a
/// warning when group or others may read it. More than one line is an error.
pub fn read_password_file(path: &Path) -> Result<(String, Option<String>), String> {
    let io_err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = crate::io::file::open_regular(path, crate::io::file::Mode::Read).map_err(io_err)?;
    let warning = permissions_warning(&file);
    let bytes = crate::io::file::read_open_bounded(file, MAX_PASSWORD_FILE).map_err(|e| match e {
        crate::io::file::ReadError::TooLarge(_) => {
            format!("{} is larger than {MAX_PASSWORD_FILE} bytes", path.display())
        }
        e => format!("cannot read {}: {e}", path.display()),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let first = first.strip_suffix('\r').unwrap_or(first);
    if lines.any(|l| !l.trim().is_empty()) {
        return Err(format!("{} must hold one line (the password)", path.display()));
    }
    Ok((first.to_string(), warning))
}

/// `Some(message)` when the file's mode lets group or others read it.
fn permissions_warning(file: &std::fs::File) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file.metadata().ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| format!("readable by group or others (mode {mode:03o}); chmod 600 it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
        assert_eq!(s.expose(), "hunter2");
    }

    const SVC: &str = "[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n\
                       [[service.backend]]\naddress = \"127.0.0.1:1\"\n[service.health_check]\n";

    fn parse(keys: &str) -> Result<crate::Config, Vec<String>> {
        crate::Config::parse(&format!("{SVC}{keys}"))
    }

    #[test]
    fn mysql_keys_parse_and_the_password_never_shows() {
        let c = parse(
            "mysql_user = \"check\"\nmysql_password = \"hunter2\"\nrole = \"replica\"\n\
             max_replication_lag_ms = 5000\nmysql_query = \"SELECT 1\"\n",
        )
        .unwrap();
        let hc = c.services[0].health_check.as_ref().unwrap();
        assert_eq!(hc.mysql_password.expose(), "hunter2");
        assert_eq!(hc.role, Some(Role::Replica));
        assert_eq!(hc.max_replication_lag, Some(Duration::from_secs(5)));
        assert_eq!(hc.mysql_query.as_deref(), Some("SELECT 1"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let (debug, summary) = (format!("{c:?}"), c.to_string());
        assert!(
            !debug.contains("hunter2") && !summary.contains("hunter2"),
            "{debug}\n{summary}"
        );
        assert!(
            summary.contains("mysql_user \"check\" password: set role replica"),
            "{summary}"
        );
        let any = parse("mysql_user = \"check\"\nrole = \"any\"\nmysql_query = \" \"\n").unwrap();
        let hc = any.services[0].health_check.as_ref().unwrap();
        assert_eq!((hc.role, hc.mysql_query.as_deref()), (None, None));
        assert!(any.to_string().contains("password: none role any"), "{any}");
    }

    #[test]
    fn mysql_key_mistakes_are_errors_or_warnings() {
        let err = |keys: &str, want: &str| {
            let e = parse(keys).unwrap_err().join("\n");
            assert!(e.contains(want), "{keys}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        };
        err("role = \"primary\"\n", "role: needs mysql_user");
        err("mysql_password = \"hunter2\"\n", "mysql_password: needs mysql_user");
        err("mysql_query = \"SELECT 1\"\n", "mysql_query: needs mysql_user");
        err("mysql_user = \"u\"\nrole = \"master\"\n", "unknown role \"master\"");
        err(
            "mysql_user = \"u\"\nmysql_password = \"hunter2\"\nmysql_password_file = \"/x\"\n",
            "mysql_password_file: cannot be combined with mysql_password",
        );
        err(
            "mysql_user = \"u\"\nmysql_password = \"hunter2\\u0000\"\n",
            "without NUL",
        );
        err(
            "mysql_user = \"u\"\nmysql_password_file = \"/nonexistent/pw\"\n",
            "cannot read",
        );
        let c = parse("mysql_user = \"u\"\nrole = \"primary\"\nmax_replication_lag_ms = 10\n").unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("only with role")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn password_files_are_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("easyproxy-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let ok = file("ok", "s3cret\n", 0o600);
        assert_eq!(read_password_file(&ok).unwrap(), ("s3cret".to_string(), None));
        let crlf = file("crlf", "s3cret\r\n\n", 0o400);
        assert_eq!(read_password_file(&crlf).unwrap().0, "s3cret");
        let open = file("open", "s3cret", 0o644);
        let (pw, warning) = read_password_file(&open).unwrap();
        assert_eq!(pw, "s3cret");
        assert!(warning.unwrap().contains("mode 644"));
        let c = parse(&format!(
            "mysql_user = \"u\"\nmysql_password_file = {:?}\n",
            open.display()
        ))
        .unwrap();
        let hc = c.services[0].health_check.as_ref().unwrap();
        assert_eq!(hc.mysql_password.expose(), "s3cret");
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("mysql_password_file: readable by group")),
            "{:?}",
            c.warnings
        );
        assert!(c.to_string().contains("password: set (from "), "{c}");
        let two = file("two", "a\nb\n", 0o600);
        let e = read_password_file(&two).unwrap_err();
        assert!(e.contains("one line"), "{e}");
        assert!(read_password_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
