//! Side flow: SIGHUP. A new, fully validated configuration is applied to the
//! running proxy as a difference: services matched by name, backends by
//! address. Every new listen address is bound before anything changes, so a
//! failure leaves the running configuration exactly as it was. Connections
//! already open are never touched.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::Interest;

use crate::balance::Backend;
use crate::config::{Config, ServiceConfig};
use crate::flow::Traffic;
use crate::health::probe::Prober;
use crate::io::socket;
use crate::state::{Service, State};
use crate::stats::StatsServer;
use crate::timer::Timers;
use crate::token::Target;

/// What a reload changed, for its log line.
#[derive(Default)]
struct Summary {
    services_added: Vec<String>,
    services_removed: Vec<String>,
    services_changed: Vec<String>,
    services_moved: Vec<String>,
    backends_added: Vec<String>,
    backends_removed: Vec<String>,
    backends_changed: Vec<String>,
    global_changed: bool,
    stats_changed: bool,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(",") };
        write!(
            f,
            "services added={} removed={} changed={}; backends added={} removed={} changed={}",
            list(&self.services_added),
            list(&self.services_removed),
            list(&self.services_changed),
            list(&self.backends_added),
            list(&self.backends_removed),
            list(&self.backends_changed),
        )?;
        if self.global_changed {
            write!(f, "; [global] changed")?;
        }
        if self.stats_changed {
            write!(f, "; [stats] changed")?;
        }
        Ok(())
    }
}

/// The parts of the running proxy a reload changes.
pub struct Running<'a> {
    pub config: &'a mut Config,
    pub state: &'a mut State,
    pub traffic: &'a mut Traffic,
    pub prober: &'a mut Prober,
    pub stats: &'a mut Option<StatsServer>,
    pub registry: &'a mio::Registry,
    pub timers: &'a mut Timers,
}

/// Applies `new` to the running proxy, or changes nothing and says why.
pub fn apply(p: Running, new: Config, now: Instant) -> Result<String, String> {
    // Phase 1: bind every address not already bound; any failure aborts
    // before anything was changed (the fresh sockets are simply dropped).
    let bound: HashMap<SocketAddr, usize> = p
        .state
        .services
        .iter()
        .filter(|(_, s)| !s.removed && s.listener.is_some())
        .map(|(k, s)| (s.cfg.listen, k))
        .collect();
    let mut fresh: HashMap<SocketAddr, TcpListener> = HashMap::new();
    for svc in &new.services {
        if !bound.contains_key(&svc.listen) {
            let l = socket::bind(svc.listen, svc.backlog)
                .map_err(|e| format!("cannot listen on {} for service {:?}: {e}", svc.listen, svc.name))?;
            fresh.insert(svc.listen, l);
        }
    }
    let old_stats = p.config.stats.as_ref().map(|s| s.listen);
    let new_stats = new.stats.as_ref().map(|s| s.listen);
    let mut fresh_stats = None;
    if new_stats != old_stats {
        if let Some(cfg) = &new.stats {
            fresh_stats =
                Some(StatsServer::bind(cfg).map_err(|e| format!("cannot listen on {} for [stats]: {e}", cfg.listen))?);
        }
    }

    // Phase 2: nothing below can fail in a way that matters; apply.
    let mut summary = Summary {
        global_changed: new.global != p.config.global,
        stats_changed: new_stats != old_stats,
        ..Summary::default()
    };
    // Listeners already bound, with the backlog they listen with.
    let mut taken: HashMap<SocketAddr, (TcpListener, u32)> = HashMap::new();
    for (_, svc) in p.state.services.iter_mut().filter(|(_, s)| !s.removed) {
        if let Some(l) = svc.listener.take() {
            taken.insert(svc.cfg.listen, (l, svc.cfg.backlog));
        }
    }
    let by_name: HashMap<String, usize> = p
        .state
        .services
        .iter()
        .filter(|(_, s)| !s.removed)
        .map(|(k, s)| (s.cfg.name.clone(), k))
        .collect();

    for cfg in &new.services {
        // A listener already registered moves to its (possibly new) token;
        // a freshly bound one is registered for the first time.
        let (mut l, registered) = match taken.remove(&cfg.listen) {
            Some((l, backlog)) => {
                if backlog != cfg.backlog {
                    if let Err(e) = socket::set_backlog(&l, cfg.backlog) {
                        log::warn!("service {}: cannot change the listen backlog: {e}", cfg.name);
                    }
                    socket::warn_if_capped(&cfg.name, cfg.backlog);
                }
                (l, true)
            }
            None => match fresh.remove(&cfg.listen) {
                Some(l) => {
                    socket::warn_if_capped(&cfg.name, cfg.backlog);
                    (l, false)
                }
                None => continue, // cannot happen: phase 1 bound every address
            },
        };
        let key = by_name
            .get(&cfg.name)
            .copied()
            .unwrap_or_else(|| p.state.services.vacant_key());
        let token = Target::Listener(key).token();
        let r = if registered {
            p.registry.reregister(&mut l, token, Interest::READABLE)
        } else {
            p.registry.register(&mut l, token, Interest::READABLE)
        };
        if let Err(e) = r {
            log::error!("service {}: cannot register its listener: {e}", cfg.name);
        }
        match by_name.get(&cfg.name) {
            Some(&key) => {
                let svc = &mut p.state.services[key];
                if service_settings_changed(&svc.cfg, cfg) {
                    summary.services_changed.push(cfg.name.clone());
                }
                if svc.cfg.listen != cfg.listen {
                    summary.services_moved.push(cfg.name.clone());
                }
                // Probes keep their rhythm unless what they check changed.
                let probes_changed = svc.cfg.health_check != cfg.health_check
                    || svc
                        .cfg
                        .backends
                        .iter()
                        .map(|b| (&b.address, b.addr))
                        .ne(cfg.backends.iter().map(|b| (&b.address, b.addr)));
                update_backends(svc, cfg, &mut summary, now);
                svc.cfg = cfg.clone();
                svc.listener = Some(l);
                svc.accept_ready = true;
                if probes_changed {
                    if let Some(svc) = p.state.services.get(key) {
                        p.prober.schedule_service(key, svc, p.timers, now);
                    }
                }
            }
            None => {
                summary.services_added.push(cfg.name.clone());
                let key = p.state.services.insert(Service::new(cfg.clone(), l, now));
                if let Some(svc) = p.state.services.get(key) {
                    p.prober.schedule_service(key, svc, p.timers, now);
                }
            }
        }
    }

    // Services not in the new file stop listening and drain.
    let gone: Vec<usize> = by_name
        .iter()
        .filter(|(name, _)| !new.services.iter().any(|c| &c.name == *name))
        .map(|(_, &k)| k)
        .collect();
    for key in gone {
        let svc = &mut p.state.services[key];
        summary.services_removed.push(svc.cfg.name.clone());
        svc.removed = true;
        svc.accept_ready = false;
        svc.listener = None;
        p.prober.remove_service(key);
        p.state.drop_if_removed(key);
    }
    for (_, (mut l, _)) in taken {
        let _ = p.registry.deregister(&mut l);
    }

    if let (Some(s), Some(cfg)) = (p.stats.as_mut(), new.stats.as_ref()) {
        s.configure(cfg);
    }
    if summary.stats_changed {
        if let Some(mut old) = p.stats.take() {
            old.close(p.registry);
        }
        if let Some(mut s) = fresh_stats {
            if let Err(e) = s.register(p.registry) {
                log::error!("cannot register the stats listener: {e}");
            }
            if let Some(addr) = s.local_addr() {
                log::info!("stats listening on http://{addr}/");
            }
            *p.stats = Some(s);
        }
    }
    for (name, addr) in p.state.listen_addrs() {
        if summary.services_added.contains(&name) || summary.services_moved.contains(&name) {
            log::info!("service {name} listening on {addr}");
        }
    }
    if new.global.max_connections > p.config.global.max_connections {
        crate::control::limits::raise_fd_limit(new.global.max_connections);
    }
    if new.global.pid_file != p.config.global.pid_file {
        move_pid_file(p.config.global.pid_file.as_deref(), new.global.pid_file.as_deref());
    }
    set_config(p, new);
    Ok(summary.to_string())
}

