//! Unit tests of the state file: written atomically, read back, corrupt or foreign files ignored.

use super::*;
use crate::config::Config;
use crate::state::Service;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("easyproxy-persist-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn state() -> State {
    let cfg = Config::parse(
        "[[service]]\nname = \"db\"\nlisten = \"127.0.0.1:0\"\n\
         [[service.backend]]\naddress = \"127.0.0.1:1\"\n[[service.backend]]\naddress = \"127.0.0.1:2\"\nweight = 2\n",
    )
    .unwrap();
    let now = Instant::now();
    let mut state = State::new(now);
    let l = mio::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    state.services.insert(Service::new(cfg.services[0].clone(), l, now));
    state
}

fn backend(state: &mut State, i: usize) -> &mut crate::balance::Backend {
    state
        .services
        .iter_mut()
        .next()
        .unwrap()
        .1
        .balancer
        .backends
        .get_mut(i)
        .unwrap()
}

#[test]
fn settings_survive_a_write_and_a_read() {
    let d = dir("roundtrip");
    let path = d.join("easyproxy.state");
    let mut s = state();
    backend(&mut s, 0).admin = AdminState::Drain;
    backend(&mut s, 1).weight_override = Some(7);
    let mut store = Store::new(Some(&path));
    store.save(&s);
    store.finish();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"easyproxy_state\": 1"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!d.join(".easyproxy.state.tmp").exists());

    let mut fresh = state();
    Store::new(Some(&path)).restore(&mut fresh);
    assert_eq!(backend(&mut fresh, 0).admin, AdminState::Drain);
    assert_eq!(backend(&mut fresh, 1).effective_weight(), 7);
    assert_eq!(backend(&mut fresh, 1).admin, AdminState::Ready);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn corrupt_foreign_and_missing_files_are_ignored() {
    let d = dir("bad");
    for text in [
        "{not json",
        "{\"something\": \"else\"}",
        "{\"easyproxy_state\": 99, \"backends\": []}",
        "",
    ] {
        let path = d.join("state");
        std::fs::write(&path, text).unwrap();
        let mut s = state();
        Store::new(Some(&path)).restore(&mut s);
        assert_eq!(backend(&mut s, 0).admin, AdminState::Ready, "{text}");
    }
    let mut s = state();
    Store::new(Some(&d.join("missing"))).restore(&mut s);
    // Entries for backends no longer configured, or out of range, are skipped.
    let path = d.join("partly");
    std::fs::write(
        &path,
        r#"{"easyproxy_state":1,"backends":[{"service":"db","backend":"127.0.0.1:9","admin_state":"maint"},
        {"service":"db","backend":"127.0.0.1:1","admin_state":"maint","weight":999},
        {"service":"db","backend":"127.0.0.1:2","admin_state":"maint"}]}"#,
    )
    .unwrap();
    Store::new(Some(&path)).restore(&mut s);
    assert_eq!(backend(&mut s, 0).admin, AdminState::Ready);
    assert_eq!(backend(&mut s, 1).admin, AdminState::Maint);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_latest_snapshot_wins_and_the_loop_does_not_wait() {
    let d = dir("coalesce");
    let path = d.join("s");
    let mut s = state();
    let mut store = Store::new(Some(&path));
    let start = Instant::now();
    for w in 1..=200 {
        backend(&mut s, 0).weight_override = Some(w);
        store.save(&s);
    }
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    store.finish();
    let mut fresh = state();
    Store::new(Some(&path)).restore(&mut fresh);
    assert_eq!(backend(&mut fresh, 0).effective_weight(), 200);
    std::fs::remove_dir_all(&d).unwrap();
}
