//! Reload, step 2: the plan applied to the running services. Listeners
//! move to their services' tokens, kept services take their new settings,
//! backends are matched by address through a hash map (linear in the size
//! of the file), and what is removed drains.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpListener;
use mio::Interest;

use super::plan::{BackendPlan, Plan, ServicePlan};
use super::Running;
use crate::balance::{AdminState, Backend, Balancer};
use crate::config::{Config, ServiceConfig};
use crate::io::socket;
use crate::state::Service;
use crate::token::Target;

/// Which running listener a service of the new file may take over: the
/// one on its address, so listeners can even change hands between services;
/// but a port-0 listener (whose port the kernel chose) only by the service
/// that had it, with the same `listen`.
#[derive(PartialEq, Eq, Hash)]
pub enum Slot {
    Addr(SocketAddr),
    Own(String, SocketAddr),
}

impl Slot {
    pub fn of(cfg: &ServiceConfig) -> Slot {
        if cfg.listen.port() == 0 {
            Slot::Own(cfg.name.clone(), cfg.listen)
        } else {
            Slot::Addr(cfg.listen)
        }
    }
}

/// Listeners for every service of the new file: those already running
/// (with the backlog they listen with) and those freshly bound (by index
/// into the new file's services).
pub struct Listeners {
    pub running: HashMap<Slot, (TcpListener, u32)>,
    pub fresh: HashMap<usize, TcpListener>,
}

impl Listeners {
    /// The listener for service `index` of the new file, and whether it is
    /// registered with the poll already; its backlog follows the file.
    fn take(&mut self, index: usize, cfg: &ServiceConfig) -> Option<(TcpListener, bool)> {
        if let Some((l, backlog)) = self.running.remove(&Slot::of(cfg)) {
            if backlog != cfg.backlog {
                if let Err(e) = socket::set_backlog(&l, cfg.backlog) {
                    log::warn!("service {}: cannot change the listen backlog: {e}", cfg.name);
                }
                socket::warn_if_capped(&cfg.name, cfg.backlog);
            }
            return Some((l, true));
        }
        let l = self.fresh.remove(&index)?;
        socket::warn_if_capped(&cfg.name, cfg.backlog);
        Some((l, false))
    }
}

/// Applies the services part of `plan`: kept services change in place,
/// new ones listen, removed ones stop listening and drain.
pub fn services(p: &mut Running, plan: &Plan, new: &Config, mut listeners: Listeners, now: Instant) {
    for (_, svc) in p.state.services.iter_mut().filter(|(_, s)| !s.removed) {
        if let Some(l) = svc.listener.take() {
            listeners.running.insert(Slot::of(&svc.cfg), (l, svc.cfg.backlog));
        }
    }
    let by_name: HashMap<String, usize> = p
        .state
        .services
        .iter()
        .filter(|(_, s)| !s.removed)
        .map(|(k, s)| (s.cfg.name.clone(), k))
        .collect();
    for sp in &plan.services {
        let Some(cfg) = new.services.get(sp.index()) else {
            continue;
        };
        // Phase 1 bound every address, so a listener is always there.
        let Some((mut l, registered)) = listeners.take(sp.index(), cfg) else {
            continue;
        };
        let key = match (sp, by_name.get(&cfg.name)) {
            (ServicePlan::Kept { backends, .. }, Some(&key)) => {
                register(p.registry, &mut l, key, registered, &cfg.name);
                if let Some(svc) = p.state.services.get_mut(key) {
                    kept(svc, cfg, backends, l, now);
                }
                key
            }
            _ => {
                let key = p.state.services.vacant_key();
                register(p.registry, &mut l, key, registered, &cfg.name);
                p.state.services.insert(Service::new(cfg.clone(), l, now))
            }
        };
        // Probes keep their rhythm unless what they check changed.
        if !matches!(
            sp,
            ServicePlan::Kept {
                probes_changed: false,
                ..
            }
        ) {
            if let Some(svc) = p.state.services.get(key) {
                p.prober.schedule_service(key, svc, p.timers, now);
            }
        }
    }
    for name in &plan.removed {
        if let Some(&key) = by_name.get(name) {
            remove(p, key);
        }
    }
    for (_, (mut l, _)) in listeners.running {
        let _ = p.registry.deregister(&mut l);
    }
}

/// A listener already registered moves to its (possibly new) token; a
/// freshly bound one is registered for the first time.
fn register(registry: &mio::Registry, l: &mut TcpListener, key: usize, registered: bool, name: &str) {
    let token = Target::Listener(key).token();
    let r = if registered {
        registry.reregister(l, token, Interest::READABLE)
    } else {
        registry.register(l, token, Interest::READABLE)
    };
    if let Err(e) = r {
        log::error!("service {name}: cannot register its listener: {e}");
    }
}

/// A running service takes the new file's settings and backends.
fn kept(svc: &mut Service, cfg: &ServiceConfig, changes: &BackendPlan, l: TcpListener, now: Instant) {
    let strategy_changed = svc.balancer.strategy != cfg.strategy;
    svc.balancer.strategy = cfg.strategy;
    if !changes.is_empty() {
        backends(&mut svc.balancer, cfg, changes, now);
    }
    if cfg.health_check.is_none() && svc.cfg.health_check.is_some() {
        // Checks removed: nothing would ever bring a down backend back.
        for (_, be) in svc.balancer.backends.iter_mut() {
            be.health.set_up(true, now);
        }
    }
    if strategy_changed || !changes.is_empty() {
        svc.balancer.rebuild();
    }
    svc.cfg = cfg.settings();
    svc.listener = Some(l);
    svc.accept_ready = true;
}