/// The new configuration takes over: the log is reopened (rotation is
/// "move the file, SIGHUP"), pools and limits apply to new connections.
fn set_config(p: Running, config: Config) {
    if let Err(e) = crate::control::logsink::reopen(config.global.log_file.as_deref()) {
        log::error!("cannot reopen the log: {e}; logging goes on to the old file");
    }
    p.traffic.configure(&config.global);
    log::set_max_level(config.global.log_level);
    *p.config = config;
}

/// Whether anything but the backend list differs.
fn service_settings_changed(old: &ServiceConfig, new: &ServiceConfig) -> bool {
    let mut a = old.clone();
    a.backends = new.backends.clone();
    a != *new
}

/// Matches backends by address: kept ones keep health and counters, new ones
/// start up, missing ones take no new clients and go with their last
/// connection.
fn update_backends(svc: &mut Service, cfg: &ServiceConfig, summary: &mut Summary, now: Instant) {
    let bal = &mut svc.balancer;
    bal.strategy = cfg.strategy;
    for b in &cfg.backends {
        match bal.find(&b.address) {
            Some(k) => {
                let be = &mut bal.backends[k];
                if be.removed || be.cfg != *b {
                    summary.backends_changed.push(format!("{}/{}", cfg.name, b.address));
                }
                be.removed = false;
                be.cfg = b.clone();
            }
            None => {
                summary.backends_added.push(format!("{}/{}", cfg.name, b.address));
                bal.backends.insert(Backend::new(b.clone(), now));
            }
        }
    }
    let gone: Vec<usize> = bal
        .backends
        .iter()
        .filter(|(_, be)| !be.removed && !cfg.backends.iter().any(|b| b.address == be.cfg.address))
        .map(|(k, _)| k)
        .collect();
    for k in gone {
        summary
            .backends_removed
            .push(format!("{}/{}", cfg.name, bal.backends[k].cfg.address));
        if bal.backends[k].active == 0 {
            bal.backends.remove(k);
        } else {
            bal.backends[k].removed = true;
        }
    }
    if cfg.health_check.is_none() {
        // Without checks nothing would ever bring a down backend back.
        for (_, be) in bal.backends.iter_mut() {
            be.health.set_up(true, now);
        }
    }
    bal.rebuild();
}

/// A reload that changes `pid_file` writes the new one and removes the old
/// (as nginx does); failing to write it is logged, not fatal.
fn move_pid_file(old: Option<&std::path::Path>, new: Option<&std::path::Path>) {
    if let Some(path) = new {
        if let Err(e) = crate::control::limits::write_pid_file(path) {
            log::error!("cannot write pid file {}: {e}", path.display());
            return;
        }
    }
    if let Some(path) = old {
        let _ = std::fs::remove_file(path);
    }
}
