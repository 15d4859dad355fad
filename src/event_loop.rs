//! The one event loop: a mio poll that owns every socket (listeners, pairs,
//! health probes, the stats listener and its clients, the signal pipe) and
//! every timer. One turn: compute the timeout, poll, dispatch events, drive
//! pairs that still have work, fire expired timers, accept new clients.
//!
//! New clients are accepted after the event batch, so a slab slot freed in a
//! batch is never reused within it (a stale event cannot reach a new pair).

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll};
use slab::Slab;

use crate::balance::health::{CheckResult, Transition};
use crate::config::{Config, SendProxy};
use crate::control::loader::Loader;
use crate::control::signals::{Signal, Signals};
use crate::flow::proxy_protocol;
use crate::flow::session::{End, Pair, Phase, Preamble, Side};
use crate::health::probe::Prober;
use crate::io::buffer::{BufferPool, Pools};
use crate::io::pipe::PipePool;
use crate::io::socket;
use crate::state::{Service, State};
use crate::stats::StatsServer;
use crate::timer::{TimerKind, Timers};
use crate::token::Target;

/// How many clients one listener accepts per loop turn before others get a go.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after running out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(100);
/// Idle buffers kept for reuse.
const POOL_KEEP: usize = 256;
/// Timer entries allowed beyond twice the last swept size before stale ones
/// are swept again.
const TIMERS_SLACK: usize = 4096;
/// Idle pipes kept for reuse (two descriptors each).
const PIPES_KEEP: usize = 64;

/// Pipes for splicing hold at least 64 KiB: with the kernel's 4 KiB page
/// slots a smaller pipe costs about half again as much CPU per GB (measured
/// with scripts/compare.sh: 0.42 vs 0.28 CPU-s/GB). The bound per direction
/// stays fixed; it is kernel memory, not the process's.
fn pipe_size(buffer_size: usize) -> usize {
    buffer_size.max(64 * 1024)
}

/// The proxy: configuration, sockets, connection pairs and timers.
pub struct Proxy {
    poll: Poll,
    pub config: Config,
    config_path: Option<PathBuf>,
    pub state: State,
    pub pairs: Slab<Pair>,
    pub pools: Pools,
    timers: Timers,
    signals: Signals,
    loader: Loader,
    prober: Prober,
    stats: Option<StatsServer>,
    next_id: u64,
    /// Pairs that stopped at their budget with data left: (key, id).
    again: Vec<(usize, u64)>,
    accept_paused_until: Option<Instant>,
    timers_pending: usize,
    /// Timer heap size that triggers the next sweep of stale entries.
    timers_sweep_at: usize,
    /// When running out of descriptors was last logged (at most once a second).
    fd_warned_at: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    stop_now: bool,
}

