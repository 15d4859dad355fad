//! Health flow, MySQL check, test helpers: server packets built by hand
//! (greeting, ERR, OK, EOF, result sets) and health checks to run them on.

use std::sync::Arc;

use crate::config::{HealthCheck, MysqlServerKey, PinnedKey, Role, RsaKey, Secret};

use super::auth::{CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION};

/// The test key: `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`
/// then `openssl pkey -pubout` (tests/fixtures; a key for tests only).
pub const PRIVATE_PEM: &str = include_str!("../../../tests/fixtures/mysql_rsa_private.pem");
pub const PUBLIC_PEM: &str = include_str!("../../../tests/fixtures/mysql_rsa_public.pem");
pub const NONCE: [u8; 20] = *b"abcdefghijklmnopqrst";
pub const OK: &[u8] = &[0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00];
pub const EOF: &[u8] = &[0xfe, 0x00, 0x00, 0x02, 0x00];

/// A MySQL 8 style greeting announcing `plugin`.
pub fn greeting(plugin: &[u8], nonce: &[u8; 20]) -> Vec<u8> {
    let caps: u32 = 0x0000_0001 | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    let mut p = vec![0x0a];
    p.extend_from_slice(b"8.0.36-test\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(&nonce[..8]);
    p.push(0);
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0u8; 10]);
    p.extend_from_slice(&nonce[8..]);
    p.push(0);
    p.extend_from_slice(plugin);
    p.push(0);
    p
}

pub fn err(code: u16, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#28000");
    p.extend_from_slice(message.as_bytes());
    p
}

/// A length-encoded string.
pub fn lenenc(out: &mut Vec<u8>, s: &[u8]) {
    match s.len() {
        n if n < 251 => out.push(n as u8),
        n if n < 1 << 16 => {
            out.push(0xfc);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        n => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        }
    }
    out.extend_from_slice(s);
}

pub fn column(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for f in [&b"def"[..], b"", b"", b"", name.as_bytes(), name.as_bytes()] {
        lenenc(&mut p, f);
    }
    p.extend_from_slice(&[0x0c, 0x21, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    p
}

pub fn row(values: &[Option<&str>]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in values {
        match v {
            Some(v) => lenenc(&mut p, v.as_bytes()),
            None => p.push(0xfb),
        }
    }
    p
}

/// The packets of a text result set (column count .. final EOF).
pub fn result_set(columns: &[&str], rows: &[&[Option<&str>]]) -> Vec<Vec<u8>> {
    let mut out = vec![vec![columns.len() as u8]];
    out.extend(columns.iter().map(|c| column(c)));
    out.push(EOF.to_vec());
    out.extend(rows.iter().map(|r| row(r)));
    out.push(EOF.to_vec());
    out
}

/// `SHOW GLOBAL VARIABLES` for read_only (and super_read_only when given).
pub fn variables(read_only: &str, super_read_only: Option<&str>) -> Vec<Vec<u8>> {
    let mut rows: Vec<[Option<&str>; 2]> = vec![[Some("read_only"), Some(read_only)]];
    if let Some(s) = super_read_only {
        rows.push([Some("super_read_only"), Some(s)]);
    }
    let rows: Vec<&[Option<&str>]> = rows.iter().map(|r| &r[..]).collect();
    result_set(&["Variable_name", "Value"], &rows)
}

/// A replica status row (MySQL 8 column names).
pub fn replica_status(io: &str, sql: &str, lag: Option<&str>) -> Vec<Vec<u8>> {
    result_set(
        &[
            "Replica_IO_State",
            "Replica_IO_Running",
            "Replica_SQL_Running",
            "Seconds_Behind_Source",
        ],
        &[&[Some(""), Some(io), Some(sql), lag]],
    )
}

pub fn hc(password: &str, role: Option<Role>) -> HealthCheck {
    HealthCheck {
        mysql_user: Some("check".into()),
        mysql_password: Secret::new(password),
        role,
        ..HealthCheck::default()
    }
}

/// The test key, parsed and checked.
pub fn rsa_key() -> RsaKey {
    RsaKey::from_pem(PUBLIC_PEM.as_bytes()).unwrap()
}

/// The test key pinned, as `mysql_server_public_key_file` would.
pub fn pinned() -> MysqlServerKey {
    MysqlServerKey::Pinned(Arc::new(PinnedKey {
        path: "tests/fixtures/mysql_rsa_public.pem".into(),
        key: rsa_key(),
    }))
}

/// `hc`, with `key` for full authentication.
pub fn hc_key(password: &str, role: Option<Role>, key: MysqlServerKey) -> HealthCheck {
    HealthCheck {
        mysql_server_key: key,
        ..hc(password, role)
    }
}
