//! Configuration, step 2 per `[[service]]`: name, listen address, strategy, limits and backends checked.

use std::collections::HashSet;

use super::raw::{RawBackend, RawService};
use super::resolve::resolve;
use super::validate::Validator;
use super::{BackendConfig, SendProxy, ServiceConfig, Strategy};

/// Longest service name.
pub const MAX_NAME: usize = 64;

/// `service[i] (name)`, the prefix of every key of one service; just
/// `service[i]` while the name is empty.
fn service_key(i: usize, name: &str) -> String {
    if name.is_empty() {
        format!("service[{i}]")
    } else {
        format!("service[{i}] ({name})")
    }
}

impl Validator {
    /// One service, or `None` (its problems recorded) when it cannot run.
    pub(super) fn service(&mut self, i: usize, s: RawService) -> Option<ServiceConfig> {
        let name_ok = self.service_name(&format!("service[{i}].name"), &s.name);
        let key = service_key(i, &s.name);
        let listen = self.listen(&format!("{key}.listen"), &s.listen);
        let strategy = self.strategy(&format!("{key}.strategy"), s.strategy.as_deref());
        let send_proxy = self.send_proxy(&format!("{key}.send_proxy"), s.send_proxy.as_deref());
        let connect_timeout = self.ms(&format!("{key}.connect_timeout_ms"), s.connect_timeout_ms, 3000, false);
        let idle = self.ms(&format!("{key}.idle_timeout_ms"), s.idle_timeout_ms, 3_600_000, true);
        let retries = self.count(&format!("{key}.retries"), s.retries, 2, 0, 100) as u32;
        let max_connections =
            self.count(&format!("{key}.max_connections"), s.max_connections, 0, 0, 10_000_000) as usize;
        let per_ip = self.count(
            &format!("{key}.max_connections_per_ip"),
            s.max_connections_per_ip,
            0,
            0,
            10_000_000,
        ) as usize;
        let backlog = self.count(&format!("{key}.backlog"), s.backlog, 1024, 1, 65535) as u32;
        let health_check = s.health_check.map(|h| self.health(&format!("{key}.health_check"), h));
        let backends = self.backends(&key, s.backend);
        let (true, Some(listen), Some(strategy), Some(backends)) = (name_ok, listen, strategy, backends) else {
            return None;
        };
        if let Some(b) = backends.iter().find(|b| b.addr == listen) {
            // Every client would come back to this listener until the
            // connection limit is full.
            self.err(
                &format!("{key}.backend"),
                format!("backend {:?} is the service's own listen address (a loop)", b.address),
            );
        }
        Some(ServiceConfig {
            name: s.name,
            listen,
            strategy,
            connect_timeout,
            idle_timeout: (!idle.is_zero()).then_some(idle),
            retries,
            max_connections,
            max_connections_per_ip: per_ip,
            close_on_down: s.close_on_down.unwrap_or(false),
            backlog,
            send_proxy,
            health_check,
            backends,
        })
    }

    /// A name is needed (stats and logs show it) and must print plainly:
    /// up to [`MAX_NAME`] letters, digits, `.`, `_` and `-`, so no log line,
    /// label or page can be spoofed or bloated through it.
    fn service_name(&mut self, key: &str, name: &str) -> bool {
        if name.is_empty() {
            self.err(key, "must not be empty");
            false
        } else if name.chars().count() > MAX_NAME {
            self.err(
                key,
                format!("is {} characters long; at most {MAX_NAME}", name.chars().count()),
            );
            false
        } else if !name.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c)) {
            self.err(key, "may hold only letters, digits, '.', '_' and '-'");
            false
        } else {
            true
        }
    }

    /// The balancing strategy, round robin when not given.
    fn strategy(&mut self, key: &str, name: Option<&str>) -> Option<Strategy> {
        let Some(name) = name else {
            return Some(Strategy::RoundRobin);
        };
        let st = Strategy::parse(name);
        if st.is_none() {
            self.err(
                key,
                format!(
                    "unknown strategy {name:?} (round_robin | random | least_conn | power_of_two | ip_hash; aliases poll, iphash)"
                ),
            );
        }
        st
    }

    /// The PROXY protocol version sent to backends, none when not given.
    fn send_proxy(&mut self, key: &str, value: Option<&str>) -> SendProxy {
        match value.unwrap_or("none") {
            "none" => SendProxy::None,
            "v1" => SendProxy::V1,
            "v2" => SendProxy::V2,
            other => {
                self.err(key, format!("unknown value {other:?} (none | v1 | v2)"));
                SendProxy::None
            }
        }
    }

    /// At least one backend, each valid and listed once; `None` otherwise.
    fn backends(&mut self, key: &str, raw: Vec<RawBackend>) -> Option<Vec<BackendConfig>> {
        let mut ok = true;
        if raw.is_empty() {
            self.err(
                &format!("{key}.backend"),
                "a service needs at least one [[service.backend]]",
            );
            ok = false;
        }
        let mut backends: Vec<BackendConfig> = Vec::new();
        let mut seen = HashSet::new();
        for (j, b) in raw.into_iter().enumerate() {
            let bkey = format!("{key}.backend[{j}]");
            let Some(b) = self.backend(&bkey, b) else {
                ok = false;
                continue;
            };
            if !seen.insert(b.address.clone()) {
                self.err(&format!("{bkey}.address"), format!("duplicate backend {:?}", b.address));
                ok = false;
            }
            backends.push(b);
        }
        ok.then_some(backends)
    }

    fn backend(&mut self, key: &str, b: RawBackend) -> Option<BackendConfig> {
        let weight = self.weight(&format!("{key}.weight"), b.weight);
        let max_connections = self.count(&format!("{key}.max_connections"), b.max_connections, 0, 0, 10_000_000);
        let addr = self.check(&format!("{key}.address"), resolve(&b.address))?;
        Some(BackendConfig {
            address: b.address,
            addr,
            weight: weight?,
            backup: b.backup.unwrap_or(false),
            max_connections: max_connections as usize,
        })
    }

    /// A backend's share of new connections, 1 when not given.
    fn weight(&mut self, key: &str, weight: Option<i64>) -> Option<u32> {
        let weight = weight.unwrap_or(1);
        let valid = u32::try_from(weight).ok().filter(|w| (1..=256).contains(w));
        if valid.is_none() {
            self.err(key, format!("{weight} is out of range (1..=256)"));
        }
        valid
    }
}