/// A service not in the new file stops listening and goes with its last
/// connection.
fn remove(p: &mut Running, key: usize) {
    let Some(svc) = p.state.services.get_mut(key) else {
        return;
    };
    svc.removed = true;
    svc.accept_ready = false;
    svc.listener = None;
    p.prober.remove_service(key);
    p.state.drop_if_removed(key);
}

/// Carries out the backend changes of a kept service: kept backends keep
/// health and counters (changed ones take their new settings), new ones
/// start up (one removed earlier and still draining comes back as it is),
/// removed ones take no new clients and go with their last connection.
/// Work is linear in the number of backends, and nothing is cloned for the
/// ones that did not change.
fn backends(bal: &mut Balancer, cfg: &ServiceConfig, changes: &BackendPlan, now: Instant) {
    let wanted: HashSet<&str> = changes
        .added
        .iter()
        .chain(&changes.changed)
        .map(String::as_str)
        .collect();
    let start_down = cfg.health_check.as_ref().is_some_and(|hc| hc.starts_down());
    for (rank, b) in cfg.backends.iter().enumerate() {
        if !wanted.contains(b.address.as_str()) {
            if changes.reordered {
                if let Some(k) = bal.find(&b.address) {
                    bal.set_rank(k, rank);
                }
            }
            continue;
        }
        let key = match bal.find(&b.address).filter(|&k| bal.backends.get(k).is_some()) {
            Some(k) => {
                let mut revived = false;
                if let Some(be) = bal.backends.get_mut(k) {
                    // Back from removal (no checks ran meanwhile) or now
                    // another server (the name resolves elsewhere): what
                    // checks saw of it no longer holds.
                    revived = be.removed;
                    if be.removed || be.cfg.addr != b.addr {
                        be.health.restart(start_down, now);
                    }
                    be.removed = false;
                    be.cfg = b.clone();
                }
                if revived && !changes.reordered {
                    bal.move_last(k);
                }
                k
            }
            None => {
                let mut backend = Backend::new(b.clone(), now);
                if start_down {
                    backend.health.set_up(false, now);
                }
                bal.insert(backend)
            }
        };
        if changes.reordered {
            bal.set_rank(key, rank);
        }
    }
    for address in &changes.removed {
        let Some(k) = bal.find(address) else { continue };
        match bal.backends.get_mut(k) {
            Some(be) if be.active > 0 => {
                // Gone from the file: what an operator said of it is forgotten.
                be.removed = true;
                be.admin = AdminState::Ready;
                be.weight_override = None;
            }
            Some(_) => bal.remove(k),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(backends: &[&str]) -> Config {
        let mut t = String::from("[[service]]\nname = \"w\"\nlisten = \"127.0.0.1:0\"\n[service.health_check]\nmysql_user = \"u\"\nrole = \"primary\"\n");
        for b in backends {
            t.push_str(&format!("[[service.backend]]\naddress = \"{b}\"\n"));
        }
        Config::parse(&t).unwrap()
    }

    fn step(bal: &mut Balancer, old: &Config, new: &Config) {
        let plan = Plan::new(old, new);
        let ServicePlan::Kept { backends: bp, .. } = &plan.services[0] else {
            panic!()
        };
        backends(bal, &new.services[0], bp, Instant::now());
        bal.rebuild();
    }

    #[test]
    fn a_revived_role_backend_starts_down() {
        let now = Instant::now();
        let c1 = cfg(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut bal = Balancer::new(c1.services[0].strategy, &c1.services[0].backends, now);
        // A (127.0.0.1:1) was the primary, up, and has an open connection.
        bal.backends[0].health.role = Some(crate::config::Role::Primary);
        bal.backends[0].active = 1;
        for (_, b) in bal.backends.iter_mut() {
            b.health.up = b.cfg.address.ends_with(":1");
        }
        // Reload 1 removes A: it drains.
        let c2 = cfg(&["127.0.0.1:2"]);
        step(&mut bal, &c1, &c2);
        assert!(bal.backends[0].removed);
        // Meanwhile B is promoted and comes up.
        bal.backends[1].health.up = true;
        bal.backends[1].health.role = Some(crate::config::Role::Primary);
        // Reload 2 adds A back, after B.
        let c3 = cfg(&["127.0.0.1:2", "127.0.0.1:1"]);
        step(&mut bal, &c2, &c3);
        let a = bal.find("127.0.0.1:1").unwrap();
        assert_eq!(a, 0, "revived, same key");
        let stale_up = bal.backends[a].is_up();
        let order: Vec<&str> = bal
            .order()
            .iter()
            .map(|&k| bal.backends[k].cfg.address.as_str())
            .collect();
        eprintln!("revived A up={stale_up}; order={order:?} (file: [:2, :1])");
        assert!(
            !stale_up,
            "a role backend re-added by a reload is up at once (stale), two primaries usable"
        );
    }

    #[test]
    fn a_revived_backend_takes_its_place_in_the_file() {
        let now = Instant::now();
        let c1 = cfg(&["127.0.0.1:1", "127.0.0.1:2"]);
        let mut bal = Balancer::new(c1.services[0].strategy, &c1.services[0].backends, now);
        bal.backends[0].active = 1;
        let c2 = cfg(&["127.0.0.1:2"]);
        step(&mut bal, &c1, &c2);
        let c3 = cfg(&["127.0.0.1:2", "127.0.0.1:1"]);
        step(&mut bal, &c2, &c3);
        let order: Vec<&str> = bal
            .order()
            .iter()
            .map(|&k| bal.backends[k].cfg.address.as_str())
            .collect();
        assert_eq!(order, vec!["127.0.0.1:2", "127.0.0.1:1"], "file order");
    }
}
