//! The data flow of one client: accepted on a listener, given a backend by
//! the balancer, connected, relayed both ways, closed and logged.

pub mod proxy_protocol;
pub mod relay;
pub mod session;
