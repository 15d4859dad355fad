//! easyproxy: a single-threaded TCP load balancer on one mio event loop.
//!
//! The data flow, in the order of the modules below: a client arrives on a
//! listener (`flow::listen`), the service's balancer picks a backend
//! (`balance`), a non-blocking connect reaches it (`flow::connect`), the
//! pair relays bytes both ways (`flow::session`, through `io`), and the
//! pair ends with an access-log line (`flow::close`). `state` counts every
//! step. Around that flow, on the same loop: active health checks
//! (`health`), the stats endpoint (`stats`), the admin API (`admin`), and
//! the control side (`control`: signals, reload, limits); `logsink` takes
//! every log line off the loop.
//! `ctl` is the admin API's command-line client. `event_loop` polls
//! and dispatches; `token` says which socket an event is about; `timer`
//! keeps the deadlines.
//!
//! Dependencies point one way, from the bottom of this list up:
//! `io`, `config`, `logsink`, `rng`, `token`, `timer` (leaves) <- `balance` <- `state`
//! <- `flow` <- `health`, `stats` <- `admin` <- `control` <- `event_loop`;
//! `ctl` stands apart (it talks to a running proxy over a socket).

// Leaves.
pub mod config;
pub mod io;
pub mod logsink;
pub mod rng;
pub mod timer;
pub mod token;

// The data flow and what it counts.
pub mod balance;

pub mod state;

pub mod flow;

// Around the flow.
pub mod health;
pub mod stats;

pub mod admin;

pub mod control;

pub mod event_loop;

// The admin API's command-line client.
pub mod ctl;

pub use config::Config;
pub use event_loop::Proxy;
