//! Admin API, the changes: a request's command carried out on the running proxy (admin state, runtime weight, closing a backend's connections, status), logged at `warn` with the peer.

use std::time::Instant;

use serde_json::json;

use super::persist::Override;
use super::request::{answer, error};
use super::stream::Peer;
use super::Command;
use crate::balance::AdminState;
use crate::flow::session::End;
use crate::flow::{Ctx, Traffic};
use crate::health::probe::Prober;
use crate::state::State;
use crate::stats::{Answer, Source};
use crate::timer::Timers;

/// The parts of the running proxy a command may change.
pub struct Ctl<'a> {
    pub state: &'a mut State,
    pub traffic: &'a mut Traffic,
    pub prober: &'a mut Prober,
    pub registry: &'a mio::Registry,
    pub timers: &'a mut Timers,
    /// `GET /v1/status` answers, shared within the stats window.
    pub status: &'a mut crate::stats::StatusCache,
    pub now: Instant,
}

/// What a command came to.
pub enum Outcome {
    /// Answer this.
    Answer(Answer),
    /// A change of admin state or weight, checked but not made: [`apply`]
    /// makes it (once the state file holds it, when there is one).
    Change(Change),
    /// A reload: the answer waits for its outcome.
    Reload,
}

/// An admin state or weight change of one backend, named as the file
/// names them (so it still finds its backend, or none, after a reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub service: String,
    pub backend: String,
    pub to: Setting,
}

/// What a [`Change`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    State(AdminState),
    /// `None`: the file's weight again.
    Weight(Option<u32>),
}

impl Change {
    /// The keys of its service and backend, if both still run.
    pub fn locate(&self, state: &State) -> Option<(usize, usize)> {
        let (sk, svc) = state
            .services
            .iter()
            .find(|(_, s)| !s.removed && s.cfg.name == self.service)?;
        let bal = &svc.balancer;
        let bk = bal
            .order()
            .iter()
            .copied()
            .find(|&k| bal.backends.get(k).is_some_and(|b| b.cfg.address == self.backend))?;
        Some((sk, bk))
    }

    /// The backend's settings as the change would leave them, for the
    /// state file written before it is made; `None` when it is gone.
    pub fn planned(&self, state: &State) -> Option<Override> {
        let (sk, bk) = self.locate(state)?;
        let b = state.services.get(sk)?.balancer.backends.get(bk)?;
        let (admin, weight) = match self.to {
            Setting::State(s) => (s, b.weight_override),
            Setting::Weight(w) => (b.admin, w),
        };
        Some(Override {
            service: sk,
            backend: bk,
            admin,
            weight,
        })
    }
}

/// Carries out `cmd`, sent by `peer`; a change of state or weight is only
/// checked (see [`Outcome::Change`]).
pub fn execute(cmd: Command, peer: &Peer, ctl: &mut Ctl<'_>) -> Outcome {
    let (service, backend, to) = match cmd {
        Command::Reload => return Outcome::Reload,
        Command::Status => return Outcome::Answer(status(ctl)),
        Command::State {
            service,
            backend,
            state,
        } => (service, backend, Setting::State(state)),
        Command::Weight {
            service,
            backend,
            weight,
        } => (service, backend, Setting::Weight(weight)),
        Command::Close { service, backend } => {
            return Outcome::Answer(match find(ctl.state, &service, &backend) {
                Ok((s, b)) => close(ctl, peer, s, b),
                Err(a) => a,
            })
        }
    };
    let found = find(ctl.state, &service, &backend).and_then(|(sk, bk)| {
        let svc = ctl
            .state
            .services
            .get(sk)
            .ok_or_else(|| error(404, "the service is gone"))?;
        let b = svc
            .balancer
            .backends
            .get(bk)
            .ok_or_else(|| error(404, "the backend is gone"))?;
        Ok(Change {
            service: svc.cfg.name.clone(),
            backend: b.cfg.address.clone(),
            to,
        })
    });
    match found {
        Ok(change) => Outcome::Change(change),
        Err(a) => Outcome::Answer(a),
    }
}

/// Makes `change`, asked for by `peer`: 200 with what it did, 404 when its
/// backend is gone (a reload meanwhile).
pub fn apply(change: &Change, peer: &Peer, ctl: &mut Ctl<'_>) -> Answer {
    let Some((sk, bk)) = change.locate(ctl.state) else {
        return error(
            404,
            &format!(
                "service {:?} has no backend {:?} any more",
                change.service, change.backend
            ),
        );
    };
    match change.to {
        Setting::State(s) => set_state(ctl, peer, sk, bk, s),
        Setting::Weight(w) => set_weight(ctl, peer, sk, bk, w),
    }
}

/// 503 for a change that could not be made durable: nothing changed.
pub fn refused(why: &str) -> Answer {
    error(503, why)
}

