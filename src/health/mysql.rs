//! The MySQL/MariaDB health check's packets: log in as a passwordless user
//! and quit, so the server sees a clean session instead of an aborted
//! connection (which it counts towards `max_connect_errors` and which would
//! end with the proxy's address blocked).

/// Client capability flags sent: long password, protocol 4.1, secure
/// connection (length-prefixed auth data), plugin auth.
const CAPABILITIES: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_8000 | 0x0008_0000;
const MAX_PACKET: u32 = 16 * 1024 * 1024;
const CHARSET_UTF8: u8 = 0x21;

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

/// One complete packet at the start of `buf`: (sequence, payload, bytes used).
pub fn packet(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = buf.get(..4)?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let payload = buf.get(4..4 + len)?;
    Some((header[3], payload, 4 + len))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_parses() {
        let f = frame(3, b"abc");
        assert_eq!(f, [3, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(packet(&f), Some((3, &b"abc"[..], 7)));
        assert_eq!(packet(&f[..5]), None);
        assert_eq!(packet(&[]), None);
    }

    #[test]
    fn handshake_layout() {
        let h = handshake_response("check", 1);
        let (seq, p, _) = packet(&h).unwrap();
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
}
