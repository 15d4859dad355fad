//! Step 5 of the flow: the end of a pair. Both sockets close (with a reset
//! when a side was reset), storage goes back to the pools, the counters
//! count the connection out, and one access-log line says how it went.

use log::info;

use super::session::{End, Phase};
use super::{Ctx, Traffic};
use crate::io::socket;

impl Traffic {
    /// Closes both sockets of a pair, updates counters and writes the access
    /// log line.
    pub fn close(&mut self, key: usize, end: End, cx: &mut Ctx) {
        let Some(mut pair) = self.pairs.try_remove(key) else {
            return;
        };
        if end.is_reset() {
            // Pass the reset on to the side that is still there.
            socket::set_reset_on_close(&pair.client.stream);
            if let Some(s) = &pair.server {
                socket::set_reset_on_close(&s.stream);
            }
        }
        pair.release_buffers(&mut self.pools);
        if log::log_enabled!(log::Level::Info) {
            let svc = cx.state.services.get(pair.service);
            let backend = svc
                .and_then(|s| s.balancer.backends.get(pair.backend?))
                .map_or("-", |b| b.cfg.address.as_str());
            info!(
                "close client={} service={} backend={} duration_ms={} from_client={} to_client={} end={}",
                pair.client_addr,
                svc.map_or("-", |s| s.cfg.name.as_str()),
                backend,
                cx.now.saturating_duration_since(pair.started).as_millis(),
                pair.bytes_from_client,
                pair.bytes_to_client,
                end
            );
        }
        cx.state.close(pair.service, pair.backend, pair.client_addr.ip());
    }

    /// Closes every pair of service `svc` through backend `b`, connecting
    /// or relaying (the admin API's `close`); how many there were.
    pub fn close_backend(&mut self, svc: usize, b: usize, end: End, cx: &mut Ctx) -> usize {
        let keys: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.service == svc && p.backend == Some(b))
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            self.close(key, end, cx);
        }
        keys.len()
    }

    /// Backend `b` of `svc` went down (`why`: health check, client connect,
    /// admin maint): with `close_on_down` its open connections are closed,
    /// both sides, so clients (of a demoted primary, say) reconnect to a
    /// backend that is up; clients still connecting to it are sent to
    /// another backend.
    pub fn backend_down(&mut self, svc: usize, b: usize, why: &str, cx: &mut Ctx) {
        let Some(s) = cx.state.services.get(svc).filter(|s| s.cfg.close_on_down) else {
            return;
        };
        let name = s.cfg.name.clone();
        let address = s
            .balancer
            .backends
            .get(b)
            .map_or("-".into(), |be| be.cfg.address.clone());
        // Clients still connecting to it try another backend instead.
        let connecting: Vec<usize> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.service == svc && p.backend == Some(b) && p.phase == Phase::Connecting)
            .map(|(k, _)| k)
            .collect();
        for key in connecting {
            self.redirect(key, cx);
        }
        let closed = self.close_backend(svc, b, End::BackendDown, cx);
        if closed > 0 {
            log::warn!("service={name} backend={address} is down ({why}): closed {closed} connections (close_on_down)");
        }
    }

    /// Closes every pair (the end of a stop).
    pub fn close_all(&mut self, end: End, cx: &mut Ctx) {
        let keys: Vec<usize> = self.pairs.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, end, cx);
        }
    }
}
