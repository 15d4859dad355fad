//! Configuration tests over whole files: text in, a [`Config`] or the list of problems out.

use std::time::Duration;

use super::*;

const MIN: &str = r#"
[[service]]
name = "a"
listen = "127.0.0.1:0"
[[service.backend]]
address = "127.0.0.1:1"
"#;

#[test]
fn minimal_defaults() {
    let c = Config::parse(MIN).unwrap();
    assert_eq!(c.global.max_connections, 10000);
    assert_eq!(c.global.buffer_size, 16384);
    let s = &c.services[0];
    assert_eq!(s.strategy, Strategy::RoundRobin);
    assert_eq!(s.retries, 2);
    assert_eq!(s.backlog, 1024);
    assert_eq!(s.idle_timeout, Some(Duration::from_secs(3600)));
    assert_eq!(s.backends[0].weight, 1);
}

#[test]
fn overlapping_listen_addresses_are_errors() {
    let two = |a: &str, b: &str| {
        format!(
            "[[service]]\nname = \"a\"\nlisten = \"{a}\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n\
             [[service]]\nname = \"b\"\nlisten = \"{b}\"\n[[service.backend]]\naddress = \"127.0.0.1:1\"\n"
        )
    };
    for (a, b) in [
        ("127.0.0.1:9000", "127.0.0.1:9000"),
        ("0.0.0.0:9000", "127.0.0.1:9000"),
        ("127.0.0.2:9000", "0.0.0.0:9000"),
        ("[::]:9000", "[::1]:9000"),
    ] {
        let e = Config::parse(&two(a, b)).unwrap_err().join("\n");
        assert!(e.contains("is already used by service \"a\""), "{a} {b}: {e}");
    }
    for (a, b) in [
        ("127.0.0.1:9000", "127.0.0.2:9000"),
        ("127.0.0.1:9000", "127.0.0.1:9001"),
        ("127.0.0.1:0", "127.0.0.1:0"),
        ("0.0.0.0:0", "127.0.0.1:0"),
    ] {
        assert!(Config::parse(&two(a, b)).is_ok(), "{a} {b}");
    }
    let stats = format!(
        "[stats]\nlisten = \"0.0.0.0:9000\"\n{}",
        two("127.0.0.1:9000", "127.0.0.1:9001")
    );
    let e = Config::parse(&stats).unwrap_err().join("\n");
    assert!(e.contains("is already used by [stats]"), "{e}");
}

#[test]
fn backlog_is_bounded() {
    let with = |v: &str| {
        MIN.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:0\"\nbacklog = {v}"),
        )
    };
    assert_eq!(Config::parse(&with("16")).unwrap().services[0].backlog, 16);
    for bad in ["0", "65536", "-1"] {
        let e = Config::parse(&with(bad)).unwrap_err().join("\n");
        assert!(e.contains("backlog"), "{bad}: {e}");
    }
}

#[test]
fn aliases() {
    assert_eq!(Strategy::parse("poll"), Some(Strategy::RoundRobin));
    assert_eq!(Strategy::parse("iphash"), Some(Strategy::IpHash));
    assert_eq!(Strategy::parse("nope"), None);
}

#[test]
fn unknown_key_has_position() {
    let e = Config::parse(&format!("{MIN}\nbogus = 1\n")).unwrap_err();
    assert!(e[0].contains("line"), "{e:?}");
    assert!(e[0].contains("bogus"), "{e:?}");
}

#[test]
fn zero_weight_and_bad_strategy_are_named() {
    let text = MIN
        .replace("address = \"127.0.0.1:1\"", "address = \"127.0.0.1:1\"\nweight = 0")
        .replace(
            "listen = \"127.0.0.1:0\"",
            "listen = \"127.0.0.1:0\"\nstrategy = \"fastest\"",
        );
    let e = Config::parse(&text).unwrap_err();
    assert!(e.iter().any(|p| p.contains("weight")), "{e:?}");
    assert!(e.iter().any(|p| p.contains("strategy")), "{e:?}");
}

#[test]
fn mysql_user_excludes_send_expect() {
    let with = |extra: &str| format!("{MIN}[service.health_check]\nmysql_user = \"check\"\n{extra}");
    let c = Config::parse(&with("")).unwrap();
    assert_eq!(
        c.services[0].health_check.as_ref().unwrap().mysql_user.as_deref(),
        Some("check")
    );
    let e = Config::parse(&with("expect = \"x\"\n")).unwrap_err();
    assert!(e.iter().any(|p| p.contains("mysql_user")), "{e:?}");
}

