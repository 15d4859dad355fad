//! Configuration, step 2 per `[service.health_check]`, MySQL keys: the
//! password (inline or read from its file at load, i.e. at start and at each
//! reload, off the event loop), the wanted role, the replication lag limit,
//! the extra query, and where caching_sha2 full authentication gets the
//! server's RSA key (a pinned `mysql_server_public_key_file`, parsed and
//! checked at load too, or `mysql_get_server_public_key`). The password is
//! a [`Secret`]: no `Debug`, `--check` or log output ever shows it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

use super::raw::RawHealthCheck;
use super::validate::Validator;

/// Longest password, in bytes: it must fit one RSA-OAEP block of a 2048-bit
/// key with its NUL (214 bytes).
pub const MAX_PASSWORD: usize = 200;
/// Longest `mysql_query`, in bytes.
pub const MAX_QUERY: usize = 4096;
/// Most bytes read from `mysql_password_file`.
const MAX_PASSWORD_FILE: u64 = 4096;
/// Largest RSA key accepted, in bits. MySQL's own keys are 2048 bits; a
/// bigger key, or a bigger exponent, costs the event loop more per check
/// (an 8192-bit key with exponent 2^33-1: 3.2 ms of CPU per encryption).
pub const MAX_RSA_BITS: u32 = 4096;
/// The only RSA public exponent accepted (what every MySQL key uses).
pub const RSA_EXPONENT: u64 = 65537;
/// Most bytes read from `mysql_server_public_key_file` (a 4096-bit key's
/// PEM is about 800).
pub const MAX_KEY_FILE: u64 = 16 * 1024;
/// What RSA-OAEP (SHA-1) adds to a message: the most a key of `k` bytes
/// encrypts is `k - OAEP_OVERHEAD` bytes.
const OAEP_OVERHEAD: usize = 2 * 20 + 2;

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

/// An RSA public key that caching_sha2 full authentication may encrypt the
/// password to: parsed from PEM (`BEGIN PUBLIC KEY`, as MySQL's
/// `public_key.pem`, or PKCS#1 `BEGIN RSA PUBLIC KEY`), at most
/// [`MAX_RSA_BITS`] bits, exponent [`RSA_EXPONENT`]. The same checks apply
/// to a pinned key (at load) and to a key a server sends. `Debug` shows the
/// size only.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaKey {
    key: rsa::PublicKey,
    bits: u32,
}

/// Why a PEM is not an acceptable [`RsaKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not text, not PEM, not RSA, or outside what the RSA library reads
    /// (1024 to 8192 bits).
    Unreadable,
    /// Larger than [`MAX_RSA_BITS`] (its size).
    TooLarge(u32),
    /// A public exponent other than [`RSA_EXPONENT`] (its value).
    Exponent(u64),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Unreadable => f.write_str(
                "not a readable RSA public key (PEM: BEGIN PUBLIC KEY or BEGIN RSA PUBLIC KEY, at least 1024 bits)",
            ),
            KeyError::TooLarge(bits) => write!(f, "{bits}-bit RSA key refused: at most {MAX_RSA_BITS} bits"),
            KeyError::Exponent(e) => {
                write!(f, "RSA key with public exponent {e} refused: only {RSA_EXPONENT}")
            }
        }
    }
}

impl RsaKey {
    /// Parses and checks `pem` (surrounding whitespace and NULs ignored:
    /// MySQL sends its key with a trailing newline and NUL).
    pub fn from_pem(pem: &[u8]) -> Result<RsaKey, KeyError> {
        let pem = std::str::from_utf8(pem).map_err(|_| KeyError::Unreadable)?;
        let pem = pem.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        let key = rsa::PublicKey::from_public_key_pem(pem)
            .or_else(|_| rsa::PublicKey::from_pkcs1_pem(pem))
            .map_err(|_| KeyError::Unreadable)?;
        let bits = key.n().bit_width_vartime();
        if bits > MAX_RSA_BITS {
            return Err(KeyError::TooLarge(bits));
        }
        // The library refuses exponents above 2^33-1: eight bytes hold it.
        let e = key.e_bytes().iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        if e != RSA_EXPONENT {
            return Err(KeyError::Exponent(e));
        }
        Ok(RsaKey { key, bits })
    }

    /// The key, for the encryption.
    pub fn key(&self) -> &rsa::PublicKey {
        &self.key
    }

    /// Its size, in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The longest password it can encrypt (with its NUL), in bytes.
    pub fn max_password(&self) -> usize {
        self.key.size().saturating_sub(OAEP_OVERHEAD + 1)
    }
}

