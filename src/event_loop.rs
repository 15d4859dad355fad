//! The one event loop: a mio poll that owns every socket (listeners, pairs,
//! health probes, the stats and admin listeners and their clients, the
//! signal pipe) and every timer. One turn: compute the timeout, poll, dispatch events, drive
//! pairs that still have work, fire expired timers, accept new clients.
//!
//! New clients are accepted after the event batch, so a slab slot freed in a
//! batch is never reused within it (a stale event cannot reach a new pair).
//! Signals, stop and reload are in `control`; the stats and admin side is
//! glued in by `side`; admin changes that wait for the state file are in
//! `durable`.

mod control;
mod durable;
mod side;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Events, Interest, Poll};

use crate::admin::persist::{self, Store};
use crate::admin::AdminServer;
use crate::config::Config;
use crate::control::loader::Loader;
use crate::control::signals::Signals;
use crate::flow::session::End;
use crate::flow::{Ctx, Traffic};
use crate::health;
use crate::health::probe::Prober;
use crate::io::socket;
use crate::state::{Service, State};
use crate::stats::StatsServer;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// The flow's view of the loop for one call, built from disjoint borrows of
/// the proxy's fields.
macro_rules! ctx {
    ($p:expr, $now:expr) => {
        Ctx {
            state: &mut $p.state,
            registry: $p.poll.registry(),
            timers: &mut $p.timers,
            now: $now,
        }
    };
}

/// Timer entries allowed beyond twice the last swept size before stale ones
/// are swept again.
const TIMERS_SLACK: usize = 4096;

/// The proxy: configuration, sockets, connection pairs and timers.
pub struct Proxy {
    poll: Poll,
    pub config: Arc<Config>,
    config_path: Option<PathBuf>,
    pub state: State,
    pub traffic: Traffic,
    timers: Timers,
    signals: Signals,
    loader: Loader,
    prober: Prober,
    stats: Option<StatsServer>,
    admin: AdminServer,
    /// `GET /v1/status` answers, shared as `/stats` answers are.
    status: crate::stats::StatusCache,
    /// `global.state_file` and its writer.
    store: Store,
    /// Admin changes waiting for the state file, in order.
    parked: durable::Parked,
    /// Reloads finished (applied or not): parked admin reload requests wait
    /// for a count.
    reloads_finished: u64,
    /// Timer heap size that triggers the next sweep of stale entries.
    timers_sweep_at: usize,
    shutdown_deadline: Option<Instant>,
    stop_now: bool,
}

impl Proxy {
    /// Reads the state file, then binds every listener and sets up the
    /// loop. Nothing is left half-started on error.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Proxy, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the poll: {e}"))?;
        // The state file first, on its writer thread and with a deadline: a
        // hung mount delays the start by seconds, not for ever, and nothing
        // listens before it is read.
        let waker = mio::Waker::new(poll.registry(), Target::Woken.token())
            .map_err(|e| format!("cannot set up the poll's waker: {e}"))?;
        let waker = Arc::new(waker);
        let mut store = Store::new(config.global.state_file.as_deref(), Some(Arc::clone(&waker)));
        let saved = store.load(persist::START_WAIT);
        let now = Instant::now();
        let mut state = State::new(now);
        for cfg in &config.services {
            let mut l = socket::bind(cfg.listen, cfg.backlog)
                .map_err(|e| format!("cannot listen on {} for service {:?}: {e}", cfg.listen, cfg.name))?;
            socket::warn_if_capped(&cfg.name, cfg.backlog);
            let key = state.services.vacant_key();
            poll.registry()
                .register(&mut l, Target::Listener(key).token(), Interest::READABLE)
                .map_err(|e| format!("cannot register listener: {e}"))?;
            state.services.insert(Service::new(cfg.clone(), l, now));
        }
        let mut stats = match &config.stats {
            Some(s) => {
                Some(StatsServer::bind(s).map_err(|e| format!("cannot listen on {} for [stats]: {e}", s.listen))?)
            }
            None => None,
        };
        if let Some(s) = stats.as_mut() {
            s.register(poll.registry())
                .map_err(|e| format!("cannot register the stats listener: {e}"))?;
        }
        let mut signals = Signals::new().map_err(|e| format!("cannot set up signal handling: {e}"))?;
        poll.registry()
            .register(signals.source(), Target::Signals.token(), Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        let loader = Loader::new(waker);
        let mut admin = AdminServer::idle(now);
        let rebind = admin.prepare(config.admin.as_ref())?;
        admin.reconfigure(rebind, config.admin.as_ref(), poll.registry());
        saved.restore(&mut state);
        let mut timers = Timers::default();
        let mut prober = Prober::default();
        for (key, svc) in state.services.iter() {
            prober.schedule_service(key, svc, &mut timers, now);
        }
        let status = crate::stats::StatusCache::new(status_window(&config));
        Ok(Proxy {
            poll,
            status,
            traffic: Traffic::new(&config.global),
            config: Arc::new(config),
            config_path,
            state,
            timers,
            signals,
            loader,
            prober,
            stats,
            admin,
            store,
            parked: durable::Parked::default(),
            reloads_finished: 0,
            timers_sweep_at: TIMERS_SLACK,
            shutdown_deadline: None,
            stop_now: false,
        })
    }

