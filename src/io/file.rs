//! Files easyproxy reads or appends to (configuration, secrets, state, log):
//! only regular files are opened, and opening one never blocks on a FIFO.
//!
//! `open(2)` of a FIFO without a writer blocks for ever, and reading a
//! device may never end; so every open here passes `O_NONBLOCK` (a FIFO
//! open then returns at once), checks with `fstat` that the descriptor is a
//! regular file, and only then clears `O_NONBLOCK` again. Reads are
//! bounded. A hung network mount still blocks `open` in the kernel whatever
//! the flags: callers on the event loop do their file work on another
//! thread with a deadline.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read only; the file must exist.
    Read,
    /// Append, created (mode 0666 less the umask, as `open` does) when missing.
    AppendCreate,
}

/// Opens `path` if it is a regular file (symbolic links followed), without
/// blocking on a FIFO; anything else is an error of kind `InvalidInput`
/// that names what the path is (`is a FIFO`, `is a directory`, ...).
pub fn open_regular(path: &Path, mode: Mode) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    match mode {
        Mode::Read => opts.read(true),
        Mode::AppendCreate => opts.append(true).create(true).mode(0o666),
    };
    opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC);
    let file = match opts.open(path) {
        Ok(f) => f,
        // A FIFO opened for writing with no reader.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            let kind = std::fs::metadata(path)?.file_type();
            return Err(not_regular(kind));
        }
        Err(e) => return Err(e),
    };
    check_regular(&file)?;
    clear_nonblocking(&file)?;
    Ok(file)
}

/// An error unless `file` is a regular file.
pub fn check_regular(file: &File) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(not_regular(kind))
}

fn not_regular(kind: std::fs::FileType) -> io::Error {
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("is {what}, not a regular file"))
}

fn clear_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns, with
    // integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Why [`read_bounded`] gave nothing.
#[derive(Debug)]
pub enum ReadError {
    /// The file does not exist.
    Missing,
    /// It cannot be opened or read, or is not a regular file.
    Io(io::Error),
    /// It is larger than the limit given.
    TooLarge(u64),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Missing => write!(f, "no such file"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLarge(max) if *max >= 1 << 20 => write!(f, "larger than {} MiB", max >> 20),
            ReadError::TooLarge(max) => write!(f, "larger than {max} bytes"),
        }
    }
}

/// The whole of regular file `path`, at most `max` bytes (more is
/// [`ReadError::TooLarge`], read no further than `max + 1`).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path, Mode::Read).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::Missing,
        _ => ReadError::Io(e),
    })?;
    read_open_bounded(file, max)
}

/// Like [`read_bounded`], from a file already opened with [`open_regular`].
pub fn read_open_bounded(file: File, max: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge(max));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("easyproxy-file-{}-{:?}", std::process::id(), Instant::now()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let d = dir();
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        let e = read_bounded(&fifo, 100).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        let e = open_regular(&fifo, Mode::AppendCreate).unwrap_err();
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn devices_and_directories_are_refused_regular_files_read() {
        let e = read_bounded(Path::new("/dev/zero"), 100).unwrap_err();
        assert!(e.to_string().contains("is a device"), "{e}");
        let d = dir();
        let e = read_bounded(&d, 100).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let f = d.join("f");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read_bounded(&f, 5).unwrap(), b"hello");
        assert!(matches!(read_bounded(&f, 4), Err(ReadError::TooLarge(4))));
        assert!(matches!(read_bounded(&d.join("none"), 4), Err(ReadError::Missing)));
        // Blocking again after the open: a read returns data, not EAGAIN.
        let file = open_regular(&f, Mode::Read).unwrap();
        // SAFETY: fcntl on an open descriptor.
        let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
