//! Active health checks: probes in the event loop and the MySQL login.

pub mod mysql;
pub mod probe;
