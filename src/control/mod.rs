//! The control side: signals, reading and applying a reloaded file, process
//! limits.

pub mod limits;
pub mod loader;
pub mod reload;
pub mod signals;
