//! Side flow: SIGHUP, SIGTERM and SIGINT delivered into the event loop. The
//! handler (signal-hook's) only records the signal and writes a byte to a
//! socket pair whose read end is a token of the poll; all work happens in the
//! loop, and signals that arrive together are all seen.

use std::io;
use std::os::unix::net::UnixStream as StdUnixStream;

use mio::net::UnixStream;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

/// A signal the loop acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Reload,
    Stop,
}

/// The signal self-pipe, registered with the poll.
pub struct Signals {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
}

impl Signals {
    pub fn new() -> io::Result<Signals> {
        let (read, write) = StdUnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let delivery =
            SignalDelivery::with_pipe(UnixStream::from_std(read), write, SignalOnly, [SIGHUP, SIGTERM, SIGINT])?;
        Ok(Signals { delivery })
    }

    /// The read end, to register with the poll.
    pub fn source(&mut self) -> &mut UnixStream {
        self.delivery.get_read_mut()
    }

    /// Drains the pipe and returns the signals that arrived (each kind once).
    pub fn pending(&mut self) -> Vec<Signal> {
        self.delivery
            .pending()
            .filter_map(|s| match s {
                SIGHUP => Some(Signal::Reload),
                SIGTERM | SIGINT => Some(Signal::Stop),
                _ => None,
            })
            .collect()
    }
}