#[test]
fn stats_allow_and_cache_ms() {
    let with = |extra: &str| format!("[stats]\nlisten = \"127.0.0.1:0\"\n{extra}\n{MIN}");
    let s = Config::parse(&with("")).unwrap().stats.unwrap();
    assert!(s.allow.is_empty(), "everyone by default");
    assert_eq!(s.cache, Duration::from_millis(1000));
    let c = Config::parse(&with("allow = [\"127.0.0.0/8\", \"::1\", \"10.1.2.3\"]\ncache_ms = 0")).unwrap();
    let s = c.stats.as_ref().unwrap();
    let allow: Vec<String> = s.allow.iter().map(|c| c.to_string()).collect();
    assert_eq!(allow, ["127.0.0.0/8", "::1/128", "10.1.2.3/32"]);
    assert_eq!(s.cache, Duration::ZERO);
    assert!(
        c.to_string()
            .contains("stats: listen 127.0.0.1:0 allow 127.0.0.0/8,::1/128,10.1.2.3/32 cache_ms 0 timeout_ms 10000"),
        "{c}"
    );
    let open = Config::parse(&with("")).unwrap().to_string();
    assert!(
        open.contains("stats: listen 127.0.0.1:0 allow any cache_ms 1000"),
        "{open}"
    );
}

#[test]
fn stats_allow_mistakes_name_their_entry() {
    let with = |extra: &str| format!("[stats]\nlisten = \"127.0.0.1:0\"\n{extra}\n{MIN}");
    let e = Config::parse(&with(
        "allow = [\"127.0.0.0/8\", \"10.0.0.1/8\", \"nope\", \"::1/200\"]",
    ))
    .unwrap_err();
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].starts_with("stats.allow[1]: \"10.0.0.1/8\"") && e[0].contains("10.0.0.0/8"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("stats.allow[2]: \"nope\": not an address block"),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("stats.allow[3]: \"::1/200\"") && e[2].contains("0 to 128"),
        "{e:?}"
    );
    let e = Config::parse(&with("allow = []")).unwrap_err();
    assert!(e[0].starts_with("stats.allow: an empty list lets nobody in"), "{e:?}");
    for (bad, key) in [
        ("allow = \"127.0.0.0/8\"", "allow"),
        ("allow = [8]", "allow"),
        ("cache_ms = -1", "cache_ms"),
        ("cache_ms = 99999999999999", "stats.cache_ms"),
    ] {
        let e = Config::parse(&with(bad)).unwrap_err().join("\n");
        assert!(e.contains(key), "{bad}: {e}");
    }
}

/// A full configuration (only literal IPs, so no DNS).
const FULL: &str = r#"
[global]
max_connections = 100
buffer_size = 4096
shutdown_timeout_ms = 100
log_level = "warn"
splice = false
[stats]
listen = "127.0.0.1:0"
timeout_ms = 100
allow = ["127.0.0.0/8", "::1"]
cache_ms = 0
[[service]]
name = "a"
listen = "127.0.0.1:0"
strategy = "ip_hash"
connect_timeout_ms = 10
idle_timeout_ms = 0
retries = 3
max_connections = 2
send_proxy = "v2"
[service.health_check]
interval_ms = 5
timeout_ms = 5
rise = 1
fall = 1
send = 'PING\r\n'
expect = '\x00+PONG'
[[service.backend]]
address = "127.0.0.1:1"
weight = 256
backup = true
max_connections = 1
[[service.backend]]
address = "[::1]:2"
"#;

/// Values put in place of a good one by [`mutate`].
const JUNK: &[&str] = &[
    "-1",
    "0",
    "18446744073709551616",
    "99999999999999999999",
    "\"\"",
    "\"x\"",
    "[",
    "]",
    "{}",
    "[[service]]",
    "true",
    "1.5",
    r"'\x'",
    r"'\xZZ'",
    "= =",
    r#""\u0000""#,
    "nan",
    "inf",
    "\"127.0.0.1:99999\"",
    "\"[::1]\"",
    "\"::1:80\"",
    "\"127.0.0.1:-1\"",
];

/// xorshift64: the same mutations on every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }
}

