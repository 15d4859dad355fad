//! Admin API, listening: the TCP listener and the unix socket, created mode 0600 over a stale socket file only, never through a symlink, and removed again when it goes.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use mio::net::{TcpListener, UnixListener};

use crate::io::socket;

/// A unix listening socket and the file it made; dropping it closes the
/// socket and removes the file, if the file is still this socket's.
pub struct UnixSocket {
    pub listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file made by bind.
    id: (u64, u64),
}

impl UnixSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file at `path` is this socket's: the same (device,
    /// inode), whatever the spelling of the path (a final symlink is not
    /// followed, so it never is). The socket holds its file's inode, so the
    /// number cannot be reused while it listens.
    pub fn is_at(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id)
    }
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The TCP admin listener on `addr`.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, String> {
    socket::bind(addr, socket::BACKLOG).map_err(|e| format!("cannot listen on {addr} for [admin]: {e}"))
}

/// Creates the unix socket at `path`, mode 0600. A socket file nobody
/// listens on is replaced; a live one, a symlink or any other file is an
/// error.
pub fn bind_unix(path: &Path) -> Result<UnixSocket, String> {
    let err = |what: String| format!("[admin] socket {}: {what}", path.display());
    clear_stale(path).map_err(err)?;
    // Created with no access for group and others from the start; the
    // process-wide umask is put back at once.
    // SAFETY: umask(2) only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| err(format!("cannot listen: {e}")))?;
    let meta = std::fs::symlink_metadata(path).map_err(|e| err(e.to_string()))?;
    let sock = UnixSocket {
        listener,
        path: path.to_path_buf(),
        id: (meta.dev(), meta.ino()),
    };
    if !meta.file_type().is_socket() {
        return Err(err("was replaced while being created".into()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| err(e.to_string()))?;
    }
    Ok(sock)
}

/// Removes a socket file left by a process that is gone; refuses anything
/// else at `path`.
fn clear_stale(path: &Path) -> Result<(), String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if meta.file_type().is_symlink() {
        return Err("is a symbolic link; refusing to follow or replace it".into());
    }
    if !meta.file_type().is_socket() {
        return Err("exists and is not a socket; refusing to replace it".into());
    }
    // A non-blocking connect answers at once: refused means nobody listens.
    match mio::net::UnixStream::connect(path) {
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove the stale socket: {e}"))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("exists and cannot be checked ({e}); refusing to replace it")),
        Ok(_) => Err("another process listens on it (is easyproxy already running?)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("easyproxy-admin-listen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn socket_is_0600_replaces_a_stale_one_and_refuses_the_rest() {
        let d = dir("modes");
        let path = d.join("admin.sock");
        let s = bind_unix(&path).unwrap();
        let mode = std::fs::symlink_metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = bind_unix(&path).err().unwrap();
        assert!(e.contains("another process listens"), "{e}");
        // A stale socket: the file stays when the listener is leaked.
        std::mem::forget(s);
        let stale = std::os::unix::net::UnixListener::bind(d.join("stale.sock")).unwrap();
        drop(stale);
        assert!(bind_unix(&d.join("stale.sock")).is_ok());
        std::fs::write(d.join("file"), "x").unwrap();
        let e = bind_unix(&d.join("file")).err().unwrap();
        assert!(e.contains("not a socket"), "{e}");
        std::os::unix::fs::symlink(d.join("elsewhere"), d.join("link")).unwrap();
        let e = bind_unix(&d.join("link")).err().unwrap();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(!d.join("elsewhere").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_socket_is_known_by_its_file_not_its_path() {
        let d = dir("alias");
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("alias")).unwrap();
        let path = d.join("real").join("a.sock");
        let s = bind_unix(&path).unwrap();
        assert!(s.is_at(&path));
        assert!(s.is_at(&d.join("alias").join("a.sock")));
        assert!(s.is_at(&d.join("real").join("..").join("real").join("a.sock")));
        std::os::unix::fs::symlink(&path, d.join("link.sock")).unwrap();
        assert!(!s.is_at(&d.join("link.sock")), "a symlink to it is not it");
        std::fs::remove_file(&path).unwrap();
        assert!(!s.is_at(&path), "deleted");
        let again = bind_unix(&path).unwrap();
        assert!(!s.is_at(&path) && again.is_at(&path), "made afresh");
        drop(s);
        assert!(path.exists(), "the old socket leaves the new file alone");
        drop(again);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dropping_the_socket_removes_its_file_only() {
        let d = dir("drop");
        let path = d.join("a.sock");
        let s = bind_unix(&path).unwrap();
        drop(s);
        assert!(!path.exists());
        let s = bind_unix(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "someone else's").unwrap();
        drop(s);
        assert!(path.exists(), "a file that is not ours stays");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
