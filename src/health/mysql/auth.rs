//! Health flow, MySQL check, login data: the greeting parsed, the
//! HandshakeResponse41 built, auth-switch requests parsed, and the password
//! turned into what each plugin wants: the `mysql_native_password` (SHA-1)
//! and `caching_sha2_password` (SHA-256) scrambles, and the RSA-OAEP
//! encrypted password of caching_sha2's full authentication (to a key
//! checked by [`RsaKey`]). Plugins that would send the password in clear
//! are refused. All the cryptography is RustCrypto's (`sha1`, `sha2`, `rsa`).

use sha1::{Digest, Sha1};
use sha2::Sha256;

use crate::config::RsaKey;

use super::packets::{clean_text, frame, Cursor, Truncated};

pub const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
/// Largest packet the client announces it accepts.
const MAX_PACKET: u32 = 16 * 1024 * 1024;
const CHARSET_UTF8: u8 = 0x21;
/// Bytes of the server's nonce the scrambles use.
pub const NONCE_LEN: usize = 20;

pub const NATIVE: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";
/// Plugins whose client side sends the password as it is: MySQL's
/// `mysql_clear_password` (LDAP, PAM) and MariaDB's `dialog` (PAM).
pub const CLEARTEXT: [&[u8]; 2] = [b"mysql_clear_password", b"dialog"];

/// What the server's greeting says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    pub version: String,
    pub capabilities: u32,
    /// The auth plugin data (the nonce), its trailing NUL dropped.
    pub nonce: Vec<u8>,
    /// The server's default auth plugin (empty when not announced).
    pub plugin: Vec<u8>,
}

/// Parses a protocol 10 greeting (its first byte, 0x0a, included).
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, Truncated> {
    let mut c = Cursor::new(payload);
    c.u8("greeting")?;
    let version = clean_text(c.nul_bytes());
    c.u32("greeting: connection id")?;
    let mut nonce = c.bytes(8, "greeting: nonce")?.to_vec();
    c.u8("greeting: filler")?;
    let mut capabilities = u32::from(c.u16("greeting: capabilities")?);
    let mut plugin = Vec::new();
    if !c.is_empty() {
        c.u8("greeting: charset")?;
        c.u16("greeting: status")?;
        capabilities |= u32::from(c.u16("greeting: capabilities")?) << 16;
        let data_len = usize::from(c.u8("greeting: nonce length")?);
        c.bytes(10, "greeting: reserved")?;
        if capabilities & CLIENT_SECURE_CONNECTION != 0 {
            let part2 = data_len.saturating_sub(8).max(13);
            nonce.extend_from_slice(c.bytes(part2, "greeting: nonce")?);
        }
        if capabilities & CLIENT_PLUGIN_AUTH != 0 {
            plugin = c.nul_bytes().to_vec();
        }
    }
    if nonce.last() == Some(&0) {
        nonce.pop();
    }
    Ok(Greeting {
        version,
        capabilities,
        nonce,
        plugin,
    })
}

/// An auth-switch request (0xfe first): the plugin and its nonce. A bare
/// 0xfe is the pre-4.1 request for `mysql_old_password`.
pub fn parse_auth_switch(payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if payload.len() <= 1 {
        return (b"mysql_old_password".to_vec(), Vec::new());
    }
    let mut c = Cursor::new(payload.get(1..).unwrap_or_default());
    let plugin = c.nul_bytes().to_vec();
    let mut nonce = c.rest().to_vec();
    if nonce.last() == Some(&0) {
        nonce.pop();
    }
    (plugin, nonce)
}

/// The HandshakeResponse41 packet: `user`, the auth data for `plugin`.
/// Capabilities the server lacks are not claimed.
pub fn handshake_response(seq: u8, server_caps: u32, user: &str, plugin: &[u8], auth: &[u8]) -> Vec<u8> {
    let plugin_auth = server_caps & CLIENT_PLUGIN_AUTH;
    let caps = CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | plugin_auth;
    let mut p = Vec::with_capacity(96 + user.len());
    p.extend_from_slice(&caps.to_le_bytes());
    p.extend_from_slice(&MAX_PACKET.to_le_bytes());
    p.push(CHARSET_UTF8);
    p.extend_from_slice(&[0u8; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    let auth = auth.get(..auth.len().min(255)).unwrap_or_default();
    p.push(auth.len() as u8);
    p.extend_from_slice(auth);
    if plugin_auth != 0 {
        p.extend_from_slice(plugin);
        p.push(0);
    }
    frame(seq, &p)
}

/// Why the password could not be turned into auth data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// A plugin this client does not speak (its name).
    Unsupported(String),
    /// A plugin that would send the password in clear (its name).
    Cleartext(String),
    /// The server's nonce is shorter than the scramble needs.
    ShortNonce,
}

/// The first auth data for `plugin`: its scramble of the password (empty
/// for an empty password). A plugin that wants the password in clear is
/// refused whatever the password: never a byte of it leaves.
pub fn auth_data(plugin: &[u8], password: &str, nonce: &[u8]) -> Result<Vec<u8>, AuthError> {
    if CLEARTEXT.contains(&plugin) {
        return Err(AuthError::Cleartext(clean_text(plugin)));
    }
    if password.is_empty() {
        return Ok(Vec::new());
    }
    let nonce = nonce.get(..NONCE_LEN).ok_or(AuthError::ShortNonce)?;
    match plugin {
        NATIVE => Ok(scramble_native(password.as_bytes(), nonce).to_vec()),
        CACHING_SHA2 => Ok(scramble_caching_sha2(password.as_bytes(), nonce).to_vec()),
        other => Err(AuthError::Unsupported(clean_text(other))),
    }
}

/// `mysql_native_password`: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))).
pub fn scramble_native(password: &[u8], nonce: &[u8]) -> [u8; 20] {
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(stage2);
    let mask: [u8; 20] = h.finalize().into();
    xor(stage1, &mask)
}

/// `caching_sha2_password`: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce).
pub fn scramble_caching_sha2(password: &[u8], nonce: &[u8]) -> [u8; 32] {
    let p1: [u8; 32] = Sha256::digest(password).into();
    let p2: [u8; 32] = Sha256::digest(p1).into();
    let mut h = Sha256::new();
    h.update(p2);
    h.update(nonce);
    let mask: [u8; 32] = h.finalize().into();
    xor(p1, &mask)
}

fn xor<const N: usize>(mut a: [u8; N], b: &[u8; N]) -> [u8; N] {
    a.iter_mut().zip(b).for_each(|(x, y)| *x ^= y);
    a
}

/// caching_sha2 full authentication without TLS: (password + NUL) XOR the
/// nonce (repeated), encrypted to `key` with OAEP padding, SHA-1 for the
/// hash and MGF1 as MySQL's OpenSSL does. `key` is pinned or, with the
/// opt-in, the server's, already parsed and checked.
pub fn encrypt_password(key: &RsaKey, password: &str, nonce: &[u8]) -> Result<Vec<u8>, &'static str> {
    let nonce = nonce.get(..NONCE_LEN).ok_or("server nonce too short")?;
    let mut msg = password.as_bytes().to_vec();
    msg.push(0);
    for (b, n) in msg.iter_mut().zip(nonce.iter().cycle()) {
        *b ^= n;
    }
    key.key()
        .oaep_encrypt::<Sha1>(&msg)
        .map_err(|_| "RSA encryption of the password failed (password too long for the key?)")
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
