//! The lowest layer: sockets, the bytes in flight and the pools they come
//! from. Nothing here knows about services, backends or the event loop.

pub mod buffer;
pub mod file;
pub mod pipe;
pub mod pools;
pub mod pump;
pub mod socket;
