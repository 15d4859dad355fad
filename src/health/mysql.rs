//! Health flow, MySQL login: the packets and the login's steps, without any
//! socket. The check logs in as a passwordless user and quits, so the server
//! sees a clean session instead of an aborted connection (which it counts
//! towards `max_connect_errors` and which would end with the proxy's address
//! blocked).

use crate::balance::health::CheckResult;

/// Client capability flags sent: long password, protocol 4.1, secure
/// connection (length-prefixed auth data), plugin auth.
const CAPABILITIES: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_8000 | 0x0008_0000;
/// Largest packet the client announces it accepts.
const MAX_PACKET: u32 = 16 * 1024 * 1024;
const CHARSET_UTF8: u8 = 0x21;
/// Largest server payload the check reads: a greeting, an auth switch or an
/// error message is a few hundred bytes at most.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// Auth-switch requests answered in one login; a server asking for more is
/// broken or hostile, and the check fails.
pub const MAX_AUTH_SWITCHES: u8 = 2;

/// The COM_QUIT command packet.
pub const QUIT: [u8; 5] = [1, 0, 0, 0, 0x01];

/// Frames `payload` as one packet with sequence number `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(0xff_ffff) as u32;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
}

/// The HandshakeResponse41 packet for `user` with an empty password.
pub fn handshake_response(user: &str, seq: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(64 + user.len());
    p.extend_from_slice(&CAPABILITIES.to_le_bytes());
    p.extend_from_slice(&MAX_PACKET.to_le_bytes());
    p.push(CHARSET_UTF8);
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(0); // auth response length: no password
    p.extend_from_slice(b"mysql_native_password\0");
    frame(seq, &p)
}

/// One server packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    pub seq: u8,
    pub payload: Vec<u8>,
}

/// A packet announced longer than [`MAX_PAYLOAD`] (its length).
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong(pub usize);

/// Collects server bytes and cuts them into packets. Bytes may arrive split
/// anywhere, or several packets in one read: what follows a packet stays
/// for the next one. Holds at most one packet plus one read.
pub struct PacketReader {
    buf: Vec<u8>,
}

impl PacketReader {
    pub fn new() -> PacketReader {
        PacketReader { buf: Vec::new() }
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether any bytes are held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes the next complete packet off the front, if there is one.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, TooLong> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
        if len > MAX_PAYLOAD {
            return Err(TooLong(len));
        }
        let seq = header[3];
        let Some(payload) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(Packet { seq, payload }))
    }
}

impl Default for PacketReader {
    fn default() -> PacketReader {
        PacketReader::new()
    }
}

/// What the first byte of a server packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Protocol 10 greeting.
    Greeting,
    Ok,
    /// The server wants another auth method: answer with empty data.
    AuthSwitch,
    Error,
    Other,
}

pub fn classify(payload: &[u8]) -> Reply {
    match payload.first() {
        Some(0x0a) => Reply::Greeting,
        Some(0x00) => Reply::Ok,
        Some(0xfe) => Reply::AuthSwitch,
        Some(0xff) => Reply::Error,
        _ => Reply::Other,
    }
}

/// Where a login is: waiting for the greeting, for the answer to the login
/// (or to an auth switch), or done once COM_QUIT is out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Auth,
    Quit,
}

/// The login's steps: each server packet gets the bytes to send back, or
/// decides the check.
pub struct Login {
    step: Step,
    auth_switches: u8,
}

impl Login {
    pub fn new() -> Login {
        Login {
            step: Step::Greeting,
            auth_switches: 0,
        }
    }

    /// Whether the last bytes handed out were COM_QUIT: once they are
    /// written, the check passed.
    pub fn quitting(&self) -> bool {
        self.step == Step::Quit
    }

