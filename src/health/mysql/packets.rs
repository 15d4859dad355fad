//! Health flow, MySQL check, packets: framing, the packet reader and checked
//! field reads. Every server byte is untrusted: a length past a cap, a field
//! running past its packet or a packet out of sequence is an error with a
//! clear reason, never a panic or an unbounded buffer.

use std::fmt;

/// Largest server payload the check takes. A greeting, an error or a column
/// definition is a few hundred bytes; a `SHOW REPLICA STATUS` row with a
/// long GTID set or error text a few KiB.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The COM_QUIT command packet.
pub const QUIT: [u8; 5] = [1, 0, 0, 0, 0x01];

pub use super::text::{clean_text, MAX_TEXT};

/// Frames `payload` as one packet with sequence number `seq`.
pub fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len().min(0xff_ffff) as u32;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_le_bytes()[..3]);
    out.push(seq);
    out.extend_from_slice(payload);
    out
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
#[derive(Default)]
pub struct PacketReader {
    buf: Vec<u8>,
}

impl PacketReader {
    pub fn new() -> PacketReader {
        PacketReader::default()
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
        let Some(&[a, b, c, seq]) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = usize::from(a) | usize::from(b) << 8 | usize::from(c) << 16;
        if len > MAX_PAYLOAD {
            return Err(TooLong(len));
        }
        let Some(payload) = self.buf.get(4..4 + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.buf.drain(..4 + len);
        Ok(Some(Packet { seq, payload }))
    }
}

/// A field that runs past the end of its packet (what was being read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncated(pub &'static str);

/// Checked reads over one payload.
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(buf: &'a [u8]) -> Cursor<'a> {
        Cursor { buf }
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What is left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Truncated> {
        if n > self.buf.len() {
            return Err(Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, Truncated> {
        let (&b, tail) = self.buf.split_first().ok_or(Truncated(what))?;
        self.buf = tail;
        Ok(b)
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, Truncated> {
        let b = self.bytes(2, what)?;
        Ok(u16::from(b.first().copied().unwrap_or(0)) | u16::from(b.get(1).copied().unwrap_or(0)) << 8)
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, Truncated> {
        let lo = u32::from(self.u16(what)?);
        Ok(lo | u32::from(self.u16(what)?) << 16)
    }

    /// Bytes up to a NUL (which is skipped); all that is left when no NUL
    /// ends them.
    pub fn nul_bytes(&mut self) -> &'a [u8] {
        match self.buf.iter().position(|&b| b == 0) {
            Some(i) => {
                let (head, tail) = self.buf.split_at(i);
                self.buf = tail.get(1..).unwrap_or_default();
                head
            }
            None => self.rest(),
        }
    }

    /// A length-encoded integer; `None` for the NULL marker (0xfb).
    pub fn lenenc(&mut self, what: &'static str) -> Result<Option<u64>, Truncated> {
        let n = match self.u8(what)? {
            0xfb => return Ok(None),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            // 0xff is never a length: an error packet where a value belongs.
            0xff => return Err(Truncated(what)),
            b => return Ok(Some(u64::from(b))),
        };
        let bytes = self.bytes(n, what)?;
        Ok(Some(bytes.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b))))
    }

    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<Option<&'a [u8]>, Truncated> {
        match self.lenenc(what)? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| Truncated(what))?;
                self.bytes(n, what).map(Some)
            }
        }
    }
}

/// An ERR packet: the server's error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub code: u16,
    pub message: String,
}

impl ServerError {
    /// Parses an ERR payload (0xff first). A short or odd one still gives
    /// what it holds: the check fails either way, the message is a bonus.
    pub fn parse(payload: &[u8]) -> ServerError {
        let mut c = Cursor::new(payload.get(1..).unwrap_or_default());
        let Ok(code) = c.u16("error code") else {
            return ServerError {
                code: 0,
                message: String::new(),
            };
        };
        let mut rest = c.rest();
        // Protocol 4.1: `#` and a five-character SQL state.
        if rest.first() == Some(&b'#') {
            rest = rest.get(6..).unwrap_or_default();
        }
        let message = clean_text(rest).trim().to_string();
        ServerError { code, message }
    }
}

impl fmt::Display for ServerError {
    /// The message with its first letter lowercased, as a reason reads
    /// (`access denied for user ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.message.chars();
        match chars.next() {
            Some(first) => write!(f, "{}{}", first.to_lowercase(), chars.as_str()),
            None => write!(f, "error {}", self.code),
        }
    }
}

/// An EOF packet (0xfe, shorter than 9 bytes): ends column definitions and rows.
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xfe) && payload.len() < 9
}

pub fn is_err(payload: &[u8]) -> bool {
    payload.first() == Some(&0xff)
}

pub fn is_ok(payload: &[u8]) -> bool {
    payload.first() == Some(&0x00)
}

#[cfg(test)]
#[path = "packets_tests.rs"]
mod tests;
