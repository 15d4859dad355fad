//! Step 4 of the data flow, tested: the relay state machine of a pair on scripted peers, no sockets.
//!
//! Each peer (`relay_peer.rs`) is a queue of what its reads return and a
//! write side that takes a set number of bytes and then says WouldBlock. The
//! test plays the poll: it raises a side's readiness with [`on`] (what
//! `Side::on_event` does for a mio event) and states the readiness it
//! expects afterwards as the list of flags [`ready`] gives. Buffers are 16
//! bytes and there are no pipes, so nothing is spliced.

use std::net::SocketAddr;
use std::time::Instant;

use super::DRIVE_BUDGET;
use crate::flow::session::{End, Pair, Phase, Preamble, Side};
use crate::io::buffer::{BufferPool, Pools};

#[path = "relay_peer.rs"]
mod peer;
use peer::{In, Peer};

/// What a poll event reports for one side.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ev {
    Read,
    Write,
    ReadWrite,
    /// Readable, and the peer's FIN arrived (read side closed, no error).
    Fin,
}

/// Delivers an event to a side, as `Side::on_event` does.
fn on(side: &mut Side<Peer>, ev: Ev) {
    side.readable |= ev != Ev::Write;
    side.writable |= matches!(ev, Ev::Write | Ev::ReadWrite);
    side.rdhup |= ev == Ev::Fin;
}

/// A side's remembered readiness and half-closes: the flags that are set.
fn ready(s: &Side<Peer>) -> String {
    let flags = [
        (s.readable, "readable"),
        (s.writable, "writable"),
        (s.read_eof, "read_eof"),
        (s.write_shut, "write_shut"),
    ];
    let set: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
    set.join(" ")
}

/// A pair whose backend has connected, with its pools (16-byte buffers, no
/// pipes); nothing is ready yet.
struct Net {
    p: Pair<Peer>,
    pools: Pools,
}

impl Net {
    fn new(client: Peer, backend: Peer) -> Net {
        let addr = SocketAddr::from(([192, 0, 2, 1], 40000));
        let mut p = Pair::new(1, 0, client, addr, Instant::now());
        p.server = Some(Side::new(backend));
        p.phase = Phase::Relaying;
        let pools = Pools {
            buffers: BufferPool::new(16, 4),
            pipes: None,
        };
        Net { p, pools }
    }

    fn client(&mut self) -> &mut Side<Peer> {
        &mut self.p.client
    }

    fn backend(&mut self) -> &mut Side<Peer> {
        self.p.server.as_mut().expect("the test pair has a backend")
    }

    /// One drive: the bytes moved, as [from_client, to_backend,
    /// from_backend, to_client], and whether the pair finished.
    fn drive(&mut self) -> Result<([u64; 4], bool), End> {
        let g = self.p.drive(&mut self.pools)?;
        Ok(([g.from_client, g.to_backend, g.from_backend, g.to_client], g.finished))
    }

    fn in_use(&self) -> usize {
        self.pools.buffers.in_use()
    }
}

/// `len` bytes that show any reordering or loss.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn bytes_are_relayed_both_ways_exactly() {
    let request = pattern(40);
    let response: Vec<u8> = pattern(30).iter().map(|b| b ^ 0xff).collect();
    let mut t = Net::new(Peer::new().sends(&request), Peer::new().sends(&response));
    on(t.client(), Ev::ReadWrite);
    on(t.backend(), Ev::ReadWrite);

    assert_eq!(t.drive(), Ok(([40, 40, 30, 30], false)));
    assert_eq!(t.backend().stream.written, request);
    assert_eq!(t.client().stream.written, response);
    assert_eq!([ready(t.client()), ready(t.backend())], ["writable", "writable"]);
    // 16 + 16 + 8: the short read ends it, no read only to hear WouldBlock.
    assert_eq!(t.client().stream.reads, 3);
    assert_eq!((t.p.bytes_from_client, t.p.bytes_to_client), (40, 30));
    assert_eq!(t.in_use(), 0);

    // The next arrival needs the next event.
    t.client().stream.arrive(In::Data(b"more".to_vec()));
    assert_eq!(t.drive(), Ok(([0; 4], false)));
    on(t.client(), Ev::Read);
    assert_eq!(t.drive(), Ok(([4, 4, 0, 0], false)));
    assert_eq!(t.backend().stream.written, [&request[..], b"more"].concat());
}

