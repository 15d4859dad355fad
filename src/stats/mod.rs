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

/// The admin API's `GET /v1/status` answers: the `/stats` JSON, rendered
/// at most once per window (`stats.cache_ms`, 1 s without `[stats]`) and
/// again at once after a change (health, admin, reload), as `/stats` is.
/// A status flood then costs the loop one render per window.
pub struct StatusCache {
    cache: cache::Cache,
    renders: u64,
}

impl StatusCache {
    pub fn new(max_age: std::time::Duration) -> StatusCache {
        StatusCache {
            cache: cache::Cache::new(max_age),
            renders: 0,
        }
    }

    /// A reload's window.
    pub fn set_max_age(&mut self, max_age: std::time::Duration) {
        self.cache.set_max_age(max_age);
    }

    /// Renders so far (for tests and the curious).
    pub fn renders(&self) -> u64 {
        self.renders
    }

    /// The status answer: the shared one while fresh, else rendered now.
    pub fn answer(&mut self, src: &Source<'_>, now: std::time::Instant) -> Answer {
        let changes = src.state.changes;
        if let Some(a) = self.cache.get(cache::View::Json, changes, now) {
            return a;
        }
        self.renders += 1;
        let answer = response(200, "application/json", "", &json(src, now));
        self.cache.put(cache::View::Json, changes, now, answer.clone());
        answer
    }
}

/// The `/stats` JSON body, rendered from `src` at `now`.
pub fn json(src: &Source<'_>, now: std::time::Instant) -> Vec<u8> {
    snapshot::json(&snapshot::snapshot(src, now))
}