impl Proxy {
    /// Binds every listener and sets up the loop. Nothing is left half-started
    /// on error.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Proxy, String> {
        let poll = Poll::new().map_err(|e| format!("cannot create the poll: {e}"))?;
        let now = Instant::now();
        let mut state = State::new(now);
        for cfg in &config.services {
            let l = socket::bind(cfg.listen, cfg.backlog)
                .map_err(|e| format!("cannot listen on {} for service {:?}: {e}", cfg.listen, cfg.name))?;
            socket::warn_if_capped(&cfg.name, cfg.backlog);
            state.services.insert(Service::new(cfg.clone(), l, now));
        }
        let stats = match &config.stats {
            Some(s) => {
                Some(StatsServer::bind(s).map_err(|e| format!("cannot listen on {} for [stats]: {e}", s.listen))?)
            }
            None => None,
        };
        let mut signals = Signals::new().map_err(|e| format!("cannot set up signal handling: {e}"))?;
        poll.registry()
            .register(signals.source(), Target::Signals.token(), Interest::READABLE)
            .map_err(|e| format!("cannot register signals: {e}"))?;
        let loader = Loader::new(poll.registry(), Target::ConfigLoaded.token())
            .map_err(|e| format!("cannot set up the configuration reader: {e}"))?;
        let mut proxy = Proxy {
            poll,
            pools: Pools {
                buffers: BufferPool::new(config.global.buffer_size, POOL_KEEP),
                pipes: config
                    .global
                    .splice
                    .then(|| PipePool::new(pipe_size(config.global.buffer_size), POOL_KEEP)),
            },
            config,
            config_path,
            state,
            pairs: Slab::new(),
            timers: Timers::default(),
            signals,
            loader,
            prober: Prober::default(),
            stats,
            next_id: 1,
            again: Vec::new(),
            accept_paused_until: None,
            timers_pending: 0,
            timers_sweep_at: TIMERS_SLACK,
            fd_warned_at: None,
            shutdown_deadline: None,
            stop_now: false,
        };
        for (key, svc) in proxy.state.services.iter_mut() {
            if let Some(l) = svc.listener.as_mut() {
                proxy
                    .poll
                    .registry()
                    .register(l, Target::Listener(key).token(), Interest::READABLE)
                    .map_err(|e| format!("cannot register listener: {e}"))?;
            }
        }
        if let Some(s) = proxy.stats.as_mut() {
            s.register(proxy.poll.registry())
                .map_err(|e| format!("cannot register the stats listener: {e}"))?;
        }
        for (key, svc) in proxy.state.services.iter() {
            proxy.prober.schedule_service(key, svc, &mut proxy.timers, now);
        }
        Ok(proxy)
    }

    /// The address each service actually listens on (port 0 resolved).
    pub fn listen_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state
            .services
            .iter()
            .filter_map(|(_, s)| Some((s.cfg.name.clone(), s.listener.as_ref()?.local_addr().ok()?)))
            .collect()
    }

    pub fn stats_addr(&self) -> Option<SocketAddr> {
        self.stats.as_ref().and_then(|s| s.local_addr())
    }

    /// Runs until a graceful stop completes or a second stop signal arrives.
    pub fn run(&mut self) -> io::Result<()> {
        for (name, addr) in self.listen_addrs() {
            info!("service {name} listening on {addr}");
        }
        if let Some(addr) = self.stats_addr() {
            info!("stats listening on http://{addr}/");
        }
        log::logger().flush();
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            let timeout = if !self.again.is_empty() || self.accept_work_pending(now) {
                Some(Duration::ZERO)
            } else {
                self.timers.next_deadline().map(|d| d.saturating_duration_since(now))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            for event in events.iter() {
                match Target::from_token(event.token()) {
                    Some(Target::Signals) => self.on_signals(now),
                    Some(Target::ConfigLoaded) => self.on_config_loaded(now),
                    Some(Target::Listener(key)) => {
                        if let Some(s) = self.state.services.get_mut(key) {
                            s.accept_ready = true;
                        }
                    }
                    Some(Target::Client(key)) => {
                        if let Some(p) = self.pairs.get_mut(key) {
                            p.client.on_event(event);
                            self.drive(key, now);
                        }
                    }
                    Some(Target::Backend(key)) => self.on_backend_event(key, event, now),
                    Some(Target::Probe(key)) => {
                        let changes = self
                            .prober
                            .on_event(key, &mut self.state.services, &mut self.timers, now);
                        self.apply_health(changes, now);
                    }
                    Some(Target::StatsListener) => {
                        if let Some(s) = self.stats.as_mut() {
                            s.accept_ready = true;
                        }
                    }
                    Some(Target::StatsClient(key)) => self.on_stats_client(key, now),
                    None => {}
                }
            }
            let again = std::mem::take(&mut self.again);
            for (key, id) in again {
                if self.pairs.get(key).is_some_and(|p| p.id == id) {
                    self.drive(key, now);
                }
            }
            self.fire_timers(now);
            self.compact_timers();
            self.accept(now);
            self.accept_stats(now);
            // Log lines of this turn go out in one write.
            log::logger().flush();
            if self.stop_now {
                self.close_all(End::Shutdown, now);
                info!("stopped");
                return Ok(());
            }
            if self.shutdown_deadline.is_some() && self.pairs.is_empty() {
                info!("all connections finished; stopped");
                return Ok(());
            }
        }
    }

    // ---- signals, stop and reload -------------------------------------

    fn on_signals(&mut self, now: Instant) {
        let mut stops = 0;
        for sig in self.signals.pending() {
            match sig {
                Signal::Stop => stops += 1,
                Signal::Reload if self.shutdown_deadline.is_none() => self.reload(),
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
            warn!("second stop signal: closing {} connections now", self.pairs.len());
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
            self.pairs.len(),
            timeout.as_millis()
        );
        self.timers.add(deadline, TimerKind::Shutdown);
    }

    fn close_all(&mut self, end: End, now: Instant) {
        let keys: Vec<usize> = self.pairs.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, end, now);
        }
    }

    /// SIGHUP: read and validate the whole file, bind what is new, then apply
    /// the difference. Any failure leaves the running configuration as it was.
    /// SIGHUP: the file is read (and its hostnames resolved) off the loop;
    /// traffic goes on meanwhile and [`Self::on_config_loaded`] applies it.
    fn reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            warn!("SIGHUP: no configuration file to reload");
            return;
        };
        if self.loader.start(path.clone()) {
            info!("SIGHUP: reloading {}", path.display());
        } else {
            info!(
                "SIGHUP: reloading {} again once the read in progress is done",
                path.display()
            );
        }
    }

    fn on_config_loaded(&mut self, now: Instant) {
        while let Some(loaded) = self.loader.finished() {
            if self.shutdown_deadline.is_some() {
                info!("reload dropped: shutting down");
                continue;
            }
            let new = match loaded {
                Ok(c) => c,
                Err(e) => {
                    self.state.counters.reloads_failed += 1;
                    error!("reload failed, keeping the running configuration: {e}");
                    continue;
                }
            };
            match crate::control::reload::apply(self, new, now) {
                Ok(summary) => {
                    self.state.counters.reloads += 1;
                    info!("reload done: {summary}");
                }
                Err(e) => {
                    self.state.counters.reloads_failed += 1;
                    error!("reload failed, keeping the running configuration: {e}");
                }
            }
        }
    }

    // Used by the reload module.
    /// Timer entries pending (for stats; read before the stats server takes
    /// the timers out to answer).
    pub fn timers_pending(&self) -> usize {
        self.timers_pending
    }

    pub(crate) fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }
    pub(crate) fn set_config(&mut self, config: Config) {
        // Reopen the log on every reload: rotation is "move the file, SIGHUP".
        if let Err(e) = crate::control::logsink::reopen(config.global.log_file.as_deref()) {
            error!("cannot reopen the log: {e}; logging goes on to the old file");
        }
        self.pools.buffers.set_size(config.global.buffer_size);
        match (&mut self.pools.pipes, config.global.splice) {
            (Some(p), true) => p.set_size(pipe_size(config.global.buffer_size)),
            (p @ None, true) => *p = Some(PipePool::new(pipe_size(config.global.buffer_size), PIPES_KEEP)),
            (p, false) => *p = None,
        }
        log::set_max_level(config.global.log_level);
        self.config = config;
    }
    pub(crate) fn stats_mut(&mut self) -> &mut Option<StatsServer> {
        &mut self.stats
    }
    pub(crate) fn remove_probes(&mut self, key: usize) {
        self.prober.remove_service(key);
    }
    pub(crate) fn reschedule_probes(&mut self, key: usize, now: Instant) {
        if let Some(svc) = self.state.services.get(key) {
            self.prober.schedule_service(key, svc, &mut self.timers, now);
        }
    }

    // ---- accepting ------------------------------------------------------

    fn has_global_room(&self) -> bool {
        self.state.counters.active < self.config.global.max_connections
    }

    fn accept_work_pending(&self, now: Instant) -> bool {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return false;
        }
        // A stats listener stopped at its per-turn batch gets no new edge.
        if self.stats.as_ref().is_some_and(|s| s.wants_accept()) {
            return true;
        }
        if !self.has_global_room() {
            return false;
        }
        self.state
            .services
            .iter()
            .any(|(_, s)| s.accept_ready && s.listener.is_some() && s.has_room())
    }

    /// Accepts from every listener that reported readiness, while there is
    /// room; what cannot be accepted now waits in the kernel's backlog.
    fn accept(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| now < t) {
            return;
        }
        self.accept_paused_until = None;
        // By index, so the per-turn path allocates nothing.
        for key in 0..self.state.services.capacity() {
            if !self
                .state
                .services
                .get(key)
                .is_some_and(|s| s.accept_ready && s.listener.is_some())
            {
                continue;
            }
            for _ in 0..ACCEPT_BATCH {
                if !self.has_global_room() {
                    return;
                }
                let svc = &mut self.state.services[key];
                if !svc.has_room() {
                    break;
                }
                let Some(l) = svc.listener.as_ref() else { break };
                match l.accept() {
                    Ok((stream, addr)) => self.open_pair(key, stream, addr, now),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        svc.accept_ready = false;
                        break;
                    }
                    Err(e) if socket::is_transient_accept_error(&e) => {}
                    Err(e) => {
                        if socket::is_resource_exhaustion(&e) {
                            let listen = svc.cfg.listen;
                            if self.should_warn_fd(now) {
                                warn!(
                                    "accept on {listen}: {e}; pausing accepts for {} ms (logged at most once a second)",
                                    FD_BACKOFF.as_millis()
                                );
                            }
                        } else {
                            error!(
                                "accept on {}: {e}; retrying in {} ms",
                                svc.cfg.listen,
                                FD_BACKOFF.as_millis()
                            );
                        }
                        self.pause_accepting(now);
                        return;
                    }
                }
            }
        }
    }

    /// Rate-limits the "out of descriptors" warnings.
    fn should_warn_fd(&mut self, now: Instant) -> bool {
        if self
            .fd_warned_at
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.fd_warned_at = Some(now);
        true
    }

    fn pause_accepting(&mut self, now: Instant) {
        // Out of descriptors: give back the ones idle pipes hold.
        if let Some(p) = self.pools.pipes.as_mut() {
            p.shrink();
        }
        if self.accept_paused_until.is_none() {
            let until = now + FD_BACKOFF;
            self.accept_paused_until = Some(until);
            self.timers.add(until, TimerKind::AcceptRetry);
        }
    }

    fn open_pair(&mut self, svc_key: usize, stream: TcpStream, addr: SocketAddr, now: Instant) {
        // On Linux TCP_NODELAY is inherited from the listener.
        #[cfg(not(target_os = "linux"))]
        let _ = stream.set_nodelay(true);
        let svc = &mut self.state.services[svc_key];
        let id = self.next_id;
        self.next_id += 1;
        let mut pair = Pair::new(id, svc_key, stream, addr, now);
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
        if let Err(e) = self.poll.registry().register(
            &mut pair.client.stream,
            Target::Client(key).token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("client={addr} service={}: cannot register: {e}", svc.cfg.name);
            return;
        }
        entry.insert(pair);
        svc.active += 1;
        svc.total += 1;
        *svc.clients.entry(addr.ip()).or_insert(0) += 1;
        self.state.counters.active += 1;
        self.state.counters.total += 1;
        self.connect(key, now);
    }

    // ---- connecting to backends ---------------------------------------------

    /// Picks a backend (not one already tried) and starts a non-blocking
    /// connect; closes the client when no backend is left.
    fn connect(&mut self, key: usize, now: Instant) {
        loop {
            let Some(pair) = self.pairs.get_mut(key) else { return };
            let svc = &mut self.state.services[pair.service];
            let Some(b) = svc.balancer.pick(pair.client_addr.ip(), &pair.tried) else {
                let end = if pair.tried.is_empty() {
                    svc.rejected += 1;
                    self.state.counters.rejected += 1;
                    End::NoBackend
                } else {
                    End::ConnectFailed(pair.last_connect_error)
                };
                self.close(key, end, now);
                return;
            };
            let backend = &mut svc.balancer.backends[b];
            match socket::connect(backend.cfg.addr) {
                Ok(mut stream) => {
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Target::Backend(key).token(),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        warn!(
                            "client={} backend={}: cannot register: {e}",
                            pair.client_addr, backend.cfg.address
                        );
                        self.close(key, End::LocalError, now);
                        return;
                    }
                    backend.active += 1;
                    pair.backend = Some(b);
                    pair.server = Some(Side::new(stream));
                    pair.phase = Phase::Connecting;
                    pair.connect_started = Some(now);
                    pair.connect_deadline = Some(now + svc.cfg.connect_timeout);
                    self.arm(key);
                    return;
                }
                Err(e) if socket::is_resource_exhaustion(&e) => {
                    let (client, name) = (pair.client_addr, svc.cfg.name.clone());
                    if self.should_warn_fd(now) {
                        warn!("client={client} service={name}: cannot open a backend socket: {e}");
                    }
                    self.pause_accepting(now);
                    self.close(key, End::LocalError, now);
                    return;
                }
                Err(e) => {
                    // Refused at once (e.g. unreachable network): try another.
                    let result = CheckResult::from_io(&e);
                    pair.tried.push(b);
                    pair.last_connect_error = result;
                    warn!(
                        "client={} service={} backend={}: connect failed ({result}: {e})",
                        pair.client_addr, svc.cfg.name, backend.cfg.address
                    );
                    let svc_key = pair.service;
                    self.backend_failed(svc_key, b, result, now);
                    if !self.may_retry(key) {
                        self.close(key, End::ConnectFailed(result), now);
                        return;
                    }
                }
            }
        }
    }

    fn may_retry(&self, key: usize) -> bool {
        self.pairs
            .get(key)
            .is_some_and(|p| p.tried.len() <= self.state.services[p.service].cfg.retries as usize)
    }

    /// Counts a failed connect against a backend (a passive health check).
    fn backend_failed(&mut self, svc_key: usize, b: usize, result: CheckResult, now: Instant) {
        let Some(svc) = self.state.services.get_mut(svc_key) else {
            return;
        };
        let Some(backend) = svc.balancer.backends.get_mut(b) else {
            return;
        };
        backend.failures += 1;
        if let Some(hc) = &svc.cfg.health_check {
            if let Some(t) = backend.health.record(result, None, hc.rise, hc.fall, now) {
                log_transition(&svc.cfg.name, &backend.cfg.address, t, "client connect");
            }
        }
    }

    fn on_backend_event(&mut self, key: usize, event: &mio::event::Event, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let Some(server) = pair.server.as_mut() else { return };
        server.on_event(event);
        if pair.phase == Phase::Relaying {
            self.drive(key, now);
            return;
        }
        let result = socket::connect_finished(&server.stream, event.is_writable() && !event.is_error());
        match result {
            Ok(true) => {
                pair.phase = Phase::Relaying;
                server.writable = true;
                pair.last_active = now;
                let latency = pair.connect_started.map(|t| now.saturating_duration_since(t));
                let svc = &mut self.state.services[pair.service];
                if let Some(b) = pair.backend.and_then(|b| svc.balancer.backends.get_mut(b)) {
                    b.total += 1;
                    debug!(
                        "client={} service={} backend={}: connected in {:?}",
                        pair.client_addr, svc.cfg.name, b.cfg.address, latency
                    );
                }
                self.drive(key, now);
            }
            Ok(false) => {}
            Err(e) => self.connect_failed(key, CheckResult::from_io(&e), &e.to_string(), now),
        }
    }

    /// A connect failed or timed out: count it, then retry elsewhere or give up.
    fn connect_failed(&mut self, key: usize, result: CheckResult, detail: &str, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let svc_key = pair.service;
        pair.server = None; // closes the socket
        pair.connect_deadline = None;
        let Some(b) = pair.backend.take() else { return };
        pair.tried.push(b);
        pair.last_connect_error = result;
        let client = pair.client_addr;
        let svc = &mut self.state.services[svc_key];
        if let Some(backend) = svc.balancer.backends.get_mut(b) {
            backend.active = backend.active.saturating_sub(1);
            warn!(
                "client={client} service={} backend={}: connect failed ({result}: {detail})",
                svc.cfg.name, backend.cfg.address
            );
        }
        self.backend_failed(svc_key, b, result, now);
        self.drop_removed_backend(svc_key, b);
        if self.may_retry(key) {
            self.connect(key, now);
        } else {
            self.close(key, End::ConnectFailed(result), now);
        }
    }

    // ---- relaying -----------------------------------------------------------

    /// Drives a pair after an event or a yield, then settles its fate.
    fn drive(&mut self, key: usize, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        match pair.drive(&mut self.pools) {
            Ok(p) => {
                if p.from_client + p.from_backend + p.to_backend + p.to_client > 0 {
                    pair.last_active = now;
                    self.state.counters.bytes_in += p.from_backend;
                    self.state.counters.bytes_out += p.to_backend;
                    if let Some(svc) = self.state.services.get_mut(pair.service) {
                        svc.bytes_in += p.from_backend;
                        svc.bytes_out += p.to_backend;
                        if let Some(b) = pair.backend.and_then(|b| svc.balancer.backends.get_mut(b)) {
                            b.bytes_in += p.from_backend;
                            b.bytes_out += p.to_backend;
                        }
                    }
                }
                if p.finished {
                    self.close(key, End::Done, now);
                    return;
                }
                if p.again {
                    self.again.push((key, pair.id));
                }
                self.arm(key);
            }
            Err(end) => self.close(key, end, now),
        }
    }

    /// Makes sure a timer entry exists no later than the pair's deadline.
    fn arm(&mut self, key: usize) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        let Some(deadline) = pair.deadline() else { return };
        if pair.timer_at.is_none_or(|t| deadline < t) {
            pair.timer_at = Some(deadline);
            self.timers.add(deadline, TimerKind::Pair(key, pair.id));
        }
    }

    /// Closes both sockets of a pair, updates counters and writes the access
    /// log line.
    fn close(&mut self, key: usize, end: End, now: Instant) {
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
        self.state.counters.active = self.state.counters.active.saturating_sub(1);
        let svc_key = pair.service;
        let svc = &mut self.state.services[svc_key];
        svc.active = svc.active.saturating_sub(1);
        let ip = pair.client_addr.ip();
        if let Some(n) = svc.clients.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                svc.clients.remove(&ip);
            }
        }
        if let Some(b) = pair.backend.and_then(|b| svc.balancer.backends.get_mut(b)) {
            b.active = b.active.saturating_sub(1);
        }
        if log::log_enabled!(log::Level::Info) {
            let backend = pair
                .backend
                .and_then(|b| svc.balancer.backends.get(b))
                .map_or("-", |b| b.cfg.address.as_str());
            info!(
                "close client={} service={} backend={} duration_ms={} from_client={} to_client={} end={}",
                pair.client_addr,
                svc.cfg.name,
                backend,
                now.saturating_duration_since(pair.started).as_millis(),
                pair.bytes_from_client,
                pair.bytes_to_client,
                end
            );
        }
        if let Some(b) = pair.backend {
            self.drop_removed_backend(svc_key, b);
        }
        self.drop_removed_service(svc_key);
    }

    /// A backend removed by a reload goes away with its last connection.
    fn drop_removed_backend(&mut self, svc_key: usize, b: usize) {
        if let Some(svc) = self.state.services.get_mut(svc_key) {
            if svc
                .balancer
                .backends
                .get(b)
                .is_some_and(|be| be.removed && be.active == 0)
            {
                svc.balancer.backends.remove(b);
            }
        }
    }

    /// A service removed by a reload goes away with its last connection.
    pub(crate) fn drop_removed_service(&mut self, svc_key: usize) {
        if self
            .state
            .services
            .get(svc_key)
            .is_some_and(|s| s.removed && s.active == 0)
        {
            self.state.services.remove(svc_key);
        }
    }

    // ---- timers -------------------------------------------------------------

    fn fire_timers(&mut self, now: Instant) {
        while let Some((when, kind)) = self.timers.pop_expired(now) {
            match kind {
                TimerKind::Pair(key, id) => self.pair_timer(key, id, when, now),
                TimerKind::Probe(key, gen) => {
                    let changes = self.prober.on_timer(
                        key,
                        gen,
                        &mut self.state.services,
                        &mut self.timers,
                        self.poll.registry(),
                        now,
                    );
                    self.apply_health(changes, now);
                }
                TimerKind::StatsConn(key, id) => {
                    if let Some(s) = self.stats.as_mut() {
                        s.on_timer(key, id, now, &mut self.timers);
                    }
                }
                TimerKind::AcceptRetry => {
                    if self.accept_paused_until.is_some_and(|t| t <= now) {
                        self.accept_paused_until = None;
                    }
                    if let Some(s) = self.stats.as_mut() {
                        s.accept_ready = true;
                    }
                }
                TimerKind::Shutdown => {
                    if !self.pairs.is_empty() {
                        warn!("shutdown deadline reached: closing {} connections", self.pairs.len());
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
        let pairs = &self.pairs;
        self.timers.retain(|when, kind| match *kind {
            TimerKind::Pair(key, id) => pairs.get(key).is_some_and(|p| p.id == id && p.timer_at == Some(when)),
            TimerKind::Probe(key, tag) => self.prober.timer_is_live(key, tag),
            _ => true,
        });
        self.timers_sweep_at = 2 * self.timers.len() + TIMERS_SLACK;
    }

    fn pair_timer(&mut self, key: usize, id: u64, when: Instant, now: Instant) {
        let Some(pair) = self.pairs.get_mut(key) else { return };
        if pair.id != id || pair.timer_at != Some(when) {
            return; // a stale entry; a newer one is armed
        }
        pair.timer_at = None;
        match pair.deadline() {
            Some(d) if d <= now => match pair.phase {
                Phase::Connecting => self.connect_failed(key, CheckResult::TimedOut, "no answer in time", now),
                Phase::Relaying => self.close(key, End::IdleTimeout, now),
            },
            _ => self.arm(key),
        }
    }

    // ---- health -------------------------------------------------------------

    fn apply_health(&mut self, changes: Vec<(usize, usize, Transition)>, _now: Instant) {
        for (svc_key, b, t) in changes {
            if let Some(svc) = self.state.services.get(svc_key) {
                if let Some(backend) = svc.balancer.backends.get(b) {
                    log_transition(&svc.cfg.name, &backend.cfg.address, t, "health check");
                }
            }
        }
    }

    // ---- stats --------------------------------------------------------------

    fn accept_stats(&mut self, now: Instant) {
        let ready = self.stats.as_ref().is_some_and(|s| s.wants_accept());
        if !ready || self.accept_paused_until.is_some() {
            return;
        }
        if let Some(Err(e)) = self.with_stats(|stats, proxy, timers| stats.accept(proxy, timers, now)) {
            if socket::is_resource_exhaustion(&e) {
                warn!("stats accept: {e}; pausing accepts for {} ms", FD_BACKOFF.as_millis());
                self.pause_accepting(now);
            }
        }
    }

    fn on_stats_client(&mut self, key: usize, now: Instant) {
        self.with_stats(|stats, proxy, timers| stats.on_event(key, proxy, timers, now));
    }

    /// Runs `f` on the stats server with the rest of the proxy to read: the
    /// server (which answers from the whole proxy) and the timers are taken
    /// out for the call.
    fn with_stats<R>(&mut self, f: impl FnOnce(&mut StatsServer, &Proxy, &mut Timers) -> R) -> Option<R> {
        let mut stats = self.stats.take()?;
        self.timers_pending = self.timers.len();
        let mut timers = std::mem::take(&mut self.timers);
        let r = f(&mut stats, self, &mut timers);
        self.timers = timers;
        self.stats = Some(stats);
        Some(r)
    }
}

fn log_transition(service: &str, address: &str, t: Transition, source: &str) {
    warn!(
        "service={service} backend={address} is {} ({source}: {}) after {:.1}s {}",
        if t.up { "UP" } else { "DOWN" },
        t.reason,
        t.after.as_secs_f64(),
        if t.up { "down" } else { "up" }
    );
}
