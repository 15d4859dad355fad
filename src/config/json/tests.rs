//! Tests of the EasyProxy JSON front-end: JSON text in, a [`Config`] and its equivalent TOML, or every problem, out.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::is_json;
use crate::config::{Config, Strategy};

/// The original EasyProxy `conf/default.json`.
const SAMPLE: &str = r#"{"service": "mysql service", "host": "127.0.0.1", "port": 9527, "webport": 7259,
 "strategy": "poll", "heartbeat": 60, "maxprocessor": 1,
 "backends": [{"host": "11.239.169.230", "port": 3306}]}"#;

fn sample() -> Value {
    serde_json::from_str(SAMPLE).unwrap()
}

/// The sample with `key` set to `v` (`Value::Null` removes it).
fn with(key: &str, v: Value) -> String {
    let mut s = sample();
    if v.is_null() {
        s.as_object_mut().unwrap().remove(key);
    } else {
        s[key] = v;
    }
    s.to_string()
}

/// Parses, checks that the TOML gives the same configuration, returns both.
fn parse(text: &str) -> (Config, String) {
    let (config, toml) = Config::parse_json(text).unwrap();
    let again = Config::parse(&toml).unwrap_or_else(|e| panic!("{e:?}\n{toml}"));
    assert_eq!(
        Config {
            warnings: Vec::new(),
            ..config.clone()
        },
        again,
        "{toml}"
    );
    (config, toml)
}

/// The problems, one per line.
fn problems(text: &str) -> String {
    Config::parse_json(text).unwrap_err().join("\n")
}

#[test]
fn the_sample_file_runs_unchanged() {
    let (c, toml) = parse(SAMPLE);
    let s = &c.services[0];
    assert_eq!(s.name, "mysql-service");
    assert_eq!(s.listen.to_string(), "127.0.0.1:9527");
    assert_eq!(s.strategy, Strategy::RoundRobin);
    let hc = s.health_check.as_ref().unwrap();
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(60), Duration::from_secs(1))
    );
    assert_eq!(s.backends.len(), 1);
    assert_eq!(s.backends[0].address, "11.239.169.230:3306");
    assert_eq!(c.stats.as_ref().unwrap().listen.to_string(), "127.0.0.1:7259");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("service: \"mysql service\" is named \"mysql-service\""));
    assert!(toml.starts_with("# equivalent easyproxy.toml\n"), "{toml}");
    assert!(toml.contains("strategy = \"round_robin\""), "{toml}");
    assert!(toml.contains("interval_ms = 60000\ntimeout_ms = 1000"), "{toml}");
}

#[test]
fn each_key() {
    let (c, _) = parse(&with("service", Value::Null));
    assert_eq!(c.services[0].name, "service");
    assert!(c.warnings.is_empty());
    let (c, _) = parse(&with("host", json!("::1")));
    assert_eq!(c.services[0].listen.to_string(), "[::1]:9527");
    assert_eq!(c.stats.unwrap().listen.to_string(), "[::1]:7259");
    assert_eq!(parse(&with("webport", Value::Null)).0.stats, None);
    for (name, st) in [("random", Strategy::Random), ("iphash", Strategy::IpHash)] {
        assert_eq!(parse(&with("strategy", json!(name))).0.services[0].strategy, st);
    }
    assert_eq!(parse(&with("heartbeat", Value::Null)).0.services[0].health_check, None);
    let (c, toml) = parse(&with("heartbeat", json!(0)));
    assert_eq!(c.services[0].health_check, None);
    assert!(toml.contains("# heartbeat = 0"), "{toml}");
    let hc = parse(&with("heartbeat", json!(5))).0.services[0]
        .health_check
        .clone()
        .unwrap();
    assert_eq!(
        (hc.interval, hc.timeout),
        (Duration::from_secs(5), Duration::from_secs(1))
    );
    let (c, toml) = parse(&with("maxprocessor", json!(4)));
    assert!(
        c.warnings.iter().any(|w| w.starts_with("maxprocessor: 4 accepted")),
        "{:?}",
        c.warnings
    );
    assert!(toml.contains("# maxprocessor = 4"), "{toml}");
    let backends =
        json!([{"host": "localhost", "port": 1}, {"host": "::1", "port": 2}, {"port": 3, "host": "10.0.0.1"}]);
    let (c, _) = parse(&with("backends", backends));
    let b = &c.services[0].backends;
    assert_eq!(
        (b[0].address.as_str(), b[0].addr.to_string()),
        ("localhost:1", "127.0.0.1:1".into())
    );
    assert_eq!(b[1].address, "[::1]:2");
    assert_eq!(b[2].address, "10.0.0.1:3");
}

#[test]
fn unknown_and_repeated_keys_are_errors() {
    let e = problems(&with("maxprocesor", json!(2)));
    assert!(
        e.contains("maxprocesor: unknown key (expected one of: service, host"),
        "{e}"
    );
    let e = problems(&with("backends", json!([{"host": "10.0.0.1", "port": 1, "weight": 2}])));
    assert_eq!(e, "backends[0].weight: unknown key (expected one of: host, port)");
    let e = problems(&SAMPLE.replace("\"port\": 9527,", "\"port\": 9527, \"port\": 9528,"));
    assert_eq!(e, "port: duplicate key");
}