#[test]
fn client_closes_first() {
    let client = Peer::new().sends(b"request body").then(In::Eof);
    let mut t = Net::new(client, Peer::new().takes(5));
    on(t.client(), Ev::Fin);
    on(t.backend(), Ev::Write);

    // The backend takes 5 of the 12 bytes: no FIN while 7 wait.
    assert_eq!(t.drive(), Ok(([12, 5, 0, 0], false)));
    assert_eq!([ready(t.client()), ready(t.backend())], ["readable read_eof", ""]);
    assert_eq!(t.backend().stream.written, b"reque");
    assert!(t.backend().stream.shut_at.is_empty());
    assert_eq!(t.in_use(), 1);

    // Meanwhile the response still flows.
    t.backend().stream.arrive(In::Data(b"response".to_vec()));
    on(t.backend(), Ev::Read);
    on(t.client(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 0, 8, 8], false)));
    assert_eq!(t.client().stream.written, b"response");

    // The backend drains: the rest of the bytes (sent as last bytes), then
    // the FIN after them.
    t.backend().stream.room = usize::MAX;
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 7, 0, 0], false)));
    let b = &t.backend().stream;
    assert_eq!(
        (&b.written[..], b.last, &b.shut_at[..]),
        (&b"request body"[..], 12, &[12][..])
    );
    assert_eq!(ready(t.backend()), "writable write_shut");
    assert_eq!(t.in_use(), 0);

    // The backend closes too: finished, and the close itself sends the
    // client its FIN (no shutdown syscall just before it).
    t.backend().stream.arrive(In::Eof);
    on(t.backend(), Ev::Fin);
    assert_eq!(t.drive(), Ok(([0; 4], true)));
    assert_eq!(ready(t.client()), "readable writable read_eof write_shut");
    assert!(t.client().stream.shut_at.is_empty());
    assert_eq!(t.in_use(), 0);
}

#[test]
fn backend_closes_first() {
    let backend = Peer::new().sends(b"hello").then(In::Eof);
    let mut t = Net::new(Peer::new().takes(2), backend);
    on(t.backend(), Ev::Fin);
    on(t.client(), Ev::Write);

    assert_eq!(t.drive(), Ok(([0, 0, 5, 2], false)));
    assert_eq!(t.client().stream.written, b"he");
    assert!(t.client().stream.shut_at.is_empty());

    // The client keeps sending to the half-closed backend.
    t.client().stream.arrive(In::Data(b"more from client".to_vec()));
    on(t.client(), Ev::Read);
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Ok(([16, 16, 0, 0], false)));
    assert_eq!(t.backend().stream.written, b"more from client");

    // The client drains: the rest, then the FIN.
    t.client().stream.room = usize::MAX;
    on(t.client(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 0, 0, 3], false)));
    let c = &t.client().stream;
    assert_eq!((&c.written[..], c.last, &c.shut_at[..]), (&b"hello"[..], 5, &[5][..]));

    // The client closes too.
    t.client().stream.arrive(In::Eof);
    on(t.client(), Ev::Fin);
    assert_eq!(t.drive(), Ok(([0; 4], true)));
    assert_eq!(ready(t.backend()), "readable writable read_eof write_shut");
    assert!(t.backend().stream.shut_at.is_empty());
    assert_eq!(t.in_use(), 0);
}

#[test]
fn a_reset_is_named_after_the_side_that_failed() {
    let mut t = Net::new(Peer::new().then(In::Reset), Peer::new());
    on(t.client(), Ev::Read);
    assert_eq!(t.drive(), Err(End::ClientReset));
    assert_eq!(t.in_use(), 0, "a failed read gives its buffer back");

    let mut t = Net::new(Peer::new(), Peer::new().sends(b"partial").then(In::Reset));
    on(t.backend(), Ev::Read);
    assert_eq!(t.drive(), Ok(([0, 0, 7, 0], false)));
    // The short read used up the readiness; the next event brings the reset.
    on(t.backend(), Ev::Read);
    assert_eq!(t.drive(), Err(End::BackendReset));

    let mut t = Net::new(Peer::new().sends(b"x"), Peer::broken());
    on(t.client(), Ev::Read);
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Err(End::BackendReset));
    t.p.release_buffers(&mut t.pools);
    assert_eq!(t.in_use(), 0);

    let mut t = Net::new(Peer::broken(), Peer::new().sends(b"y"));
    on(t.backend(), Ev::Read);
    on(t.client(), Ev::Write);
    assert_eq!(t.drive(), Err(End::ClientReset));
    t.p.release_buffers(&mut t.pools);
    assert_eq!(t.in_use(), 0);
}

