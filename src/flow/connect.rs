//! Step 3 of the flow: a backend for the client. Picks one with the
//! service's balancer, starts a non-blocking connect, sees it complete, and
//! on failure (refused at once, refused later, timed out) takes the one path
//! that counts it, tells passive health, and retries elsewhere or gives up.

use log::{debug, warn};
use mio::Interest;

use super::session::{End, Phase, Side};
use super::{Ctx, Traffic};
use crate::balance::health::CheckResult;
use crate::io::socket;
use crate::token::Target;

/// How one connect attempt went.
enum Attempt {
    /// Connecting, or already closed (no backend left, local error).
    Settled,
    /// Failed at once; counted by [`Traffic::connect_failed`].
    Failed(CheckResult, String),
}

impl Traffic {
    /// Picks a backend (not one already tried) and starts a non-blocking
    /// connect; closes the client when no backend is left.
    pub(super) fn connect(&mut self, key: usize, cx: &mut Ctx) {
        loop {
            match self.try_connect(key, cx) {
                Attempt::Settled => return,
                Attempt::Failed(result, detail) => {
                    if !self.connect_failed(key, result, &detail, cx) {
                        return;
                    }
                }
            }
        }
    }

    fn try_connect(&mut self, key: usize, cx: &mut Ctx) -> Attempt {
        let Some(pair) = self.pairs.get_mut(key) else {
            return Attempt::Settled;
        };
        let svc_key = pair.service;
        let Some(svc) = cx.state.services.get_mut(svc_key) else {
            return Attempt::Settled;
        };
        let Some(b) = svc.balancer.pick(pair.client_addr.ip(), &pair.tried) else {
            let end = if pair.tried.is_empty() {
                cx.state.reject(svc_key);
                End::NoBackend
            } else {
                End::ConnectFailed(pair.last_connect_error)
            };
            self.close(key, end, cx);
            return Attempt::Settled;
        };
        let (addr, timeout) = (svc.balancer.backends[b].cfg.addr, svc.cfg.connect_timeout);
        // From here on the pair holds the backend: every way out releases it.
        cx.state.backend_attempt(svc_key, b);
        pair.backend = Some(b);
        let mut stream = match socket::connect(addr) {
            Ok(s) => s,
            Err(e) if socket::is_resource_exhaustion(&e) => {
                let client = pair.client_addr;
                if self.should_warn_fd(cx.now) {
                    let name = cx.state.services.get(svc_key).map_or("-", |s| s.cfg.name.as_str());
                    warn!("client={client} service={name}: cannot open a backend socket: {e}");
                }
                cx.state.counters.local_errors += 1;
                self.pause_accepting(cx.timers, cx.now);
                self.close(key, End::LocalError, cx);
                return Attempt::Settled;
            }
            // Refused at once (e.g. unreachable network): try another.
            Err(e) => return Attempt::Failed(CheckResult::from_io(&e), e.to_string()),
        };
        let token = Target::Backend(key).token();
        if let Err(e) = cx
            .registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            warn!("client={} backend={addr}: cannot register: {e}", pair.client_addr);
            self.close(key, End::LocalError, cx);
            return Attempt::Settled;
        }
        pair.server = Some(Side::new(stream));
        pair.phase = Phase::Connecting;
        pair.connect_started = Some(cx.now);
        pair.connect_deadline = Some(cx.now + timeout);
        self.arm(key, cx.timers);
        Attempt::Settled
    }

    /// The one path for a failed connect: the socket goes, the backend is
    /// released (and dropped if a reload removed it), the failure counts as
    /// a failed check unless it was this host's, and the pair is either due
    /// for another backend (`true`) or closed (`false`).
    fn connect_failed(&mut self, key: usize, result: CheckResult, detail: &str, cx: &mut Ctx) -> bool {
        let Some(pair) = self.pairs.get_mut(key) else {
            return false;
        };
        pair.server = None; // closes the socket
        pair.connect_deadline = None;
        let Some(b) = pair.backend.take() else { return false };
        pair.tried.push(b);
        pair.last_connect_error = result;
        let (svc_key, client, tried) = (pair.service, pair.client_addr, pair.tried.len());
        if let Some(svc) = cx.state.services.get(svc_key) {
            let address = svc.balancer.backends.get(b).map_or("-", |be| be.cfg.address.as_str());
            if result == CheckResult::LocalError {
                warn!(
                    "client={client} service={} backend={address}: connect failed on this host ({detail}); not counted against the backend",
                    svc.cfg.name
                );
            } else {
                warn!(
                    "client={client} service={} backend={address}: connect failed ({result}: {detail})",
                    svc.cfg.name
                );
            }
        }
        let may_retry = cx
            .state
            .services
            .get(svc_key)
            .is_some_and(|s| tried <= s.cfg.retries as usize);
        let went_down = cx.state.connect_failed(svc_key, b, result, cx.now);
        cx.state.backend_released(svc_key, b);
        if went_down {
            self.backend_down(svc_key, b, "client connect", cx);
        }
        if !may_retry {
            self.close(key, End::ConnectFailed(result), cx);
        }
        may_retry
    }

    /// A connect in progress to a backend that went down: abandoned without
    /// counting against the backend, and the client tries another one.
    pub(super) fn redirect(&mut self, key: usize, cx: &mut Ctx) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        pair.server = None; // closes the socket
        pair.connect_deadline = None;
        let Some(b) = pair.backend.take() else { return };
        pair.tried.push(b);
        let svc = pair.service;
        cx.state.backend_released(svc, b);
        self.connect(key, cx);
    }

    /// The connect deadline passed.
    pub(super) fn connect_timed_out(&mut self, key: usize, cx: &mut Ctx) {
        if self.connect_failed(key, CheckResult::TimedOut, "no answer in time", cx) {
            self.connect(key, cx);
        }
    }

    /// A readiness event on a pair's backend socket: relay, or see whether
    /// the connect completed.
    pub fn on_backend_event(&mut self, key: usize, event: &mio::event::Event, cx: &mut Ctx) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let Some(server) = pair.server.as_mut() else { return };
        server.on_event(event);
        if pair.phase == Phase::Relaying {
            self.drive(key, cx);
            return;
        }
        match socket::connect_finished(&server.stream, event.is_writable() && !event.is_error()) {
            Ok(true) => {
                pair.phase = Phase::Relaying;
                server.writable = true;
                pair.last_active = cx.now;
                if let Some(b) = pair.backend {
                    cx.state.backend_connected(pair.service, b);
                    if log::log_enabled!(log::Level::Debug) {
                        let started = pair.connect_started.unwrap_or(cx.now);
                        let latency = cx.now.saturating_duration_since(started);
                        let svc = &cx.state.services[pair.service];
                        let address = svc.balancer.backends.get(b).map_or("-", |be| be.cfg.address.as_str());
                        debug!(
                            "client={} service={} backend={address}: connected in {:.3} ms",
                            pair.client_addr,
                            svc.cfg.name,
                            latency.as_secs_f64() * 1000.0
                        );
                    }
                }
                self.drive(key, cx);
            }
            Ok(false) => {}
            Err(e) => {
                if self.connect_failed(key, CheckResult::from_io(&e), &e.to_string(), cx) {
                    self.connect(key, cx);
                }
            }
        }
    }
}
