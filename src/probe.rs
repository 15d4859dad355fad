//! Side flow: active health-check probes, sockets of the same event loop.
//! (Filled in by the health-check issue; for now no probe is ever started.)

use std::time::Instant;

use slab::Slab;

use crate::event_loop::Service;
use crate::health::Transition;
use crate::timer::Timers;

/// All probes of all services.
#[derive(Default)]
pub struct Prober {}

impl Prober {
    pub fn schedule_service(&mut self, _svc_key: usize, _svc: &Service, _timers: &mut Timers, _now: Instant) {}

    pub fn on_event(
        &mut self,
        _key: usize,
        _event: &mio::event::Event,
        _services: &mut Slab<Service>,
        _timers: &mut Timers,
        _now: Instant,
    ) -> Vec<(usize, usize, Transition)> {
        Vec::new()
    }

    pub fn on_timer(
        &mut self,
        _key: usize,
        _gen: u64,
        _services: &mut Slab<Service>,
        _timers: &mut Timers,
        _registry: &mio::Registry,
        _now: Instant,
    ) -> Vec<(usize, usize, Transition)> {
        Vec::new()
    }

    pub fn stop_all(&mut self) {}

    pub fn remove_service(&mut self, _svc_key: usize) {}
}
