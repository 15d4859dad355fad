//! Where log lines go: stderr or `log_file`, through one buffer that the
//! event loop flushes once per turn. The file can be reopened (SIGHUP), so
//! log rotation works by moving the file and sending SIGHUP.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

const BUFFER: usize = 64 * 1024;

type Target = BufWriter<Box<dyn Write + Send>>;

static SINK: Mutex<Option<Target>> = Mutex::new(None);

fn open(path: Option<&Path>) -> io::Result<Target> {
    let out: Box<dyn Write + Send> = match path {
        Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
        None => Box::new(io::stderr()),
    };
    Ok(BufWriter::with_capacity(BUFFER, out))
}

/// The writer handed to the logger; every write goes to the current target.
pub struct Sink;

impl Sink {
    /// Opens the first target.
    pub fn new(path: Option<&Path>) -> io::Result<Sink> {
        let target = open(path)?;
        if let Ok(mut s) = SINK.lock() {
            *s = Some(target);
        }
        Ok(Sink)
    }
}

/// Flushes the current target and switches to a freshly opened one (the
/// same path after rotation, or a new `log_file`). On error the old target
/// stays.
pub fn reopen(path: Option<&Path>) -> io::Result<()> {
    let target = open(path)?;
    if let Ok(mut s) = SINK.lock() {
        if let Some(old) = s.as_mut() {
            let _ = old.flush();
        }
        *s = Some(target);
    }
    Ok(())
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match SINK.lock() {
            Ok(mut s) => match s.as_mut() {
                Some(t) => t.write(buf),
                None => Ok(buf.len()),
            },
            Err(_) => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match SINK.lock() {
            Ok(mut s) => s.as_mut().map_or(Ok(()), |t| t.flush()),
            Err(_) => Ok(()),
        }
    }
}
