//! Step 1 of the flow: clients in. Accepts from the listeners that
//! reported readiness, while the global and per-service limits leave room;
//! what cannot be accepted now waits in the kernel's backlog. Running out of
//! descriptors pauses accepting instead of spinning.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{error, warn};
use mio::net::TcpStream;
use mio::Interest;

use super::session::{End, Pair, Preamble};
use super::{proxy_protocol, Ctx, Traffic};
use crate::config::SendProxy;
use crate::io::socket;
use crate::state::State;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// How many clients one listener accepts per loop turn before others get a go.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after running out of file descriptors.
pub const FD_BACKOFF: Duration = Duration::from_millis(100);

impl Traffic {
    fn has_global_room(&self, state: &State) -> bool {
        state.counters.active < self.max_connections
    }

    /// Accepting is paused after running out of descriptors.
    pub fn accept_paused(&self, now: Instant) -> bool {
        self.accept_paused_until.is_some_and(|t| now < t)
    }

    /// The back-off timer fired: accepting may go on.
    pub fn resume_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
        }
    }

    /// A listener has clients waiting that there is room for now (the loop
    /// then polls without sleeping).
    pub fn accept_pending(&self, state: &State, now: Instant) -> bool {
        !self.accept_paused(now)
            && self.has_global_room(state)
            && state
                .services
                .iter()
                .any(|(_, s)| s.accept_ready && s.listener.is_some() && s.has_room())
    }

    /// Accepts from every listener that reported readiness, while there is
    /// room.
    pub fn accept(&mut self, cx: &mut Ctx) {
        if self.accept_paused(cx.now) {
            return;
        }
        self.accept_paused_until = None;
        // By index, so the per-turn path allocates nothing.
        for key in 0..cx.state.services.capacity() {
            if !cx
                .state
                .services
                .get(key)
                .is_some_and(|s| s.accept_ready && s.listener.is_some())
            {
                continue;
            }
            if !self.accept_from(key, cx) {
                return;
            }
        }
    }

    /// Accepts up to a batch from one service's listener; `false` when
    /// accepting must stop for this turn altogether.
    fn accept_from(&mut self, key: usize, cx: &mut Ctx) -> bool {
        for _ in 0..ACCEPT_BATCH {
            if !self.has_global_room(cx.state) {
                return false;
            }
            let Some(svc) = cx.state.services.get_mut(key) else {
                return true;
            };
            if !svc.has_room() {
                return true;
            }
            let Some(l) = svc.listener.as_ref() else { return true };
            match l.accept() {
                Ok((stream, addr)) => self.open_pair(key, stream, addr, cx),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    svc.accept_ready = false;
                    return true;
                }
                Err(e) if socket::is_transient_accept_error(&e) => {}
                Err(e) => {
                    let listen = svc.cfg.listen;
                    if !socket::is_resource_exhaustion(&e) {
                        error!("accept on {listen}: {e}; retrying in {} ms", FD_BACKOFF.as_millis());
                    } else if self.should_warn_fd(cx.now) {
                        warn!(
                            "accept on {listen}: {e}; pausing accepts for {} ms (logged at most once a second)",
                            FD_BACKOFF.as_millis()
                        );
                    }
                    self.pause_accepting(cx.timers, cx.now);
                    return false;
                }
            }
        }
        true
    }

    /// Rate-limits the "out of descriptors" warnings.
    pub(super) fn should_warn_fd(&mut self, now: Instant) -> bool {
        if self
            .fd_warned_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.fd_warned_at = Some(now);
        true
    }

    /// Out of descriptors: stop accepting for [`FD_BACKOFF`] and give back
    /// the descriptors idle pipes hold.
    pub fn pause_accepting(&mut self, timers: &mut Timers, now: Instant) {
        if let Some(p) = self.pools.pipes.as_mut() {
            p.shrink();
        }
        if self.accept_paused_until.is_none() {
            let until = now + FD_BACKOFF;
            self.accept_paused_until = Some(until);
            timers.add(until, TimerKind::AcceptRetry);
        }
    }

    fn open_pair(&mut self, svc_key: usize, stream: TcpStream, addr: SocketAddr, cx: &mut Ctx) {
        // On Linux TCP_NODELAY is inherited from the listener.
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let Some(svc) = cx.state.services.get(svc_key) else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let mut pair = Pair::new(id, svc_key, stream, addr, cx.now);
        pair.idle_timeout = svc.cfg.idle_timeout;
        if svc.cfg.send_proxy != SendProxy::None {
            let local = pair.client.stream.local_addr().unwrap_or(svc.cfg.listen);
            pair.preamble = Some(Preamble {
                bytes: proxy_protocol::header(svc.cfg.send_proxy, addr, local),
                written: 0,
            });
        }
        let entry = self.pairs.vacant_entry();
        let key = entry.key();
        if let Err(e) = cx.registry.register(
            &mut pair.client.stream,
            Target::Client(key).token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("client={addr} service={}: cannot register: {e}", svc.cfg.name);
            return;
        }
        let limit = svc.cfg.max_connections_per_ip;
        let over = limit > 0 && svc.clients.get(&addr.ip()).is_some_and(|&n| n >= limit);
        entry.insert(pair);
        cx.state.open(svc_key, addr.ip());
        if over {
            // Accepted and closed at once: the client learns it now instead
            // of waiting in the backlog behind its own connections.
            cx.state.reject(svc_key);
            self.close(key, End::IpLimit, cx);
            return;
        }
        self.connect(key, cx);
    }
}
