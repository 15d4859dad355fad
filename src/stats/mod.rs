//! Side flow: the stats HTTP endpoint, served from the same event loop.

mod budget;
mod cache;
mod conn;
mod html;
mod http;
mod metrics;
mod server;
mod snapshot;
pub(crate) mod wire;

pub(crate) use budget::Budget;
pub use cache::Answer;
pub(crate) use http::response;
pub use http::MAX_HEAD;
pub use server::{StatsServer, MAX_CONNS};
pub use snapshot::{snapshot, BackendSnap, ClientSnap, Connections, ServiceSnap, Snapshot};

/// What the stats views read from the running proxy.
pub struct Source<'a> {
    /// Services, counters and the start time.
    pub state: &'a crate::state::State,
    /// Relay buffers handed out and not yet returned to the pool.
    pub buffers_in_use: usize,
    /// Entries in the timer heap, stale ones included.
    pub timers_pending: usize,
}

/// The `/stats` JSON body, rendered from `src` at `now` (the admin API's
/// `GET /v1/status` too).
pub fn json(src: &Source<'_>, now: std::time::Instant) -> Vec<u8> {
    snapshot::json(&snapshot::snapshot(src, now))
}
