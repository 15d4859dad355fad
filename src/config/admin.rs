//! Configuration, step 2 for `[admin]`: the admin API's listeners and its bearer token, read from `token_file` (never printed).

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::raw::RawAdmin;
use super::resolve::listens_overlap;
use super::validate::Validator;
use super::{ServiceConfig, StatsConfig};

/// Shortest token accepted.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted (it travels in a request header).
const MAX_TOKEN_LEN: usize = 1024;

/// The admin API: a TCP listener (every request carries the token) and/or
/// a unix socket (access is the file's permissions).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: Option<SocketAddr>,
    /// Where the token was read from (for messages; the token is not).
    pub token_file: Option<PathBuf>,
    pub token: Option<AdminToken>,
    pub socket: Option<PathBuf>,
}

/// The bearer token. It never prints: `Debug` shows its length only, and
/// there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Box<[u8]>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken(<{} bytes, redacted>)", self.0.len())
    }
}

impl AdminToken {
    /// A token from its text (tests and the command-line client).
    pub fn new(text: &str) -> AdminToken {
        AdminToken(text.as_bytes().into())
    }

    /// Whether `given` is the token, in time that depends only on the
    /// token's length: every byte is compared, whatever differs first.
    pub fn matches(&self, given: &[u8]) -> bool {
        let mut diff = u8::from(given.len() != self.0.len());
        for (i, &t) in self.0.iter().enumerate() {
            let g = given.get(i).copied().unwrap_or(!t);
            diff |= std::hint::black_box(g ^ t);
        }
        std::hint::black_box(diff) == 0
    }

    /// The token's bytes, for the command-line client's header.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Validator {
    /// `[admin]`: at least one listener; a TCP one needs a readable,
    /// well-formed token.
    pub(super) fn admin(&mut self, a: RawAdmin) -> Option<AdminConfig> {
        let listen = a.listen.as_deref().and_then(|l| self.listen("admin.listen", l));
        if a.listen.is_none() && a.socket.is_none() {
            self.err(
                "admin",
                "set listen (TCP, with token_file) and/or socket (a unix socket path)",
            );
        }
        if a.listen.is_some() && a.token_file.is_none() {
            self.err(
                "admin.listen",
                "a TCP admin listener needs token_file (the bearer token every request must carry)",
            );
        }
        if a.token_file.is_some() && a.listen.is_none() {
            self.warn(
                "admin.token_file",
                "not used without admin.listen (the unix socket's access is its file permissions)",
            );
        }
        if let Some(l) = listen.filter(|l| !l.ip().to_canonical().is_loopback()) {
            self.warn(
                "admin.listen",
                format!(
                    "{l} is not loopback: the bearer token travels in plain HTTP to anyone on the path \
                     (keep it on 127.0.0.1 or ::1, use the unix socket, or tunnel it through TLS/SSH)"
                ),
            );
        }
        if a.socket.as_ref().is_some_and(|s| s.as_os_str().is_empty()) {
            self.err("admin.socket", "must not be empty");
        }
        let token = match &a.token_file {
            Some(path) => Some(self.check("admin.token_file", read_token(path))?),
            None => None,
        };
        if let Some(path) = a.token_file.as_deref().filter(|p| others_may_read(p)) {
            self.warn(
                "admin.token_file",
                format!("{} is readable by other users; chmod 600 it", path.display()),
            );
        }
        Some(AdminConfig {
            listen,
            token_file: a.token_file,
            token,
            socket: a.socket,
        })
    }

    /// The admin listener must not share its address with `[stats]` or a
    /// service.
    pub(super) fn admin_clashes(&mut self, a: &AdminConfig, stats: Option<&StatsConfig>, services: &[ServiceConfig]) {
        let Some(listen) = a.listen else { return };
        if let Some(st) = stats.filter(|st| listens_overlap(st.listen, listen)) {
            self.err(
                "admin.listen",
                format!("{listen} is already used by [stats] ({})", st.listen),
            );
        }
        if let Some(s) = services.iter().find(|s| listens_overlap(s.listen, listen)) {
            self.err(
                "admin.listen",
                format!("{listen} is already used by service {:?} ({})", s.name, s.listen),
            );
        }
    }
}

