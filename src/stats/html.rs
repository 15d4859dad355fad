//! View: the snapshot as a self-refreshing HTML page (`/` and `/statistic`).

use std::fmt::Write as _;

use super::{BackendSnap, ServiceSnap, Snapshot};

const CSS: &str = "body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#1d2330;background:#f6f7f9}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.sub{color:#667;margin-bottom:16px}\
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:110px}\
.card b{display:block;font-size:20px}.card span{color:#667;font-size:12px}\
table{border-collapse:collapse;background:#fff;border:1px solid #dde1e7;margin:6px 0 4px;min-width:480px}\
th,td{padding:6px 12px;border-bottom:1px solid #eef0f3;text-align:right;white-space:nowrap}th{background:#eef1f5;font-weight:600}\
td:first-child,th:first-child{text-align:left}.up{background:#2e9d57;color:#fff}.down{background:#d23b3b;color:#fff}\
.maint,.drain{background:#c98a00;color:#fff}\
.state{border-radius:4px;padding:1px 8px;font-weight:600;font-size:12px}.muted{color:#889}\
.backends td:nth-child(2),.backends th:nth-child(2){text-align:center}";

/// The page body: the head and totals, then per service its backends and clients.
pub(super) fn render(snap: &Snapshot) -> String {
    let mut h = String::with_capacity(8192);
    head_and_cards(&mut h, snap);
    for s in &snap.services {
        service_head(&mut h, s);
        for b in &s.backends {
            backend_row(&mut h, b);
        }
        h.push_str("</table>");
        clients_table(&mut h, s);
    }
    h.push_str("</body></html>\n");
    h
}

/// The document head, the title line and the process-wide cards.
fn head_and_cards(h: &mut String, snap: &Snapshot) {
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>easyproxy statistics</title><style>{CSS}</style></head><body>\
         <h1>easyproxy statistics</h1><div class=\"sub\">version {} &middot; refreshes every 5 s &middot; \
         also as <a href=\"/stats\">JSON</a> and <a href=\"/metrics\">Prometheus metrics</a></div>\
         <div class=\"cards\">\
         <div class=\"card\"><b>{}</b><span>uptime</span></div>\
         <div class=\"card\"><b>{}</b><span>active connections</span></div>\
         <div class=\"card\"><b>{}</b><span>total connections</span></div>\
         <div class=\"card\"><b>{}</b><span>rejected</span></div>\
         <div class=\"card\"><b>{}</b><span>from backends</span></div>\
         <div class=\"card\"><b>{}</b><span>to backends</span></div>\
         <div class=\"card\"><b>{} / {}</b><span>reloads ok / failed</span></div></div>",
        env!("CARGO_PKG_VERSION"),
        human_duration(snap.uptime_ms),
        snap.connections.active,
        snap.connections.total,
        snap.connections.rejected,
        human_bytes(snap.bytes_in),
        human_bytes(snap.bytes_out),
        snap.reloads,
        snap.reloads_failed,
    );
}

/// A service's heading and the header row of its backends table.
fn service_head(h: &mut String, s: &ServiceSnap) {
    let _ = write!(
        h,
        "<h2>service {} <span class=\"muted\">&middot; {} &middot; {} &middot; {} active, {} total, {} rejected{}</span></h2>\
         <table class=\"backends\"><tr><th>backend</th><th>state</th><th>weight</th><th>backup</th><th>active</th>\
         <th>total</th><th>failures</th><th>bytes in</th><th>bytes out</th><th>last check</th><th>for</th></tr>",
        esc(&s.name),
        esc(&s.listen),
        esc(&s.strategy),
        s.active,
        s.total,
        s.rejected,
        if s.health_check { "" } else { " &middot; no health check" }
    );
}

fn backend_row(h: &mut String, b: &BackendSnap) {
    let mut check = match b.last_check_ms {
        Some(ms) => format!("{} ({ms:.1} ms)", esc(&b.last_check)),
        None => esc(&b.last_check),
    };
    // MySQL checks: the role seen, and a replica's lag.
    if let Some(role) = b.role {
        let _ = write!(check, " &middot; {role}");
    }
    if let Some(ms) = b.replication_lag_ms {
        let _ = write!(check, ", lag {:.1} s", ms as f64 / 1000.0);
    }
    let weight = if b.weight == b.weight_config {
        b.weight.to_string()
    } else {
        format!("{} <span class=\"muted\">(file {})</span>", b.weight, b.weight_config)
    };
    let _ = write!(
        h,
        "<tr><td>{}</td><td><span class=\"state {}\">{}</span>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        esc(&b.address),
        b.state,
        b.state.to_uppercase(),
        if b.admin_state == "drain" {
            " <span class=\"state drain\">DRAIN</span>"
        } else {
            ""
        },
        weight,
        if b.backup { "yes" } else { "no" },
        b.active,
        b.total,
        b.failures,
        human_bytes(b.bytes_in),
        human_bytes(b.bytes_out),
        check,
        human_duration(b.state_since_ms),
    );
}

/// Open connections per client IP of one service.
fn clients_table(h: &mut String, s: &ServiceSnap) {
    h.push_str("<table class=\"clients\"><tr><th>client IP</th><th>active connections</th></tr>");
    if s.clients.is_empty() {
        h.push_str("<tr><td class=\"muted\">no clients connected</td><td></td></tr>");
    }
    for c in &s.clients {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(&c.ip), c.active);
    }
    h.push_str("</table>");
}

/// Text made safe for element content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Bytes in binary units with one decimal (plain bytes below 1 KiB).
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A duration in its two largest units (`1m 1s`, `3h 12m`, `2d 5h`).
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_duration(61_000), "1m 1s");
    }
}
