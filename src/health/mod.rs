//! Active health checks: probes in the event loop (`probe`), one check's
//! socket work (`check`) and the MySQL login (`mysql`).

pub mod check;
pub mod mysql;
pub mod probe;
pub mod roles;