/// Reads the token: one line (a final newline allowed), visible ASCII,
/// [`MIN_TOKEN_LEN`] to [`MAX_TOKEN_LEN`] characters. Errors never quote it.
pub fn read_token(path: &Path) -> Result<AdminToken, String> {
    // One line of at most MAX_TOKEN_LEN, a line end allowed; more is an
    // error below (too long) rather than a read past it.
    let bytes = match crate::io::file::read_bounded(path, MAX_TOKEN_LEN as u64 + 2) {
        Ok(b) => b,
        Err(crate::io::file::ReadError::TooLarge(_)) => vec![b'x'; MAX_TOKEN_LEN + 1],
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let text = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.contains(&b'\n') || text.contains(&b'\r') {
        return Err(format!("{} must hold the token on one line", path.display()));
    }
    if !text.iter().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "the token in {} may hold only visible ASCII characters (no spaces)",
            path.display()
        ));
    }
    if text.len() < MIN_TOKEN_LEN || text.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "the token in {} is {} characters long; it must have {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN}",
            path.display(),
            text.len()
        ));
    }
    Ok(AdminToken(text.into()))
}

/// Whether group or others may read the file.
fn others_may_read(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o044 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_and_never_print() {
        let t = AdminToken::new("0123456789abcdef");
        assert!(t.matches(b"0123456789abcdef"));
        assert!(!t.matches(b"0123456789abcdeF"));
        assert!(!t.matches(b"0123456789abcdef0"));
        assert!(!t.matches(b"0123456789abcde"));
        assert!(!t.matches(b""));
        assert!(!format!("{t:?}").contains("0123"));
    }

    fn dir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("easyproxy-admin-cfg-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn parse(admin: &str) -> Result<crate::config::Config, Vec<String>> {
        crate::config::Config::parse(&format!(
            "[admin]\n{admin}\n[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:9000\"\n\
             [[service.backend]]\naddress = \"127.0.0.1:1\"\n"
        ))
    }

    fn token_file(d: &Path, text: &str, mode: u32) -> PathBuf {
        let p = d.join("token");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn tcp_needs_a_token_file_and_a_good_token() {
        let e = parse("listen = \"127.0.0.1:7260\"").unwrap_err().join("\n");
        assert!(e.contains("admin.listen: a TCP admin listener needs token_file"), "{e}");
        let e = parse("").unwrap_err().join("\n");
        assert!(e.contains("admin: set listen"), "{e}");
        let d = dir();
        let short = token_file(&d, "tooshort-secret\n", 0o600);
        let e = parse(&format!("listen = \"127.0.0.1:7260\"\ntoken_file = {:?}", short))
            .unwrap_err()
            .join("\n");
        assert!(
            e.contains("15 characters long") && !e.contains("tooshort-secret"),
            "{e}"
        );
        let two = token_file(&d, "0123456789abcdef\nmore\n", 0o600);
        let e = parse(&format!("listen = \"127.0.0.1:7260\"\ntoken_file = {two:?}")).unwrap_err();
        assert!(e.join("").contains("one line"), "{e:?}");
        let good = token_file(&d, "0123456789abcdef\n", 0o600);
        let e = parse(&format!("listen = \"127.0.0.1:9000\"\ntoken_file = {good:?}")).unwrap_err();
        assert!(e.join("").contains("already used by service"), "{e:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_readable_token_file_is_a_warning_and_the_summary_never_shows_the_token() {
        let d = dir();
        let secret = "s3cret-s3cret-s3cret";
        let path = token_file(&d, &format!("{secret}\r\n"), 0o644);
        let sock = d.join("admin.sock");
        let c = parse(&format!(
            "listen = \"127.0.0.1:7260\"\ntoken_file = {path:?}\nsocket = {sock:?}"
        ))
        .unwrap();
        assert!(
            c.warnings.iter().any(|w| w.contains("readable by other users")),
            "{:?}",
            c.warnings
        );
        let a = c.admin.as_ref().unwrap();
        assert!(a.token.as_ref().unwrap().matches(secret.as_bytes()));
        let shown = format!("{c}\n{c:?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("admin: listen 127.0.0.1:7260 (token from"), "{shown}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = parse(&format!("listen = \"127.0.0.1:7260\"\ntoken_file = {path:?}")).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        for open in ["0.0.0.0:7260", "10.1.2.3:7260", "[::]:7260"] {
            let c = parse(&format!("listen = \"{open}\"\ntoken_file = {path:?}")).unwrap();
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.starts_with("admin.listen: ") && w.contains("is not loopback")),
                "{open}: {:?}",
                c.warnings
            );
        }
        let c = parse(&format!("listen = \"[::1]:7260\"\ntoken_file = {path:?}")).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