/// One to four line-level edits: a line removed, doubled, swapped with
/// another, or its value replaced by junk.
fn mutate(l: &mut Vec<String>, rng: &mut Xorshift) {
    for _ in 0..1 + rng.next() % 4 {
        let i = rng.next() % l.len();
        match rng.next() % 5 {
            0 => {
                l.remove(i);
            }
            1 => {
                let dup = l[i].clone();
                l.insert(i, dup);
            }
            2 => {
                let j = rng.next() % l.len();
                l.swap(i, j);
            }
            _ => {
                if let Some((k, _)) = l[i].split_once('=') {
                    l[i] = format!("{k}= {}", JUNK[rng.next() % JUNK.len()]);
                }
            }
        }
    }
}

/// Line-level mutations of a full configuration: every result must be a
/// clean Ok or Err, never a panic.
#[test]
fn mutated_files_never_panic() {
    let mut rng = Xorshift(0x1234_5678_9abc_def1);
    let mut ok = 0;
    for _ in 0..3000 {
        let mut l: Vec<String> = FULL.lines().map(|s| s.to_string()).collect();
        mutate(&mut l, &mut rng);
        if Config::parse(&l.join("\n")).is_ok() {
            ok += 1;
        }
    }
    assert!(ok > 0 && ok < 3000, "mutations should produce both outcomes ({ok} ok)");
}

#[test]
fn service_names_are_short_and_plain() {
    let named = |n: &str| MIN.replace("name = \"a\"", &format!("name = \"{n}\""));
    assert!(Config::parse(&named("db-write_1.eu")).is_ok());
    for (bad, why) in [
        ("x".repeat(65), "at most 64"),
        ("a b".to_string(), "only letters"),
        ("evil\u{202e}gnp".to_string(), "only letters"),
        ("\u{7}".to_string(), "only letters"),
        (String::new(), "must not be empty"),
    ] {
        let err = Config::parse(&named(&bad.replace('\u{7}', "\\u0007")))
            .unwrap_err()
            .join("\n");
        assert!(err.contains(why), "{bad:?}: {err}");
    }
}

#[test]
fn a_backend_at_the_own_listen_address_is_a_loop() {
    let text = MIN
        .replace("127.0.0.1:0", "127.0.0.1:9000")
        .replace("address = \"127.0.0.1:1\"", "address = \"127.0.0.1:9000\"");
    let err = Config::parse(&text).unwrap_err().join("\n");
    assert!(err.contains("own listen address"), "{err}");
}

#[test]
fn max_connections_per_ip() {
    assert_eq!(Config::parse(MIN).unwrap().services[0].max_connections_per_ip, 0);
    let text = MIN.replace("listen =", "max_connections_per_ip = 5\nlisten =");
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.services[0].max_connections_per_ip, 5);
    assert!(c.to_string().contains("max_connections_per_ip 5"), "{c}");
}

#[test]
fn many_backends_parse_without_quadratic_checks() {
    let mut text = String::from("[[service]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\n");
    for i in 0..30_000 {
        text.push_str(&format!(
            "[[service.backend]]\naddress = \"127.0.{}.{}:80\"\n",
            i / 250,
            i % 250 + 1
        ));
    }
    assert_eq!(Config::parse(&text).unwrap().services[0].backends.len(), 30_000);
    let dup = text + "[[service.backend]]\naddress = \"127.0.0.1:80\"\n";
    assert!(Config::parse(&dup)
        .unwrap_err()
        .join("\n")
        .contains("duplicate backend"));
}

#[test]
fn a_check_timeout_above_its_interval_is_a_warning() {
    let hc = |t: u64| {
        MIN.replace(
            "[[service.backend]]",
            &format!("[service.health_check]\ninterval_ms = 100\ntimeout_ms = {t}\n[[service.backend]]"),
        )
    };
    assert!(Config::parse(&hc(100)).unwrap().warnings.is_empty());
    let c = Config::parse(&hc(86_400_000)).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].contains("health_check.timeout_ms") && c.warnings[0].contains("above interval_ms"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn more_backends_than_the_cap_are_one_clear_error() {
    let mut text = String::new();
    for s in 0..2 {
        text.push_str(&format!("[[service]]\nname = \"s{s}\"\nlisten = \"127.0.0.1:0\"\n"));
        for i in 0..(crate::config::MAX_BACKENDS / 2 + 1) {
            text.push_str(&format!(
                "[[service.backend]]\naddress = \"127.0.{}.{}:{}\"\n",
                s,
                i % 250,
                1 + i / 250
            ));
        }
    }
    let e = Config::parse(&text).unwrap_err();
    assert_eq!(e, vec!["too many backends: 50002 (at most 50000 per file)".to_string()]);
}
