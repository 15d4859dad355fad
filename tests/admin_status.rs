//! `GET /v1/status` answers from the stats cache: a flood renders once per
//! window, and a change (here an admin drain) shows at once.

mod common;

use common::admin::*;
use common::*;

#[test]
fn status_is_shared_within_the_window_and_a_drain_shows_at_once() {
    let echo = Backend::echo();
    let files = AdminFiles::new();
    let text = files
        .config("", &[(echo.addr, "")])
        .replace("cache_ms = 0", "cache_ms = 600000");
    let p = Running::start(&text);
    let first = status(&p);
    let total = first["connections"]["total"].clone();
    // A relayed connection changes counters, not state: the answer stays
    // the shared one (rendered afresh every time, it would count it).
    let mut c = connect(p.addr("svc"));
    assert_eq!(roundtrip(&mut c, b"x"), b"x");
    drop(c);
    for _ in 0..50 {
        assert_eq!(status(&p)["connections"]["total"], total, "the shared answer");
    }
    // An admin change renders afresh at once.
    set_state(&p, echo.addr, "drain");
    let after = status(&p);
    assert_eq!(backend(&after, echo.addr)["admin_state"], "drain");
    assert_ne!(after["connections"]["total"], total);
}