    /// The address each service actually listens on (port 0 resolved).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state.listen_addrs()
    }

    /// Runs until a graceful stop completes or a second stop signal arrives;
    /// the last admin change is written to the state file before it returns.
    pub fn run(&mut self) -> io::Result<()> {
        let r = self.run_loop();
        self.store.finish(&self.state);
        r
    }

    fn run_loop(&mut self) -> io::Result<()> {
        for (name, addr) in self.listen_addrs() {
            info!("service {name} listening on {addr}");
        }
        if let Some(addr) = self.stats_addr() {
            info!("stats listening on http://{addr}/");
        }
        log::logger().flush();
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                self.dispatch(event, now);
            }
            self.traffic.drive_again(&mut ctx!(self, now));
            self.fire_timers(now);
            self.expire_changes(now);
            self.compact_timers();
            self.traffic.accept(&mut ctx!(self, now));
            self.accept_stats(now);
            self.accept_admin(now);
            // Log lines of this turn go out in one write.
            log::logger().flush();
            if self.stop_now {
                self.traffic.close_all(End::Shutdown, &mut ctx!(self, now));
                info!("stopped");
                return Ok(());
            }
            if self.shutdown_deadline.is_some() && self.traffic.pairs.is_empty() {
                info!("all connections finished; stopped");
                return Ok(());
            }
        }
    }

    /// Zero when work is waiting (a pair at its budget, clients to accept),
    /// else until the next timer or state file deadline.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let side_work = self.stats.as_ref().is_some_and(|s| s.wants_accept()) || self.admin.wants_accept();
        let accept_work =
            !self.traffic.accept_paused(now) && (side_work || self.traffic.accept_pending(&self.state, now));
        if self.traffic.has_again() || accept_work {
            Some(Duration::ZERO)
        } else {
            let next = match (self.timers.next_deadline(), self.changes_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            next.map(|d| d.saturating_duration_since(now))
        }
    }

    fn dispatch(&mut self, event: &mio::event::Event, now: Instant) {
        match Target::from_token(event.token()) {
            Some(Target::Signals) => self.on_signals(now),
            Some(Target::Woken) => {
                self.on_config_loaded(now);
                self.on_state_written(now);
            }
            Some(Target::Listener(key)) => {
                if let Some(s) = self.state.services.get_mut(key) {
                    s.accept_ready = true;
                }
            }
            Some(Target::Client(key)) => self.traffic.on_client_event(key, event, &mut ctx!(self, now)),
            Some(Target::Backend(key)) => self.traffic.on_backend_event(key, event, &mut ctx!(self, now)),
            Some(Target::Probe(key)) => {
                let changes = self
                    .prober
                    .on_event(key, &mut self.state.services, &mut self.timers, now);
                self.probe_changes(changes, now);
            }
            Some(Target::StatsListener) => {
                if let Some(s) = self.stats.as_mut() {
                    s.accept_ready = true;
                }
            }
            Some(Target::StatsClient(key)) => self.on_stats_event(key, now),
            Some(Target::AdminListener) => self.admin.set_pending(false),
            Some(Target::AdminSocket) => self.admin.set_pending(true),
            Some(Target::AdminClient(key)) => self.on_admin_event(key, now),
            None => {}
        }
    }

    /// Up/down changes probes caused: logged, shown, and the connections
    /// of backends that went down closed where `close_on_down` asks.
    fn probe_changes(&mut self, changes: Vec<health::probe::Change>, now: Instant) {
        if changes.is_empty() {
            return;
        }
        for (svc, b) in health::probe::record_changes(&mut self.state, changes) {
            self.traffic.backend_down(svc, b, "health check", &mut ctx!(self, now));
        }
    }

    // ---- timers -------------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        while let Some((when, kind)) = self.timers.pop_expired(now) {
            match kind {
                TimerKind::Pair(key, id) => self.traffic.on_timer(key, id, when, &mut ctx!(self, now)),
                TimerKind::Probe(key, gen) => {
                    let changes = self.prober.on_timer(
                        key,
                        gen,
                        &mut self.state.services,
                        &mut self.timers,
                        self.poll.registry(),
                        now,
                    );
                    self.probe_changes(changes, now);
                }
                TimerKind::StatsConn(key, id) => {
                    if let Some(s) = self.stats.as_mut() {
                        s.on_timer(key, id, now, &mut self.timers);
                    }
                }
                TimerKind::AdminConn(key, id) => self.admin.on_timer(key, id, now, &mut self.timers),
                TimerKind::ReloadRead(gen) => {
                    if let Some(failed) = self.loader.expire(gen, now) {
                        self.arm_reload_deadline();
                        self.apply_loaded(failed, now);
                    }
                }
                TimerKind::AcceptRetry => {
                    self.traffic.resume_accepting(now);
                    if let Some(s) = self.stats.as_mut() {
                        s.accept_ready = true;
                    }
                    self.admin.set_pending(false);
                    self.admin.set_pending(true);
                }
                TimerKind::Shutdown => {
                    if !self.traffic.pairs.is_empty() {
                        warn!(
                            "shutdown deadline reached: closing {} connections",
                            self.traffic.pairs.len()
                        );
                    }
                    self.stop_now = true;
                }
            }
        }
    }

    /// Keeps the timer heap proportional to what is open: once it has grown
    /// to twice its size after the last sweep (plus slack), drops the
    /// entries of pairs that are gone or re-armed and the stale entries of
    /// probes (`Prober::timer_is_live`). The threshold doubling
    /// keeps the sweep amortised O(1) even when live entries dominate.
    fn compact_timers(&mut self) {
        if self.timers.len() <= self.timers_sweep_at {
            return;
        }
        let (traffic, prober) = (&self.traffic, &self.prober);
        self.timers.retain(|when, kind| match *kind {
            TimerKind::Pair(key, id) => traffic.timer_is_live(key, id, when),
            TimerKind::Probe(key, tag) => prober.timer_is_live(key, tag),
            _ => true,
        });
        self.timers_sweep_at = 2 * self.timers.len() + TIMERS_SLACK;
    }
}

/// How long a `GET /v1/status` answer is shared: `stats.cache_ms`, 1 s
/// without `[stats]`.
pub(crate) fn status_window(config: &Config) -> Duration {
    config.stats.as_ref().map_or(Duration::from_secs(1), |s| s.cache)
}
