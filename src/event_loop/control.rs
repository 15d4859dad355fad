//! The loop's control side: stop signals (graceful, then at once) and reloads, read off the loop and applied when their result is back.

use std::sync::Arc;
use std::time::Instant;

use log::{info, warn};

use super::Proxy;
use crate::control::loader::Loaded;
use crate::control::reload::{self, Running};
use crate::control::signals::Signal;
use crate::timer::TimerKind;

impl Proxy {
    pub(super) fn on_signals(&mut self, now: Instant) {
        let mut stops = 0;
        for sig in self.signals.pending() {
            match sig {
                Signal::Stop => stops += 1,
                Signal::Reload if self.shutdown_deadline.is_none() => {
                    self.reload("SIGHUP", now);
                }
                Signal::Reload => info!("SIGHUP ignored: shutting down"),
            }
        }
        for _ in 0..stops.min(2) {
            self.begin_stop(now);
        }
    }

    /// First stop signal: close listeners and let open connections finish
    /// until the deadline. Second: stop at once.
    fn begin_stop(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some() {
            warn!(
                "second stop signal: closing {} connections now",
                self.traffic.pairs.len()
            );
            self.stop_now = true;
            return;
        }
        let timeout = self.config.global.shutdown_timeout;
        let deadline = now + timeout;
        self.shutdown_deadline = Some(deadline);
        for (_, svc) in self.state.services.iter_mut() {
            if let Some(mut l) = svc.listener.take() {
                let _ = self.poll.registry().deregister(&mut l);
            }
            svc.accept_ready = false;
        }
        self.prober.stop_all();
        info!(
            "stopping: listeners closed, {} connections open, waiting up to {} ms",
            self.traffic.pairs.len(),
            timeout.as_millis()
        );
        self.timers.add(deadline, TimerKind::Shutdown);
    }

    /// SIGHUP (or the admin API, `why`): the file is read (and its
    /// hostnames resolved) off the loop; traffic goes on meanwhile and
    /// [`Self::on_config_loaded`] applies it. `false` when there is no file.
    pub(super) fn reload(&mut self, why: &str, now: Instant) -> bool {
        let Some(path) = self.config_path.clone() else {
            warn!("{why}: no configuration file to reload");
            return false;
        };
        let started = self.loader.start(path.clone(), Arc::clone(&self.config), now);
        self.arm_reload_deadline();
        if started {
            info!("{why}: reloading {}", path.display());
        } else {
            info!(
                "{why}: reloading {} again once the read in progress is done",
                path.display()
            );
        }
        true
    }

    /// A read configuration is back from the loader: apply it, or count and
    /// log why not.
    pub(super) fn on_config_loaded(&mut self, now: Instant) {
        while let Some(loaded) = self.loader.finished(now) {
            self.arm_reload_deadline();
            self.apply_loaded(loaded, now);
        }
    }

    /// The loader started a read: its deadline becomes a timer.
    pub(super) fn arm_reload_deadline(&mut self) {
        if let Some((gen, at)) = self.loader.take_deadline() {
            self.timers.add(at, TimerKind::ReloadRead(gen));
        }
    }

    /// Applies a read configuration, or counts and logs why not; admin
    /// requests waiting for it are answered.
    pub(super) fn apply_loaded(&mut self, loaded: Loaded, now: Instant) {
        let outcome = if self.shutdown_deadline.is_some() {
            info!("reload dropped: shutting down");
            Err("shutting down".to_string())
        } else {
            let mut running = Running {
                config: &mut self.config,
                state: &mut self.state,
                traffic: &mut self.traffic,
                prober: &mut self.prober,
                stats: &mut self.stats,
                admin: &mut self.admin,
                registry: self.poll.registry(),
                timers: &mut self.timers,
            };
            reload::finish(&mut running, loaded, now)
        };
        self.reload_finished(&outcome, now);
    }
}
