//! Health flow, MySQL check, packets: framing, the reader over split and
//! packed bytes, checked field reads and server text cleaning.

use super::*;
use crate::rng::Rng;

fn packet(seq: u8, payload: &[u8]) -> Packet {
    Packet {
        seq,
        payload: payload.to_vec(),
    }
}

#[test]
fn frames_and_parses() {
    let f = frame(3, b"abc");
    assert_eq!(f, [3, 0, 0, 3, b'a', b'b', b'c']);
    let mut r = PacketReader::new();
    r.extend(&f);
    assert_eq!(r.next_packet(), Ok(Some(packet(3, b"abc"))));
    assert_eq!(r.next_packet(), Ok(None));
    assert!(r.is_empty());
}

#[test]
fn reader_waits_for_truncated_packets() {
    let f = frame(1, b"hello");
    for cut in 0..f.len() {
        let mut r = PacketReader::new();
        r.extend(&f[..cut]);
        assert_eq!(r.next_packet(), Ok(None), "cut at {cut}");
    }
}

#[test]
fn reader_joins_split_packets_byte_by_byte_and_keeps_what_follows() {
    let mut bytes = frame(0, b"first");
    bytes.extend(frame(1, b""));
    bytes.extend(frame(2, &[7u8; 300]));
    let mut r = PacketReader::new();
    let mut got = Vec::new();
    for b in &bytes {
        r.extend(std::slice::from_ref(b));
        while let Some(p) = r.next_packet().unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got, [packet(0, b"first"), packet(1, b""), packet(2, &[7u8; 300])]);
    assert!(r.is_empty());
    let mut r = PacketReader::new();
    r.extend(&[frame(5, b"one"), frame(6, b"two"), frame(7, b"three")[..4].to_vec()].concat());
    assert_eq!(r.next_packet(), Ok(Some(packet(5, b"one"))));
    assert_eq!(r.next_packet(), Ok(Some(packet(6, b"two"))));
    assert_eq!(r.next_packet(), Ok(None));
    r.extend(b"three");
    assert_eq!(r.next_packet(), Ok(Some(packet(7, b"three"))));
}

#[test]
fn reader_rejects_oversized_packets_from_the_header_alone() {
    let mut r = PacketReader::new();
    r.extend(&[0xff, 0xff, 0xff, 0]);
    assert_eq!(r.next_packet(), Err(TooLong(0xff_ffff)));
    let len = MAX_PAYLOAD + 1;
    let mut r = PacketReader::new();
    r.extend(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, 0]);
    assert_eq!(r.next_packet(), Err(TooLong(len)));
    let mut r = PacketReader::new();
    r.extend(&frame(0, &vec![1u8; MAX_PAYLOAD]));
    assert_eq!(r.next_packet().unwrap().unwrap().payload.len(), MAX_PAYLOAD);
}

#[test]
fn reader_survives_random_bytes_and_never_holds_more_than_a_packet_and_a_read() {
    let mut rng = Rng::with_seed(1);
    for _ in 0..300 {
        let mut r = PacketReader::new();
        for _ in 0..50 {
            let chunk: Vec<u8> = (0..rng.below(4096)).map(|_| rng.next_u64() as u8).collect();
            r.extend(&chunk);
            while let Ok(Some(_)) = r.next_packet() {}
            assert!(r.buf.len() <= 4 + MAX_PAYLOAD + 4096);
            if r.next_packet().is_err() {
                break;
            }
        }
    }
}

#[test]
fn cursor_reads_are_checked() {
    let mut c = Cursor::new(&[1, 2, 3]);
    assert_eq!(c.u16("x"), Ok(0x0201));
    assert_eq!(c.u16("y"), Err(Truncated("y")));
    assert_eq!(c.u8("z"), Ok(3));
    assert_eq!(c.u8("z"), Err(Truncated("z")));
    let mut c = Cursor::new(&[0xfc, 0x01, 0x01, 0xfb, 0x02, b'h', b'i', 0xfe, 1]);
    assert_eq!(c.lenenc("a"), Ok(Some(0x0101)));
    assert_eq!(c.lenenc_bytes("b"), Ok(None));
    assert_eq!(c.lenenc_bytes("c"), Ok(Some(&b"hi"[..])));
    assert_eq!(c.lenenc("d"), Err(Truncated("d")));
    // A length far past the packet, and one past usize on 32-bit.
    let lying = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, b'x'];
    assert_eq!(Cursor::new(&lying).lenenc_bytes("e"), Err(Truncated("e")));
    assert_eq!(Cursor::new(&[0xff]).lenenc("f"), Err(Truncated("f")));
    let mut c = Cursor::new(b"abc\0def");
    assert_eq!(c.nul_bytes(), b"abc");
    assert_eq!(c.nul_bytes(), b"def");
    assert!(c.is_empty());
}

#[test]
fn server_errors_read_as_reasons_and_are_cleaned() {
    let e = ServerError::parse(b"\xff\x15\x04#28000Access denied for user 'x'@'127.0.0.1' (using password: YES)");
    assert_eq!(e.code, 1045);
    assert_eq!(
        e.to_string(),
        "access denied for user 'x'@'127.0.0.1' (using password: YES)"
    );
    // Pre-4.1 errors have no SQL state; broken ones give what they hold.
    assert_eq!(
        ServerError::parse(b"\xff\x10\x04Too many connections").to_string(),
        "too many connections"
    );
    assert_eq!(ServerError::parse(b"\xff").to_string(), "error 0");
    assert_eq!(ServerError::parse(b"\xff\x01").to_string(), "error 0");
    let hostile =
        ServerError::parse(&[b"\xff\x01\x00evil\r\nFAKE LOG LINE\x1b[31m".as_slice(), &[b'x'; 5000]].concat());
    let text = hostile.to_string();
    assert!(!text.contains(['\r', '\n', '\x1b']), "{text:?}");
    assert!(text.chars().count() <= MAX_TEXT + 3, "{}", text.len());
    assert_eq!(clean_text(b"ok \xff"), "ok \u{fffd}");
}

#[test]
fn packet_kinds() {
    assert!(is_eof(&[0xfe, 0, 0, 2, 0]) && !is_eof(&[0xfe; 9]) && !is_eof(&[]));
    assert!(is_err(&[0xff]) && !is_err(&[0]));
    assert!(is_ok(&[0]) && !is_ok(&[]));
}
