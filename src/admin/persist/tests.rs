//! Unit tests of the state file: written atomically and durably, read back,
//! foreign files never written over, a FIFO never waited on.

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

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Waits for the report of write `seq`.
fn wait_done(store: &mut Store, seq: u64) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Some(d) = store.reports(Instant::now()).into_iter().find(|d| d.seq == seq) {
            return d.result;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no report for write {seq}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn restored(path: &Path) -> State {
    let mut s = state();
    Store::new(Some(path), None).load(START_WAIT).restore(&mut s);
    s
}

#[test]
fn settings_survive_a_write_and_a_read() {
    let d = dir("roundtrip");
    let path = d.join("easyproxy.state");
    let mut s = state();
    backend(&mut s, 0).admin = AdminState::Drain;
    backend(&mut s, 1).weight_override = Some(7);
    let mut store = Store::new(Some(&path), None);
    assert!(store.load(START_WAIT).0.is_none());
    let seq = store.write(contents(&s, None), Instant::now()).unwrap();
    assert!(store.busy());
    wait_done(&mut store, seq).unwrap();
    assert!(!store.busy());
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"easyproxy_state\": 1"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!d.join(".easyproxy.state.tmp").exists());

    let mut fresh = restored(&path);
    assert_eq!(backend(&mut fresh, 0).admin, AdminState::Drain);
    assert_eq!(backend(&mut fresh, 1).effective_weight(), 7);
    assert_eq!(backend(&mut fresh, 1).admin, AdminState::Ready);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_file_is_written_with_a_change_not_made_yet() {
    let s = state();
    let text = String::from_utf8(contents(
        &s,
        Some(&Override {
            service: 0,
            backend: 1,
            admin: AdminState::Maint,
            weight: Some(9),
        }),
    ))
    .unwrap();
    assert!(text.contains("\"backend\": \"127.0.0.1:2\""), "{text}");
    assert!(text.contains("\"admin_state\": \"maint\""), "{text}");
    assert!(text.contains("\"weight\": 9"), "{text}");
    assert!(!text.contains("127.0.0.1:1"), "{text}");
    let mut s = s;
    assert_eq!(backend(&mut s, 1).admin, AdminState::Ready);
}

#[test]
fn corrupt_foreign_and_missing_files_are_not_restored() {
    let d = dir("bad");
    for text in [
        "{not json",
        "{\"something\": \"else\"}",
        "{\"easyproxy_state\": 99, \"backends\": []}",
        "",
    ] {
        let path = d.join("state");
        std::fs::write(&path, text).unwrap();
        let mut s = restored(&path);
        assert_eq!(backend(&mut s, 0).admin, AdminState::Ready, "{text}");
    }
    restored(&d.join("missing"));
    // Entries for backends no longer configured, or out of range, are skipped.
    let path = d.join("partly");
    std::fs::write(
        &path,
        r#"{"easyproxy_state":1,"backends":[{"service":"db","backend":"127.0.0.1:9","admin_state":"maint"},
        {"service":"db","backend":"127.0.0.1:1","admin_state":"maint","weight":999},
        {"service":"db","backend":"127.0.0.1:2","admin_state":"maint"}]}"#,
    )
    .unwrap();
    let mut s = restored(&path);
    assert_eq!(backend(&mut s, 0).admin, AdminState::Ready);
    assert_eq!(backend(&mut s, 1).admin, AdminState::Maint);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_foreign_file_is_never_written_over_until_it_is_gone() {
    let d = dir("foreign");
    let path = d.join("config.toml");
    let original = "[[service]]\nname = \"x\"\n";
    std::fs::write(&path, original).unwrap();
    let mut s = state();
    backend(&mut s, 0).admin = AdminState::Drain;
    let mut store = Store::new(Some(&path), None);
    store.load(START_WAIT);
    let seq = store.write(contents(&s, None), Instant::now()).unwrap();
    let e = wait_done(&mut store, seq).unwrap_err();
    assert!(e.contains("not an easyproxy state file"), "{e}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), original);
    // Removed: written again.
    std::fs::remove_file(&path).unwrap();
    let seq = store.write(contents(&s, None), Instant::now()).unwrap();
    wait_done(&mut store, seq).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("drain"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn fifos_block_neither_the_read_nor_a_write() {
    let d = dir("fifo");
    let path = d.join("state");
    mkfifo(&path);
    let mut s = state();
    let start = Instant::now();
    let mut store = Store::new(Some(&path), None);
    store.load(START_WAIT);
    assert!(!store.busy(), "the read of a FIFO is done at once");
    let seq = store.write(contents(&s, None), Instant::now()).unwrap();
    let e = wait_done(&mut store, seq).unwrap_err();
    assert!(e.contains("is a FIFO"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // A FIFO at the temporary name is removed; the write goes on.
    let path = d.join("s2");
    let tmp = temp_path(&path).unwrap();
    assert_eq!(tmp, d.join(".s2.tmp"));
    mkfifo(&tmp);
    backend(&mut s, 1).admin = AdminState::Maint;
    let mut store = Store::new(Some(&path), None);
    let seq = store.write(contents(&s, None), Instant::now()).unwrap();
    wait_done(&mut store, seq).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("maint"));
    assert!(!tmp.exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_write_that_cannot_be_made_reports_why_and_keeps_the_old_file() {
    let d = dir("unwritable");
    let not_dir = d.join("file");
    std::fs::write(&not_dir, "x").unwrap();
    let mut store = Store::new(Some(&not_dir.join("state")), None);
    let seq = store.write(contents(&state(), None), Instant::now()).unwrap();
    let e = wait_done(&mut store, seq).unwrap_err();
    assert!(e.contains("Not a directory"), "{e}");
    assert_eq!(std::fs::read_to_string(&not_dir).unwrap(), "x");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_write_given_up_on_marks_the_settings_to_be_written_again() {
    let d = dir("late");
    let path = d.join("s");
    let mut store = Store::new(Some(&path), None);
    let t0 = Instant::now();
    let seq = store.write(contents(&state(), None), t0).unwrap();
    assert_eq!(store.deadline(), Some(t0 + WRITE_WAIT));
    store.give_up(t0 + WRITE_WAIT / 2, false);
    assert!(!store.stuck(), "before its deadline");
    store.give_up(t0 + WRITE_WAIT, false);
    assert!(store.stuck());
    assert_eq!(store.deadline(), None);
    // Its late report is not handed out, and the file is to be written again.
    let start = Instant::now();
    while store.busy() {
        assert!(store.reports(Instant::now()).iter().all(|d| d.seq != seq));
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!store.stuck());
    assert!(store.dirty());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn exit_writes_what_is_marked() {
    let d = dir("exit");
    let path = d.join("s");
    let mut s = state();
    backend(&mut s, 0).weight_override = Some(200);
    let mut store = Store::new(None, None);
    store.set_path(Some(&path));
    assert!(store.dirty());
    store.finish(&s);
    let mut fresh = restored(&path);
    assert_eq!(backend(&mut fresh, 0).effective_weight(), 200);
    std::fs::remove_dir_all(&d).unwrap();
}
