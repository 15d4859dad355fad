//! easyproxy: a single-threaded TCP load balancer on one mio event loop.

pub mod balance;
pub mod config;
pub mod control;
pub mod event_loop;
pub mod flow;
pub mod health;
pub mod io;
pub mod rng;
pub mod state;
pub mod stats;
pub mod timer;
pub mod token;

pub use config::Config;
pub use event_loop::Proxy;
