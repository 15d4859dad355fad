//! Reload, step 1: what changes. Compares the running configuration with
//! the new one (services by name, backends by address) and lists the
//! changes, without touching a socket; linear in the size of both files.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::config::{BackendConfig, Config, ServiceConfig};

/// Everything a reload changes, in the new file's order.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// One entry per service of the new file.
    pub services: Vec<ServicePlan>,
    /// Names of running services the new file no longer has.
    pub removed: Vec<String>,
    pub global_changed: bool,
    /// `[stats]` listens somewhere else (or starts or stops listening).
    pub stats_moved: bool,
}

/// What becomes of one service of the new file.
#[derive(Debug, PartialEq)]
pub enum ServicePlan {
    /// A new service (index into the new file's services).
    Added(usize),
    /// A running service kept under its name.
    Kept {
        /// Index into the new file's services.
        index: usize,
        /// Anything but the backend list differs.
        settings_changed: bool,
        /// `listen` differs.
        moved: bool,
        /// Health-check settings or backend addresses differ: probes restart.
        probes_changed: bool,
        backends: BackendPlan,
    },
}

/// How a kept service's backends change (addresses as configured).
#[derive(Debug, Default, PartialEq)]
pub struct BackendPlan {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// The backends kept changed their order, or one was added before a
    /// kept one: every backend's rank must be set anew (otherwise the new
    /// ones just go after the others).
    pub reordered: bool,
}

impl Plan {
    /// Compares the running configuration `old` with `new`.
    pub fn new(old: &Config, new: &Config) -> Plan {
        let running: HashMap<&str, &ServiceConfig> = old.services.iter().map(|s| (s.name.as_str(), s)).collect();
        let kept: HashSet<&str> = new.services.iter().map(|s| s.name.as_str()).collect();
        let services = new
            .services
            .iter()
            .enumerate()
            .map(|(index, cfg)| match running.get(cfg.name.as_str()) {
                Some(old) => ServicePlan::Kept {
                    index,
                    settings_changed: !same_settings(old, cfg),
                    moved: old.listen != cfg.listen,
                    probes_changed: old.health_check != cfg.health_check || !same_addresses(old, cfg),
                    backends: BackendPlan::new(&old.backends, &cfg.backends),
                },
                None => ServicePlan::Added(index),
            })
            .collect();
        Plan {
            services,
            removed: old
                .services
                .iter()
                .filter(|s| !kept.contains(s.name.as_str()))
                .map(|s| s.name.clone())
                .collect(),
            global_changed: old.global != new.global,
            stats_moved: old.stats.as_ref().map(|s| s.listen) != new.stats.as_ref().map(|s| s.listen),
        }
    }

    /// The reload's log line against the new file: `services added=..
    /// removed=.. changed=..; backends added=.. removed=.. changed=..`.
    pub fn summary<'a>(&'a self, new: &'a Config) -> Summary<'a> {
        Summary { plan: self, new }
    }
}

impl BackendPlan {
    /// No backend is added, changed, removed or moved.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty() && !self.reordered
    }

    fn new(old: &[BackendConfig], new: &[BackendConfig]) -> BackendPlan {
        let before: HashMap<&str, (usize, &BackendConfig)> = old
            .iter()
            .enumerate()
            .map(|(i, b)| (b.address.as_str(), (i, b)))
            .collect();
        let after: HashSet<&str> = new.iter().map(|b| b.address.as_str()).collect();
        let mut plan = BackendPlan::default();
        // Position in the old list of the last kept backend seen so far.
        let mut last_kept: Option<usize> = None;
        for b in new {
            match before.get(b.address.as_str()) {
                None => plan.added.push(b.address.clone()),
                Some(&(i, o)) => {
                    plan.reordered |= last_kept.is_some_and(|l| i < l) || !plan.added.is_empty();
                    last_kept = Some(i);
                    if o != b {
                        plan.changed.push(b.address.clone());
                    }
                }
            }
        }
        plan.removed = old
            .iter()
            .filter(|b| !after.contains(b.address.as_str()))
            .map(|b| b.address.clone())
            .collect();
        plan
    }
}

/// Whether everything but the backend list is the same (comparing the
/// settings costs nothing per backend).
fn same_settings(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    a.settings() == b.settings()
}

/// Same backend addresses (as written and as resolved), in the same order.
fn same_addresses(a: &ServiceConfig, b: &ServiceConfig) -> bool {
    a.backends
        .iter()
        .map(|x| (&x.address, x.addr))
        .eq(b.backends.iter().map(|x| (&x.address, x.addr)))
}

/// A plan's log line.
pub struct Summary<'a> {
    plan: &'a Plan,
    new: &'a Config,
}

impl Summary<'_> {
    /// Names of the new file's services that `pick` selects.
    fn services(&self, pick: impl Fn(&ServicePlan) -> bool) -> Vec<String> {
        self.plan
            .services
            .iter()
            .filter(|s| pick(s))
            .filter_map(|s| self.new.services.get(s.index()).map(|c| c.name.clone()))
            .collect()
    }

    /// `service/address` of the kept services' backends that `pick` selects.
    fn backends(&self, pick: impl Fn(&BackendPlan) -> &Vec<String>) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.plan.services {
            if let (ServicePlan::Kept { backends, .. }, Some(cfg)) = (s, self.new.services.get(s.index())) {
                out.extend(pick(backends).iter().map(|a| format!("{}/{a}", cfg.name)));
            }
        }
        out
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(",") };
        let changed = |s: &ServicePlan| {
            matches!(
                s,
                ServicePlan::Kept {
                    settings_changed: true,
                    ..
                }
            )
        };
        write!(
            f,
            "services added={} removed={} changed={}; backends added={} removed={} changed={}",
            list(&self.services(|s| matches!(s, ServicePlan::Added(_)))),
            list(&self.plan.removed),
            list(&self.services(changed)),
            list(&self.backends(|b| &b.added)),
            list(&self.backends(|b| &b.removed)),
            list(&self.backends(|b| &b.changed)),
        )?;
        if self.plan.global_changed {
            write!(f, "; [global] changed")?;
        }
        if self.plan.stats_moved {
            write!(f, "; [stats] changed")?;
        }
        Ok(())
    }
}