impl fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RsaKey({} bits)", self.bits)
    }
}

/// `mysql_server_public_key_file`: the file and the key read from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    pub path: PathBuf,
    pub key: RsaKey,
}

/// Where caching_sha2 full authentication (a server whose cache lacks the
/// user) gets the RSA key the password is encrypted to. Without TLS a key
/// the server sends can be anyone's, so, as MySQL's own client does, only
/// a pinned key or an explicit opt-in lets the password go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MysqlServerKey {
    /// Neither key set: the key is never requested, the password never
    /// sent; full authentication fails the check.
    #[default]
    Refuse,
    /// `mysql_server_public_key_file`: the password is encrypted to this
    /// key, parsed at load; no key is requested from the server.
    Pinned(Arc<PinnedKey>),
    /// `mysql_get_server_public_key = true`: the key the server sends.
    FromServer,
}

/// The MySQL keys of one health check, validated.
pub(super) struct MysqlKeys {
    pub(super) password: Secret,
    pub(super) password_file: Option<PathBuf>,
    pub(super) role: Option<Role>,
    pub(super) max_replication_lag: Option<Duration>,
    pub(super) query: Option<String>,
    pub(super) server_key: MysqlServerKey,
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
        let key_file = h
            .mysql_server_public_key_file
            .take()
            .filter(|p| !p.as_os_str().is_empty());
        let from_server = h.mysql_get_server_public_key.take().unwrap_or(false);
        let key_set = [key_file.is_some(), from_server];
        let server_key = self.server_key(key, key_file, from_server, &password);
        let keys = MysqlKeys {
            password,
            password_file,
            role,
            max_replication_lag: (!lag.is_zero()).then_some(lag),
            query,
            server_key,
        };
        self.mysql_needs_user(key, &keys, key_set, has_user);
        if keys.max_replication_lag.is_some() && keys.role != Some(Role::Replica) {
            self.warn(
                &format!("{key}.max_replication_lag_ms"),
                "is used only with role = \"replica\"",
            );
        }
        keys
    }

    /// Every MySQL key set without `mysql_user` is an error.
    fn mysql_needs_user(&mut self, key: &str, keys: &MysqlKeys, [key_file, from_server]: [bool; 2], has_user: bool) {
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
            ("mysql_server_public_key_file", key_file),
            ("mysql_get_server_public_key", from_server),
        ];
        for (name, _) in set.iter().filter(|(_, on)| *on) {
            self.err(&format!("{key}.{name}"), "needs mysql_user");
        }
    }

    /// `mysql_server_public_key_file` (read and parsed now, so a bad file is
    /// a config error) and `mysql_get_server_public_key`. Both set: the
    /// pinned key wins, as in MySQL's client, and a warning says so. The
    /// opt-in alone is a warning: whoever answers at a backend address can
    /// learn the password.
    fn server_key(&mut self, key: &str, file: Option<PathBuf>, from_server: bool, password: &Secret) -> MysqlServerKey {
        let file_key = format!("{key}.mysql_server_public_key_file");
        let Some(path) = file else {
            if from_server {
                self.warn(
                    &format!("{key}.mysql_get_server_public_key"),
                    "= true: whoever answers at a backend address can learn the password; \
                     pin the key with mysql_server_public_key_file",
                );
                return MysqlServerKey::FromServer;
            }
            return MysqlServerKey::Refuse;
        };
        let pinned = match read_key_file(&path) {
            Ok(k) => k,
            Err(e) => {
                self.err(&file_key, e);
                return MysqlServerKey::Refuse;
            }
        };
        if password.expose().len() > pinned.max_password() {
            self.err(
                &file_key,
                format!(
                    "a {}-bit key encrypts passwords of at most {} bytes; the password is longer",
                    pinned.bits(),
                    pinned.max_password()
                ),
            );
        }
        if from_server {
            self.warn(
                &format!("{key}.mysql_get_server_public_key"),
                "ignored: the key in mysql_server_public_key_file is used",
            );
        }
        MysqlServerKey::Pinned(Arc::new(PinnedKey { path, key: pinned }))
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

/// Reads and checks `mysql_server_public_key_file` (a regular file, at most
/// [`MAX_KEY_FILE`] bytes, never a FIFO or a device).
pub fn read_key_file(path: &Path) -> Result<RsaKey, String> {
    let bytes = crate::io::file::read_bounded(path, MAX_KEY_FILE)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    RsaKey::from_pem(&bytes).map_err(|e| format!("{}: {e}", path.display()))
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

    /// An RSA public key of `bits` bits and exponent `e`, in PEM, without
    /// its private half (a modulus of all one bits: odd, the size wanted).
    fn crafted_pem(bits: u32, e: u64) -> String {
        use rsa::pkcs8::EncodePublicKey;
        let n = rsa::BoxedUint::from_be_slice(&vec![0xff; bits as usize / 8], bits).unwrap();
        let key = rsa::PublicKey::new_unchecked(n, rsa::BoxedUint::from(e));
        key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
    }

    const FIXTURE: &str = include_str!("../../tests/fixtures/mysql_rsa_public.pem");

    #[test]
    fn rsa_keys_are_checked() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let key = RsaKey::from_pem(FIXTURE.as_bytes()).unwrap();
        assert_eq!((key.bits(), key.max_password()), (2048, 213));
        assert_eq!(format!("{key:?}"), "RsaKey(2048 bits)");
        // PKCS#1, and the key as MySQL sends it (newline, NUL).
        let pkcs1 = key.key().to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        assert_eq!(RsaKey::from_pem(pkcs1.as_bytes()).unwrap(), key);
        assert_eq!(RsaKey::from_pem(format!("{FIXTURE}\n\0").as_bytes()).unwrap(), key);
        assert_eq!(
            RsaKey::from_pem(crafted_pem(4096, 65537).as_bytes()).unwrap().bits(),
            4096
        );
        assert_eq!(
            RsaKey::from_pem(crafted_pem(1024, 65537).as_bytes())
                .unwrap()
                .max_password(),
            85
        );
        let refused = [
            (crafted_pem(4104, 65537), KeyError::TooLarge(4104)),
            (crafted_pem(8192, 65537), KeyError::TooLarge(8192)),
            (crafted_pem(8192, (1 << 33) - 1), KeyError::TooLarge(8192)),
            (crafted_pem(2048, 3), KeyError::Exponent(3)),
            (crafted_pem(2048, (1 << 33) - 1), KeyError::Exponent((1 << 33) - 1)),
            (crafted_pem(512, 65537), KeyError::Unreadable),
            (crafted_pem(16384, 65537), KeyError::Unreadable),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----".into(),
                KeyError::Unreadable,
            ),
            (FIXTURE.replace("PUBLIC KEY", "CERTIFICATE"), KeyError::Unreadable),
            (String::new(), KeyError::Unreadable),
        ];
        for (pem, want) in refused {
            assert_eq!(RsaKey::from_pem(pem.as_bytes()), Err(want), "{pem}");
        }
        assert_eq!(RsaKey::from_pem(b"\xff\xfe"), Err(KeyError::Unreadable));
        let mut broken = FIXTURE.as_bytes().to_vec();
        broken[40] ^= 0x01;
        assert_eq!(RsaKey::from_pem(&broken), Err(KeyError::Unreadable));
        assert_eq!(
            KeyError::TooLarge(8192).to_string(),
            "8192-bit RSA key refused: at most 4096 bits"
        );
        assert_eq!(
            KeyError::Exponent(3).to_string(),
            "RSA key with public exponent 3 refused: only 65537"
        );
    }

    fn key_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("easyproxy-key-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_pinned_key_is_read_at_load_and_never_dumped() {
        let dir = key_dir("ok");
        let path = dir.join("public_key.pem");
        std::fs::write(&path, FIXTURE).unwrap();
        let c = parse(&format!(
            "mysql_user = \"u\"\nmysql_password = \"hunter2\"\nmysql_server_public_key_file = {:?}\n",
            path.display()
        ))
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let hc = c.services[0].health_check.as_ref().unwrap();
        let MysqlServerKey::Pinned(p) = &hc.mysql_server_key else {
            panic!("{:?}", hc.mysql_server_key)
        };
        assert_eq!((p.path.as_path(), p.key.bits()), (path.as_path(), 2048));
        let summary = c.to_string();
        assert!(
            summary.contains(&format!("server_public_key: pinned ({}, 2048 bits)", path.display())),
            "{summary}"
        );
        let debug = format!("{c:?}");
        assert!(debug.contains("RsaKey(2048 bits)"), "{debug}");
        assert!(debug.len() < 4000, "the key is not dumped: {} bytes", debug.len());
        // Reading it twice gives an equal config (a reload sees no change).
        let again = parse(&format!(
            "mysql_user = \"u\"\nmysql_password = \"hunter2\"\nmysql_server_public_key_file = {:?}\n",
            path.display()
        ))
        .unwrap();
        assert_eq!(again.services[0].health_check, c.services[0].health_check);
        // Both keys: the pinned one wins, a warning says so.
        let both = parse(&format!(
            "mysql_user = \"u\"\nmysql_server_public_key_file = {:?}\nmysql_get_server_public_key = true\n",
            path.display()
        ))
        .unwrap();
        let hc = both.services[0].health_check.as_ref().unwrap();
        assert!(matches!(hc.mysql_server_key, MysqlServerKey::Pinned(_)));
        assert!(
            both.warnings.iter().any(|w| w
                .ends_with("mysql_get_server_public_key: ignored: the key in mysql_server_public_key_file is used")),
            "{:?}",
            both.warnings
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_server_key_opt_in_warns_and_neither_refuses() {
        let c = parse("mysql_user = \"u\"\nmysql_get_server_public_key = true\n").unwrap();
        let hc = c.services[0].health_check.as_ref().unwrap();
        assert_eq!(hc.mysql_server_key, MysqlServerKey::FromServer);
        assert_eq!(
            c.warnings,
            ["service[0] (a).health_check.mysql_get_server_public_key: = true: whoever answers at a backend address \
              can learn the password; pin the key with mysql_server_public_key_file"]
        );
        assert!(
            c.to_string().contains("server_public_key: the server's (not pinned)"),
            "{c}"
        );
        for keys in [
            "mysql_user = \"u\"\n",
            "mysql_user = \"u\"\nmysql_get_server_public_key = false\n",
            "mysql_user = \"u\"\nmysql_server_public_key_file = \"\"\n",
        ] {
            let c = parse(keys).unwrap();
            let hc = c.services[0].health_check.as_ref().unwrap();
            assert_eq!(hc.mysql_server_key, MysqlServerKey::Refuse, "{keys}");
            assert!(
                c.warnings.is_empty() && !c.to_string().contains("server_public_key"),
                "{c}"
            );
        }
    }

    #[test]
    fn bad_key_files_are_config_errors() {
        use std::os::unix::fs::PermissionsExt;
        let dir = key_dir("bad");
        let file = |name: &str, bytes: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let err = |path: &Path, extra: &str, want: &str| {
            let e = parse(&format!(
                "mysql_user = \"u\"\nmysql_password = \"hunter2\"\nmysql_server_public_key_file = {:?}\n{extra}",
                path.display()
            ))
            .unwrap_err()
            .join("\n");
            assert!(
                e.contains("health_check.mysql_server_public_key_file: ") && e.contains(want),
                "{}: {e}",
                path.display()
            );
            assert!(!e.contains("hunter2"), "{e}");
        };
        err(&dir.join("missing"), "", "cannot read");
        err(&dir, "", "is a directory, not a regular file");
        err(&file("big", &vec![b'A'; 20_000]), "", "larger than 16384 bytes");
        err(&file("garbage", b"hello"), "", "not a readable RSA public key");
        err(
            &file("huge", crafted_pem(8192, 65537).as_bytes()),
            "",
            "8192-bit RSA key refused: at most 4096 bits",
        );
        err(
            &file("e3", crafted_pem(2048, (1 << 33) - 1).as_bytes()),
            "",
            "RSA key with public exponent 8589934591 refused: only 65537",
        );
        let small = file("small", crafted_pem(1024, 65537).as_bytes());
        let long = format!("mysql_password_file = {:?}\n", file("pw", &[b'p'; 100]).display());
        std::fs::set_permissions(dir.join("pw"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // mysql_password and mysql_password_file together is its own error;
        // the long password comes from the file here.
        let e = parse(&format!(
            "mysql_user = \"u\"\n{long}mysql_server_public_key_file = {:?}\n",
            small.display()
        ))
        .unwrap_err()
        .join("\n");
        assert!(
            e.contains("a 1024-bit key encrypts passwords of at most 85 bytes"),
            "{e}"
        );
        // A FIFO is refused without blocking.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        err(&fifo, "", "is a FIFO, not a regular file");
        // Both key settings need mysql_user.
        let e = parse(&format!(
            "mysql_server_public_key_file = {:?}\nmysql_get_server_public_key = true\n",
            small.display()
        ))
        .unwrap_err()
        .join("\n");
        assert!(e.contains("mysql_server_public_key_file: needs mysql_user"), "{e}");
        assert!(e.contains("mysql_get_server_public_key: needs mysql_user"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