    /// The answer to one server packet, or the check's (failed) result.
    pub fn on_packet(&mut self, packet: &Packet, user: &str) -> Result<Vec<u8>, CheckResult> {
        let next_seq = packet.seq.wrapping_add(1);
        match (self.step, classify(&packet.payload)) {
            (Step::Greeting, Reply::Greeting) => {
                self.step = Step::Auth;
                Ok(handshake_response(user, next_seq))
            }
            (Step::Auth, Reply::Ok) => {
                self.step = Step::Quit;
                Ok(QUIT.to_vec())
            }
            (Step::Auth, Reply::AuthSwitch) if self.auth_switches >= MAX_AUTH_SWITCHES => {
                Err(CheckResult::Protocol("too many auth switches"))
            }
            (Step::Auth, Reply::AuthSwitch) => {
                self.auth_switches += 1;
                Ok(frame(next_seq, &[]))
            }
            _ => Err(CheckResult::UnexpectedReply),
        }
    }
}

impl Default for Login {
    fn default() -> Login {
        Login::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reader_joins_split_packets_byte_by_byte() {
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
    }

    #[test]
    fn reader_keeps_what_follows_a_packet() {
        let mut bytes = frame(5, b"one");
        bytes.extend(frame(6, b"two"));
        bytes.extend(&frame(7, b"three")[..4]);
        let mut r = PacketReader::new();
        r.extend(&bytes);
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
    fn reader_survives_arbitrary_bytes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            let mut r = PacketReader::new();
            for _ in 0..50 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let chunk: Vec<u8> = (0..(x % 16) as usize).map(|i| (x >> (i % 8 * 8)) as u8).collect();
                r.extend(&chunk);
                while let Ok(Some(_)) = r.next_packet() {}
            }
        }
    }

    #[test]
    fn handshake_layout() {
        let h = handshake_response("check", 1);
        let mut r = PacketReader::new();
        r.extend(&h);
        let Packet { seq, payload: p } = r.next_packet().unwrap().unwrap();
        assert_eq!(seq, 1);
        assert_eq!(&p[..4], &CAPABILITIES.to_le_bytes());
        assert_eq!(p[8], CHARSET_UTF8);
        assert_eq!(&p[32..38], b"check\0");
        assert_eq!(p[38], 0);
        assert_eq!(&p[39..], b"mysql_native_password\0");
    }

    #[test]
    fn classifies_replies() {
        assert_eq!(classify(&[0x0a, 1]), Reply::Greeting);
        assert_eq!(classify(&[0x00]), Reply::Ok);
        assert_eq!(classify(&[0xfe]), Reply::AuthSwitch);
        assert_eq!(classify(&[0xff]), Reply::Error);
        assert_eq!(classify(&[]), Reply::Other);
    }

    #[test]
    fn login_answers_the_greeting_and_quits_after_ok() {
        let mut l = Login::new();
        let out = l.on_packet(&packet(0, b"\x0a5.7"), "u").unwrap();
        assert_eq!(out, handshake_response("u", 1));
        assert!(!l.quitting());
        assert_eq!(l.on_packet(&packet(2, b"\xfe"), "u").unwrap(), frame(3, &[]));
        assert_eq!(l.on_packet(&packet(2, b"\x00\x00"), "u").unwrap(), QUIT);
        assert!(l.quitting());
    }

    #[test]
    fn login_allows_a_few_auth_switches_only() {
        let mut l = Login::new();
        l.on_packet(&packet(0, b"\x0a"), "u").unwrap();
        for i in 0..MAX_AUTH_SWITCHES {
            assert!(l.on_packet(&packet(2 + 2 * i, b"\xfe"), "u").is_ok());
        }
        assert_eq!(
            l.on_packet(&packet(9, b"\xfe"), "u"),
            Err(CheckResult::Protocol("too many auth switches"))
        );
    }

    #[test]
    fn login_rejects_packets_out_of_place() {
        let mut l = Login::new();
        assert_eq!(l.on_packet(&packet(0, b"\x00"), "u"), Err(CheckResult::UnexpectedReply));
        let mut l = Login::new();
        l.on_packet(&packet(0, b"\x0a"), "u").unwrap();
        assert_eq!(
            l.on_packet(&packet(2, b"\xff\x15\x04denied"), "u"),
            Err(CheckResult::UnexpectedReply)
        );
        assert_eq!(l.on_packet(&packet(2, b""), "u"), Err(CheckResult::UnexpectedReply));
    }
}
