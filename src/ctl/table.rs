//! `easyproxy ctl status`, the table: one line per backend (service, backend, state, admin state, weight, active, role), read from the `/stats` JSON.
//! Every cell is cleaned (one line, no control character) before the
//! columns are measured.

use serde_json::Value;

use super::clean;

const HEADER: [&str; 7] = ["SERVICE", "BACKEND", "STATE", "ADMIN", "WEIGHT", "ACTIVE", "ROLE"];

/// The status table; `None` when the JSON is not the `/stats` document.
pub fn render(status: &Value) -> Option<String> {
    let mut rows: Vec<[String; 7]> = vec![HEADER.map(str::to_string)];
    for svc in status.get("services")?.as_array()? {
        let name = svc.get("name")?.as_str()?;
        for b in svc.get("backends")?.as_array()? {
            rows.push(row(name, b)?);
        }
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    Some(out)
}

fn row(service: &str, b: &Value) -> Option<[String; 7]> {
    let text = |k: &str| clean::line(b.get(k).and_then(Value::as_str).unwrap_or("-"));
    let num = |k: &str| b.get(k).and_then(Value::as_u64);
    let weight = match (num("weight"), num("weight_config")) {
        (Some(w), Some(f)) if w != f => format!("{w} (file {f})"),
        (Some(w), _) => w.to_string(),
        _ => "-".into(),
    };
    Some([
        clean::line(service),
        clean::line(b.get("address")?.as_str()?),
        text("state"),
        text("admin_state"),
        weight,
        num("active").map_or("-".into(), |n| n.to_string()),
        text("role"),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_aligned_line_per_backend() {
        let v: Value = serde_json::from_str(
            r#"{"services":[{"name":"db","backends":[
              {"address":"10.0.0.7:3306","state":"up","admin_state":"drain","weight":3,"weight_config":1,"active":2,"role":"primary"},
              {"address":"10.0.0.8:3306","state":"maint","admin_state":"maint","weight":1,"weight_config":1,"active":0,"role":null}]}]}"#,
        )
        .unwrap();
        let t = render(&v).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE  BACKEND        STATE  ADMIN  WEIGHT      ACTIVE  ROLE"
        );
        assert_eq!(
            lines[1],
            "db       10.0.0.7:3306  up     drain  3 (file 1)  2       primary"
        );
        assert_eq!(lines[2], "db       10.0.0.8:3306  maint  maint  1           0       -");
        assert!(render(&serde_json::json!({"x": 1})).is_none());
    }

    #[test]
    fn cells_from_the_server_are_cleaned_and_aligned() {
        let v = serde_json::json!({"services":[{"name":"db\u{1b}[2J\u{202e}","backends":[
            {"address":"10.0.0.7:3306\r\nfake line","state":"up\u{1b}]0;pwned\u{7}","admin_state":"ready",
             "weight":1,"weight_config":1,"active":0,"role":"\u{9b}31m"},
            {"address":"10.0.0.8:3306","state":"up","admin_state":"ready","weight":1,"weight_config":1,"active":0,"role":null}]}]});
        let t = render(&v).unwrap();
        assert!(t.chars().all(|c| c == '\n' || !clean::is_unsafe(c)), "{t:?}");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert_eq!(
            lines[1],
            "db[2J    10.0.0.7:3306  fake line  up]0;pwned  ready  1       0       31m"
        );
        assert_eq!(lines[2].find("10.0.0.8"), lines[1].find("10.0.0.7"));
    }
}