#[test]
fn a_full_buffer_stops_reading_and_loses_nothing() {
    let data = pattern(100);
    let mut t = Net::new(Peer::new().sends(&data), Peer::new().takes(0));
    on(t.client(), Ev::Read);
    on(t.backend(), Ev::Write);

    assert_eq!(t.drive(), Ok(([16, 0, 0, 0], false)));
    // The client's readiness is kept (84 bytes wait in its socket); the
    // backend's writability is used up.
    assert_eq!([ready(t.client()), ready(t.backend())], ["readable", ""]);
    assert_eq!((t.client().stream.reads, t.backend().stream.writes), (1, 1));
    assert_eq!(t.in_use(), 1);

    // Without a new event nothing is tried: no syscall, no progress.
    assert_eq!(t.drive(), Ok(([0; 4], false)));
    assert_eq!((t.client().stream.reads, t.backend().stream.writes), (1, 1));

    t.backend().stream.room = usize::MAX;
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Ok(([84, 100, 0, 0], false)));
    assert_eq!(t.backend().stream.written, data);
    assert_eq!(ready(t.client()), "");
    assert_eq!(t.in_use(), 0);
}

#[test]
fn the_budget_leaves_the_rest_for_the_next_call() {
    let data = pattern(DRIVE_BUDGET + 100);
    let mut t = Net::new(Peer::new().sends(&data), Peer::new());
    on(t.client(), Ev::Read);
    on(t.backend(), Ev::Write);

    let budget = DRIVE_BUDGET as u64;
    let got = t.p.drive(&mut t.pools).map(|g| (g.from_client, g.to_backend, g.again));
    assert_eq!(got, Ok((budget, budget, true)));
    assert_eq!(ready(t.client()), "readable", "the readiness is kept for the next turn");

    let got = t.p.drive(&mut t.pools).map(|g| (g.from_client, g.to_backend, g.again));
    assert_eq!(got, Ok((100, 100, false)));
    assert_eq!(ready(t.client()), "");
    assert!(t.backend().stream.written == data);
    assert_eq!(t.in_use(), 0);
}

#[test]
fn the_proxy_header_goes_before_client_bytes() {
    const HEADER: &[u8] = b"PROXY TCP4 192.0.2.1 198.51.100.7 40000 80\r\n";
    let mut t = Net::new(Peer::new().sends(b"GET /"), Peer::new().takes(10));
    t.p.phase = Phase::Connecting;
    t.p.preamble = Some(Preamble {
        bytes: HEADER.to_vec(),
        written: 0,
    });

    // Still connecting: the client's bytes wait in a buffer.
    on(t.client(), Ev::Read);
    assert_eq!(t.drive(), Ok(([5, 0, 0, 0], false)));
    assert_eq!(t.in_use(), 1);

    // Connected, but the backend takes only part of the header.
    t.p.phase = Phase::Relaying;
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 10, 0, 0], false)));
    assert_eq!(t.backend().stream.written, &HEADER[..10]);
    assert_eq!(t.p.preamble.as_ref().map(|h| h.written), Some(10));

    t.backend().stream.room = usize::MAX;
    on(t.backend(), Ev::Write);
    let rest = (HEADER.len() - 10 + 5) as u64;
    assert_eq!(t.drive(), Ok(([0, rest, 0, 0], false)));
    assert_eq!(t.backend().stream.written, [HEADER, b"GET /"].concat());
    assert!(t.p.preamble.is_none());
    assert_eq!(t.p.bytes_from_client, 5, "the header is not client data");
    assert_eq!(t.in_use(), 0);
}

#[test]
fn buffers_go_back_to_the_pool_as_each_direction_drains() {
    let mut t = Net::new(Peer::new().sends(b"up").takes(0), Peer::new().sends(b"down").takes(0));
    on(t.client(), Ev::ReadWrite);
    on(t.backend(), Ev::ReadWrite);
    assert_eq!(t.drive(), Ok(([2, 0, 4, 0], false)));
    assert_eq!(t.in_use(), 2, "one buffer per stuck direction");

    t.client().stream.room = usize::MAX;
    on(t.client(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 0, 0, 4], false)));
    assert_eq!(t.in_use(), 1);

    t.backend().stream.room = usize::MAX;
    on(t.backend(), Ev::Write);
    assert_eq!(t.drive(), Ok(([0, 2, 0, 0], false)));
    assert_eq!(t.in_use(), 0);
}
