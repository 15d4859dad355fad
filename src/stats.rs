//! Side flow: the stats HTTP endpoint. (Filled in by the monitoring issue.)

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::Interest;

use crate::event_loop::Proxy;
use crate::listener;
use crate::timer::Timers;
use crate::token::Target;

/// The stats listener and its connections.
pub struct StatsServer {
    listener: TcpListener,
    pub accept_ready: bool,
}

impl StatsServer {
    pub fn bind(addr: SocketAddr) -> io::Result<StatsServer> {
        Ok(StatsServer {
            listener: listener::bind(addr)?,
            accept_ready: false,
        })
    }

    pub fn register(&mut self, registry: &mio::Registry) -> io::Result<()> {
        registry.register(&mut self.listener, Target::StatsListener.token(), Interest::READABLE)
    }

    /// Stops listening and drops every stats connection.
    pub fn close(&mut self, registry: &mio::Registry) {
        let _ = registry.deregister(&mut self.listener);
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn accept(&mut self, _registry: &mio::Registry, _timers: &mut Timers, _now: Instant) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn on_event(
        &mut self,
        _key: usize,
        _event: &mio::event::Event,
        _proxy: &Proxy,
        _timers: &mut Timers,
        _now: Instant,
    ) {
    }

    pub fn on_timer(&mut self, _key: usize, _id: u64, _now: Instant, _timers: &mut Timers) {}
}
