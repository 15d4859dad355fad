//! View: the snapshot as Prometheus text (`/metrics`).

use std::fmt::Write as _;

use super::{BackendSnap, ServiceSnap, Snapshot};

/// Where a family's samples come from: one for the process, one per
/// service, or one per backend of every service.
enum Rows {
    Process(fn(&Snapshot) -> String),
    Service(fn(&ServiceSnap) -> String),
    Backend(fn(&BackendSnap) -> String),
    /// Only the backends that have the value, with extra labels (`,k="v"`).
    BackendSome(fn(&BackendSnap) -> Option<(String, String)>),
}

/// One metric family: name, type, help text and its samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    rows: Rows,
}

const fn family(name: &'static str, kind: &'static str, help: &'static str, rows: Rows) -> Family {
    Family { name, kind, help, rows }
}

/// Every family, in output order.
const FAMILIES: &[Family] = &[
    family(
        "easyproxy_uptime_seconds",
        "gauge",
        "Seconds since easyproxy started.",
        Rows::Process(|s| format!("{:.3}", s.uptime_ms as f64 / 1000.0)),
    ),
    family(
        "easyproxy_reloads_total",
        "counter",
        "Successful configuration reloads.",
        Rows::Process(|s| s.reloads.to_string()),
    ),
    family(
        "easyproxy_reloads_failed_total",
        "counter",
        "Rejected configuration reloads.",
        Rows::Process(|s| s.reloads_failed.to_string()),
    ),
    family(
        "easyproxy_local_errors_total",
        "counter",
        "Backend connects that failed on this host (no local port, no descriptor); not counted against backends.",
        Rows::Process(|s| s.connections.local_errors.to_string()),
    ),
    family(
        "easyproxy_log_lines_dropped_total",
        "counter",
        "Log lines dropped because the log destination could not keep up.",
        Rows::Process(|s| s.log_lines_dropped.to_string()),
    ),
    family(
        "easyproxy_connections_active",
        "gauge",
        "Client connections open now.",
        Rows::Service(|s| s.active.to_string()),
    ),
    family(
        "easyproxy_connections_total",
        "counter",
        "Client connections accepted.",
        Rows::Service(|s| s.total.to_string()),
    ),
    family(
        "easyproxy_connections_rejected_total",
        "counter",
        "Client connections closed at once: no backend could be chosen, or the client IP was at max_connections_per_ip.",
        Rows::Service(|s| s.rejected.to_string()),
    ),
    family(
        "easyproxy_backend_up",
        "gauge",
        "1 when the backend is up, 0 when down.",
        Rows::Backend(|b| if b.state == "up" { "1".into() } else { "0".into() }),
    ),
    family(
        "easyproxy_backend_role",
        "gauge",
        "MySQL checks: 1 with the role the last check saw (primary = writable, replica = read-only); absent when unknown.",
        Rows::BackendSome(|b| b.role.map(|r| (format!(",role=\"{r}\""), "1".into()))),
    ),
    family(
        "easyproxy_backend_replication_lag_seconds",
        "gauge",
        "MySQL replicas: the replication lag the last check saw; absent when unknown.",
        Rows::BackendSome(|b| {
            b.replication_lag_ms
                .map(|ms| (String::new(), format!("{:.3}", ms as f64 / 1000.0)))
        }),
    ),
    family(
        "easyproxy_backend_connections_active",
        "gauge",
        "Connections open to the backend now.",
        Rows::Backend(|b| b.active.to_string()),
    ),
    family(
        "easyproxy_backend_connections_total",
        "counter",
        "Connections established to the backend.",
        Rows::Backend(|b| b.total.to_string()),
    ),
    family(
        "easyproxy_backend_failures_total",
        "counter",
        "Failed connects and failed health checks of the backend.",
        Rows::Backend(|b| b.failures.to_string()),
    ),
    family(
        "easyproxy_backend_bytes_in_total",
        "counter",
        "Bytes received from the backend.",
        Rows::Backend(|b| b.bytes_in.to_string()),
    ),
    family(
        "easyproxy_backend_bytes_out_total",
        "counter",
        "Bytes sent to the backend.",
        Rows::Backend(|b| b.bytes_out.to_string()),
    ),
];

/// The `/metrics` body.
pub(super) fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    for f in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind);
        for (labels, value) in samples(snap, &f.rows) {
            let _ = writeln!(out, "{}{labels} {value}", f.name);
        }
    }
    out
}

/// A family's samples: (label set, value).
fn samples(snap: &Snapshot, rows: &Rows) -> Vec<(String, String)> {
    match rows {
        Rows::Process(value) => vec![(String::new(), value(snap))],
        Rows::Service(value) => snap
            .services
            .iter()
            .map(|s| (format!("{{service=\"{}\"}}", prom_label(&s.name)), value(s)))
            .collect(),
        Rows::Backend(value) => backend_samples(snap, |b| Some((String::new(), value(b)))),
        Rows::BackendSome(value) => backend_samples(snap, value),
    }
}

/// One sample per backend that `value` gives one for.
fn backend_samples(snap: &Snapshot, value: impl Fn(&BackendSnap) -> Option<(String, String)>) -> Vec<(String, String)> {
    snap.services
        .iter()
        .flat_map(|s| s.backends.iter().map(move |b| (s, b)))
        .filter_map(|(s, b)| {
            let (extra, v) = value(b)?;
            let labels = format!(
                "{{service=\"{}\",backend=\"{}\"{extra}}}",
                prom_label(&s.name),
                prom_label(&b.address)
            );
            Some((labels, v))
        })
        .collect()
}

/// A label value with `\`, `"` and newlines escaped.
fn prom_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(prom_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