impl ServicePlan {
    /// Index into the new file's services.
    pub fn index(&self) -> usize {
        match self {
            ServicePlan::Added(i) | ServicePlan::Kept { index: i, .. } => *i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    fn service(name: &str, listen: u16, backends: &[&str], extra: &str) -> String {
        let mut s = format!("[[service]]\nname = \"{name}\"\nlisten = \"127.0.0.1:{listen}\"\n{extra}\n");
        for b in backends {
            s.push_str(&format!("[[service.backend]]\naddress = \"{b}\"\n"));
        }
        s
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let c = config(&service("a", 7001, &["127.0.0.1:1", "127.0.0.1:2"], ""));
        let plan = Plan::new(&c, &c);
        assert_eq!(
            plan.services,
            vec![ServicePlan::Kept {
                index: 0,
                settings_changed: false,
                moved: false,
                probes_changed: false,
                backends: BackendPlan::default(),
            }]
        );
        assert!(plan.removed.is_empty() && !plan.global_changed && !plan.stats_moved);
        assert_eq!(
            plan.summary(&c).to_string(),
            "services added=- removed=- changed=-; backends added=- removed=- changed=-"
        );
    }

    #[test]
    fn services_by_name_backends_by_address() {
        let old = config(&format!(
            "{}{}",
            service("a", 7001, &["127.0.0.1:1", "127.0.0.1:2"], ""),
            service("gone", 7002, &["127.0.0.1:3"], "")
        ));
        let new = config(&format!(
            "[global]\nbuffer_size = 4096\n[stats]\nlisten = \"127.0.0.1:7009\"\n{}{}",
            service("new", 7003, &["127.0.0.1:9"], ""),
            service("a", 7004, &["127.0.0.1:2", "127.0.0.1:4"], "strategy = \"random\"")
        ));
        let plan = Plan::new(&old, &new);
        assert_eq!(plan.services[0], ServicePlan::Added(0));
        assert_eq!(
            plan.services[1],
            ServicePlan::Kept {
                index: 1,
                settings_changed: true,
                moved: true,
                probes_changed: true,
                backends: BackendPlan {
                    added: vec!["127.0.0.1:4".into()],
                    changed: vec![],
                    removed: vec!["127.0.0.1:1".into()],
                    reordered: false,
                },
            }
        );
        assert_eq!(plan.removed, vec!["gone".to_string()]);
        assert!(plan.global_changed && plan.stats_moved);
        assert_eq!(
            plan.summary(&new).to_string(),
            "services added=new removed=gone changed=a; backends added=a/127.0.0.1:4 \
             removed=a/127.0.0.1:1 changed=-; [global] changed; [stats] changed"
        );
    }

    #[test]
    fn a_reweighted_backend_is_changed_and_probes_keep_their_rhythm() {
        let old = config(&service("a", 7001, &["127.0.0.1:1"], "[service.health_check]"));
        let new = config(
            &service("a", 7001, &["127.0.0.1:1"], "[service.health_check]")
                .replace("address = \"127.0.0.1:1\"", "address = \"127.0.0.1:1\"\nweight = 3"),
        );
        let plan = Plan::new(&old, &new);
        let ServicePlan::Kept {
            settings_changed,
            probes_changed,
            backends,
            ..
        } = &plan.services[0]
        else {
            panic!("kept expected")
        };
        assert!(!settings_changed && !probes_changed);
        assert_eq!(backends.changed, vec!["127.0.0.1:1".to_string()]);
        assert!(plan.summary(&new).to_string().ends_with("changed=a/127.0.0.1:1"));
    }

    #[test]
    fn a_new_health_check_restarts_probes() {
        let old = config(&service("a", 7001, &["127.0.0.1:1"], ""));
        let new = config(&service(
            "a",
            7001,
            &["127.0.0.1:1"],
            "[service.health_check]\ninterval_ms = 100",
        ));
        let plan = Plan::new(&old, &new);
        assert!(matches!(
            plan.services[0],
            ServicePlan::Kept {
                settings_changed: true,
                probes_changed: true,
                ..
            }
        ));
    }

    #[test]
    fn a_backend_added_in_front_or_a_new_order_reranks() {
        let backends = |list: &[&str]| {
            let c = config(&service("a", 7001, list, ""));
            let Some(ServicePlan::Kept { backends, .. }) =
                Plan::new(&config(&service("a", 7001, &["127.0.0.1:1", "127.0.0.1:2"], "")), &c)
                    .services
                    .into_iter()
                    .next()
            else {
                panic!("kept expected")
            };
            backends
        };
        assert!(
            !backends(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]).reordered,
            "appended"
        );
        assert!(!backends(&["127.0.0.1:2"]).reordered, "removed");
        assert!(
            backends(&["127.0.0.1:3", "127.0.0.1:1", "127.0.0.1:2"]).reordered,
            "added in front"
        );
        assert!(backends(&["127.0.0.1:2", "127.0.0.1:1"]).reordered, "swapped");
    }
}