#[test]
fn bad_types_name_their_key_all_at_once() {
    let mut s = sample();
    s["port"] = json!("9527");
    s["host"] = json!(127);
    s["heartbeat"] = json!(1.5);
    s["service"] = json!(["a"]);
    s["backends"] = json!([{"host": "10.0.0.1", "port": true}, 7]);
    let e = problems(&s.to_string());
    for needle in [
        "service: expected a string, found a list",
        "host: expected a string, found a whole number",
        "port: expected a whole number, found a string",
        "heartbeat: expected a whole number, found a floating-point number",
        "backends[0].port: expected a whole number, found true/false",
        "backends[1]: expected an object, found a whole number",
    ] {
        assert!(e.contains(needle), "{needle:?} in {e}");
    }
    assert_eq!(e.lines().count(), 6, "{e}");
    let e = problems(&with("backends", json!({"host": "10.0.0.1", "port": 1})));
    assert_eq!(e, "backends: expected a list, found an object");
    assert_eq!(problems("[1]"), "file: expected a JSON object, found a list");
    assert!(
        problems("{\"port\": }").starts_with("line 1, column 10: "),
        "{}",
        problems("{\"port\": }")
    );
}

#[test]
fn missing_keys_and_bad_hosts() {
    assert_eq!(problems("{}"), "host: missing\nport: missing\nbackends: missing");
    // Validation runs once every key has the right type, as after TOML parsing.
    assert_eq!(
        problems("{\"host\": null, \"port\": 1, \"backends\": []}"),
        "host: missing"
    );
    assert_eq!(
        problems(&with("backends", json!([]))),
        "backends: a service needs at least one [[service.backend]]"
    );
    let e = problems(&with("host", json!("localhost")));
    assert_eq!(e, "host: \"localhost\" is not an IP address (the address to listen on)");
    let e = problems(&with(
        "backends",
        json!([{"host": "", "port": 1}, {"host": "a:b", "port": 1}, {"port": 1}]),
    ));
    assert_eq!(
        e,
        "backends[0].host: must not be empty\nbackends[1].host: \"a:b\" is not a host name or IP address\nbackends[2].host: missing"
    );
}

#[test]
fn bad_strategy_is_named() {
    let e = problems(&with("strategy", json!("fastest")));
    assert!(e.starts_with("strategy: unknown strategy \"fastest\""), "{e}");
}

#[test]
fn ports_out_of_range() {
    for (key, v) in [("port", json!(0)), ("port", json!(65536)), ("webport", json!(-1))] {
        let e = problems(&with(key, v.clone()));
        assert_eq!(e, format!("{key}: {v} is out of range (1..=65535)"));
    }
    let e = problems(&with("backends", json!([{"host": "10.0.0.1", "port": 70000}])));
    assert_eq!(e, "backends[0].port: 70000 is out of range (1..=65535)");
    let e = problems(&with("heartbeat", json!(31_536_001)));
    assert_eq!(e, "heartbeat: 31536001 is out of range (0..=31536000)");
}

#[test]
fn validation_problems_name_the_json_key() {
    let e = problems(&with("webport", json!(9527)));
    assert!(e.starts_with("port: 127.0.0.1:9527 is already used by [stats]"), "{e}");
    let twice = json!([{"host": "10.0.0.1", "port": 1}, {"host": "10.0.0.1", "port": 1}]);
    assert_eq!(
        problems(&with("backends", twice)),
        "backends[1]: duplicate backend \"10.0.0.1:1\""
    );
    let own = json!([{"host": "127.0.0.1", "port": 9527}]);
    assert!(problems(&with("backends", own)).starts_with("backends: backend \"127.0.0.1:9527\" is the service's own"));
}

#[test]
fn service_names_are_mapped_to_valid_ones() {
    for (given, name) in [
        ("mysql service", "mysql-service"),
        ("db/primary #1", "dbprimary-1"),
        ("ünï", "n"),
        ("!!!", "service"),
        ("", "service"),
        ("ok_name-1.0", "ok_name-1.0"),
    ] {
        let (c, _) = parse(&with("service", json!(given)));
        assert_eq!(c.services[0].name, name, "{given:?}");
        assert_eq!(
            c.warnings.len(),
            usize::from(given != name),
            "{given:?}: {:?}",
            c.warnings
        );
    }
    let (c, _) = parse(&with("service", json!("x".repeat(100))));
    assert_eq!(c.services[0].name, "x".repeat(64));
    let (c, toml) = parse(&with("service", json!("a \"quoted\" \\ name")));
    assert_eq!(c.services[0].name, "a-quoted--name");
    assert!(toml.contains("name = \"a-quoted--name\""), "{toml}");
}

#[test]
fn json_is_told_by_name_or_first_character() {
    assert!(is_json(Path::new("conf/default.json"), ""));
    assert!(is_json(Path::new("x.JSON"), "[global]"));
    assert!(is_json(Path::new("easyproxy.toml"), "\u{feff} \n\t{\"host\": 1}"));
    assert!(!is_json(Path::new("easyproxy.toml"), "# {\n[global]"));
    assert!(!is_json(Path::new("json"), ""));
}

#[test]
fn a_huge_service_name_makes_a_short_warning() {
    let long = "x y".repeat(300_000);
    let text = format!(
        r#"{{"service": "{long}", "host": "127.0.0.1", "port": 9527, "backends": [{{"host": "127.0.0.1", "port": 3306}}]}}"#
    );
    let (c, _) = crate::Config::parse_json(&text).unwrap();
    let w = &c.warnings[0];
    assert!(w.len() < 400, "{} bytes", w.len());
    assert!(w.contains("(900000 bytes in all)"), "{w}");
}

#[test]
fn more_backends_than_the_cap_are_refused_before_conversion() {
    let n = crate::config::MAX_BACKENDS + 1;
    let one = r#"{"host": "127.0.0.1", "port": 3306}"#;
    let list = vec![one; n].join(",");
    let text = format!(r#"{{"service": "db", "host": "127.0.0.1", "port": 9527, "backends": [{list}]}}"#);
    let e = crate::Config::parse_json(&text).unwrap_err();
    assert_eq!(e, vec![format!("too many backends: {n} (at most 50000 per file)")]);
}