/// The `/stats` JSON, from the status cache (rendered at most once per
/// window, at once after a change).
fn status(ctl: &mut Ctl<'_>) -> Answer {
    let src = Source {
        state: ctl.state,
        buffers_in_use: ctl.traffic.pools.buffers.in_use(),
        timers_pending: ctl.timers.len(),
    };
    ctl.status.answer(&src, ctl.now)
}

/// The keys of service `service` and of its backend `backend` (as written
/// in the file, or the address it resolved to); 404 when either is not
/// running.
fn find(state: &State, service: &str, backend: &str) -> Result<(usize, usize), Answer> {
    let Some((sk, svc)) = state.services.iter().find(|(_, s)| !s.removed && s.cfg.name == service) else {
        return Err(error(404, &format!("unknown service {service:?}")));
    };
    let bal = &svc.balancer;
    let found = bal.order().iter().copied().find(|&k| {
        bal.backends
            .get(k)
            .is_some_and(|b| b.cfg.address == backend || b.cfg.addr.to_string() == backend)
    });
    match found {
        Some(bk) => Ok((sk, bk)),
        None => Err(error(404, &format!("service {service:?} has no backend {backend:?}"))),
    }
}

/// `ready`, `drain` or `maint`. Leaving maintenance, a checked backend is
/// checked at once and the first failure takes it down.
fn set_state(ctl: &mut Ctl<'_>, peer: &Peer, sk: usize, bk: usize, new: AdminState) -> Answer {
    let Some(svc) = ctl.state.services.get_mut(sk) else {
        return error(404, "the service is gone");
    };
    let Some(b) = svc.balancer.backends.get_mut(bk) else {
        return error(404, "the backend is gone");
    };
    let old = std::mem::replace(&mut b.admin, new);
    let check = svc.cfg.health_check.as_ref();
    if old == AdminState::Maint && new != AdminState::Maint {
        if let Some(hc) = check {
            if hc.starts_down() {
                // No check ran in maintenance: with a role, what the last
                // one saw may no longer hold (a failover meanwhile), so
                // the backend waits, down, for the check that runs now.
                b.health.restart(true, ctl.now);
            } else {
                b.health.successes = 0;
                b.health.fails = hc.fall.saturating_sub(1);
            }
        }
    }
    log::warn!("admin: peer={peer} {new} {}/{}", svc.cfg.name, b.cfg.address);
    let body = json!({
        "service": svc.cfg.name,
        "backend": b.cfg.address,
        "admin_state": new.as_str(),
        "was": old.as_str(),
        "active": b.active,
    });
    if old == AdminState::Maint && new != AdminState::Maint && check.is_some() {
        ctl.prober.check_now(sk, bk, &ctl.state.services, ctl.timers, ctl.now);
    }
    if new == AdminState::Maint && old != AdminState::Maint {
        let mut cx = Ctx {
            state: ctl.state,
            registry: ctl.registry,
            timers: ctl.timers,
            now: ctl.now,
        };
        ctl.traffic.backend_down(sk, bk, "admin maint", &mut cx);
    }
    ctl.state.changed();
    answer(200, &body)
}

/// A runtime weight, or (`None`) the file's again.
fn set_weight(ctl: &mut Ctl<'_>, peer: &Peer, sk: usize, bk: usize, weight: Option<u32>) -> Answer {
    let Some(svc) = ctl.state.services.get_mut(sk) else {
        return error(404, "the service is gone");
    };
    let Some(b) = svc.balancer.backends.get_mut(bk) else {
        return error(404, "the backend is gone");
    };
    b.weight_override = weight;
    let (effective, file) = (b.effective_weight(), b.cfg.weight);
    let what = match weight {
        Some(w) => format!("weight {w} (file {file})"),
        None => format!("weight reset to the file's {file}"),
    };
    log::warn!("admin: peer={peer} {what} {}/{}", svc.cfg.name, b.cfg.address);
    let body = json!({
        "service": svc.cfg.name,
        "backend": b.cfg.address,
        "weight": effective,
        "weight_config": file,
    });
    svc.balancer.reweight();
    ctl.state.changed();
    answer(200, &body)
}

/// Closes the backend's open connections, both sides.
fn close(ctl: &mut Ctl<'_>, peer: &Peer, sk: usize, bk: usize) -> Answer {
    let name = ctl.state.services.get(sk).and_then(|s| {
        let b = s.balancer.backends.get(bk)?;
        Some(format!("{}/{}", s.cfg.name, b.cfg.address))
    });
    let mut cx = Ctx {
        state: ctl.state,
        registry: ctl.registry,
        timers: ctl.timers,
        now: ctl.now,
    };
    let closed = ctl.traffic.close_backend(sk, bk, End::Admin, &mut cx);
    log::warn!(
        "admin: peer={peer} close {}: {closed} connections",
        name.as_deref().unwrap_or("-")
    );
    ctl.state.changed();
    answer(200, &json!({ "closed": closed }))
}
