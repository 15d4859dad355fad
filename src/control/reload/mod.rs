//! Side flow: SIGHUP. A new, fully validated configuration is applied to the
//! running proxy as a difference: `plan` compares the two files (services by
//! name, backends by address), then every new listen address is bound
//! before anything changes, so a failure leaves the running configuration
//! exactly as it was, and `apply` carries the plan out. Connections already
//! open are never touched.

mod apply;
pub mod plan;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::admin::AdminServer;
use crate::config::Config;
use crate::control::loader::{Loaded, Prepared};
use crate::flow::Traffic;
use crate::health::probe::Prober;
use crate::io::socket;
use crate::state::State;
use crate::stats::StatsServer;
use crate::timer::Timers;
use apply::{Listeners, Slot};
use plan::{Plan, ServicePlan};

/// The parts of the running proxy a reload changes.
pub struct Running<'a> {
    pub config: &'a mut Arc<Config>,
    pub state: &'a mut State,
    pub traffic: &'a mut Traffic,
    pub prober: &'a mut Prober,
    pub stats: &'a mut Option<StatsServer>,
    pub admin: &'a mut AdminServer,
    pub registry: &'a mio::Registry,
    pub timers: &'a mut Timers,
}

/// A read configuration (or why there is none) meets the running proxy:
/// applied, or counted and logged as failed; either way the stats page
/// shows the outcome at once. The outcome (summary or error) is returned
/// for the admin API's `reload`.
pub fn finish(p: &mut Running, loaded: Loaded, now: Instant) -> Result<String, String> {
    let outcome = loaded.and_then(|new| apply(p, new, now));
    match &outcome {
        Ok(summary) => {
            p.state.counters.reloads += 1;
            log::info!("reload done: {summary}");
            for w in &p.config.warnings {
                log::warn!("configuration: {w}");
            }
        }
        Err(e) => {
            p.state.counters.reloads_failed += 1;
            log::error!("reload failed, keeping the running configuration: {e}");
        }
    }
    p.state.changed();
    outcome
}

/// Applies `new` to the running proxy, or changes nothing and says why;
/// the answer is the reload's summary.
pub fn apply(p: &mut Running, prepared: Prepared, now: Instant) -> Result<String, String> {
    let Prepared {
        config: new,
        plan,
        base,
    } = prepared;
    // Planned off the loop against the configuration running then; if
    // another change came first, plan again.
    let plan = if Arc::ptr_eq(&base, p.config) {
        plan
    } else {
        Plan::new(p.config, &new)
    };
    // Phase 1: bind every address not already bound; any failure aborts
    // before anything was changed (the fresh sockets are simply dropped).
    let listeners = bind_new(p, &new)?;
    let fresh_stats = match (&new.stats, plan.stats_moved) {
        (Some(cfg), true) => {
            Some(StatsServer::bind(cfg).map_err(|e| format!("cannot listen on {} for [stats]: {e}", cfg.listen))?)
        }
        _ => None,
    };
    // The unix socket last: a file made by an earlier failure is removed.
    let admin = p.admin.prepare(new.admin.as_ref())?;
    // Phase 2: nothing below can fail in a way that matters.
    let summary = plan.summary(&new).to_string();
    apply::services(p, &plan, &new, listeners, now);
    if let (Some(s), Some(cfg)) = (p.stats.as_mut(), new.stats.as_ref()) {
        s.configure(cfg);
    }
    if plan.stats_moved {
        move_stats(p, fresh_stats);
    }
    p.admin.reconfigure(admin, new.admin.as_ref(), p.registry);
    log_new_listeners(p, &plan, &new);
    if new.global.max_connections > p.config.global.max_connections {
        crate::control::limits::raise_fd_limit(new.global.max_connections);
    }
    if new.global.pid_file != p.config.global.pid_file {
        move_pid_file(p.config.global.pid_file.as_deref(), new.global.pid_file.as_deref());
    }
    set_config(p, new);
    Ok(summary)
}

/// Binds the addresses of the new file that no running listener can serve.
fn bind_new(p: &Running, new: &Config) -> Result<Listeners, String> {
    let running: HashSet<Slot> = p
        .state
        .services
        .iter()
        .filter(|(_, s)| !s.removed && s.listener.is_some())
        .map(|(_, s)| Slot::of(&s.cfg))
        .collect();
    let mut fresh = HashMap::new();
    for (i, svc) in new.services.iter().enumerate() {
        if !running.contains(&Slot::of(svc)) {
            let l = socket::bind(svc.listen, svc.backlog)
                .map_err(|e| format!("cannot listen on {} for service {:?}: {e}", svc.listen, svc.name))?;
            fresh.insert(i, l);
        }
    }
    Ok(Listeners {
        running: HashMap::new(),
        fresh,
    })
}

/// `[stats]` moved: the old listener and its clients go, the new one
/// (already bound) takes over.
fn move_stats(p: &mut Running, fresh: Option<StatsServer>) {
    if let Some(mut old) = p.stats.take() {
        old.close(p.registry);
    }
    if let Some(mut s) = fresh {
        if let Err(e) = s.register(p.registry) {
            log::error!("cannot register the stats listener: {e}");
        }
        if let Some(addr) = s.local_addr() {
            log::info!("stats listening on http://{addr}/");
        }
        *p.stats = Some(s);
    }
}

/// Says where added and moved services listen now.
fn log_new_listeners(p: &Running, plan: &Plan, new: &Config) {
    let fresh: Vec<&str> = plan
        .services
        .iter()
        .filter(|s| matches!(s, ServicePlan::Added(_) | ServicePlan::Kept { moved: true, .. }))
        .filter_map(|s| new.services.get(s.index()).map(|c| c.name.as_str()))
        .collect();
    for (name, addr) in p.state.listen_addrs() {
        if fresh.contains(&name.as_str()) {
            log::info!("service {name} listening on {addr}");
        }
    }
}

/// Backends of a replaced configuration past which the freed memory is
/// handed back to the system (a 400,000-backend file left hundreds of MB
/// resident after it was replaced).
const TRIM_AFTER: usize = 5_000;

/// Returns free heap pages to the system (glibc keeps them otherwise).
fn give_memory_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The new configuration takes over: the log is reopened (rotation is
/// "move the file, SIGHUP"), pools and limits apply to new connections.
fn set_config(p: &mut Running, config: Config) {
    crate::logsink::reopen(config.global.log_file.as_deref());
    p.traffic.configure(&config.global);
    log::set_max_level(config.global.log_level);
    let old = std::mem::replace(p.config, Arc::new(config));
    // Freeing a large configuration (30,000 backends: as many strings)
    // takes milliseconds; a thread of its own does it, off the loop.
    let big = old.services.iter().map(|s| s.backends.len()).sum::<usize>() >= TRIM_AFTER;
    let spawned = std::thread::Builder::new()
        .name("easyproxy-drop".into())
        .spawn(move || {
            drop(old);
            if big {
                give_memory_back();
            }
        });
    drop(spawned);
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
