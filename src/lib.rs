//! easyproxy: a single-threaded TCP load balancer on one mio event loop.
//!
//! Data flow: `config` (the file) -> `listener` (sockets in) -> `balancer`
//! (which backend) -> `pair` + `pump` + `buffer` (bytes both ways) ->
//! access log. Around it, on the same loop: `timer`, `probe`/`health`,
//! `stats`, `signals`, `loader` (reads a reloaded file off the loop) and
//! `reload`. `event_loop` ties them together and
//! `token` says which socket an event is about.

pub mod balancer;
pub mod buffer;
pub mod config;
pub mod event_loop;
pub mod health;
pub mod limits;
pub mod listener;
pub mod loader;
pub mod logsink;
pub mod mysql;
pub mod pair;
pub mod pipe;
pub mod probe;
pub mod proxy_protocol;
pub mod pump;
pub mod reload;
pub mod signals;
pub mod stats;
pub mod timer;
pub mod token;

pub use config::Config;
pub use event_loop::Proxy;
