//! The control side: signals, reading and applying a reloaded file, process
//! limits and the log sink.

pub mod limits;
pub mod loader;
pub mod logsink;
pub mod reload;
pub mod signals;
