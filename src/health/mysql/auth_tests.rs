//! Health flow, MySQL check, login data tests: known-answer scrambles from an
//! independent implementation, greeting and auth-switch parsing, the login
//! packet's layout, and the RSA-encrypted password decrypted again.

use super::*;
use crate::health::mysql::packets::PacketReader;
use crate::health::mysql::testutil::{self, PRIVATE_PEM};

/// Known answers computed with PyMySQL 2.2.8 (`pip install pymysql`):
/// `pymysql._auth.scramble_native_password(password, nonce).hex()` and
/// `pymysql._auth.scramble_caching_sha2(password, nonce).hex()`.
/// (password, nonce, native, caching_sha2), all hex but the password.
const PYMYSQL_VECTORS: [(&[u8], &str, &str, &str); 3] = [
    (
        b"secret",
        "0102030405060708090a0b0c0d0e0f1011121314",
        "b32bb3a583e1340c0a1108d58b1be49781ad8c2f",
        "746ebe205d56a0707acb3e796e834e0dd7b1d61743b26bd5202c7a623230c7c9",
    ),
    (
        b"hunter2",
        "6162636465666768696a6b6c6d6e6f7071727374",
        "fb30830c3ec1c2161c75ef8c45977d684a38d8d4",
        "38c32b38723affcda57b368b565bac628d5a852428b402c25c4ae036a4fd904f",
    ),
    (
        "p\u{e4}ss w0rd!".as_bytes(),
        "7f01553a1022334455667711234567790a0b0c0d",
        "6908107856ab164bd6893df95368ffa106ee8a6e",
        "ced188e6ea6bef4b5db5c38232e597be4e904e6cced194bd40af9f95dffdab6e",
    ),
];

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn scrambles_match_pymysql() {
    for (password, nonce, native, sha2) in PYMYSQL_VECTORS {
        let nonce = hex(nonce);
        assert_eq!(scramble_native(password, &nonce).to_vec(), hex(native));
        assert_eq!(scramble_caching_sha2(password, &nonce).to_vec(), hex(sha2));
    }
}

#[test]
fn auth_data_per_plugin() {
    let n = testutil::NONCE;
    assert_eq!(auth_data(NATIVE, "", &n), Ok(Vec::new()));
    assert_eq!(auth_data(b"client_ed25519", "", &n), Ok(Vec::new()));
    assert_eq!(auth_data(NATIVE, "pw", &n).unwrap().len(), 20);
    assert_eq!(auth_data(CACHING_SHA2, "pw", &n).unwrap().len(), 32);
    assert_eq!(
        auth_data(b"sha256_password", "pw", &n),
        Err(AuthError::Unsupported("sha256_password".into()))
    );
    // Plugins that want the password in clear: refused, even when empty.
    for plugin in ["mysql_clear_password", "dialog"] {
        for pw in ["pw", ""] {
            assert_eq!(
                auth_data(plugin.as_bytes(), pw, &n),
                Err(AuthError::Cleartext(plugin.into()))
            );
        }
    }
    // A hostile plugin name is cleaned before any reason shows it.
    assert_eq!(
        auth_data(b"evil\xe2\x80\xae\n", "pw", &n),
        Err(AuthError::Unsupported("evil??".into()))
    );
    assert_eq!(auth_data(NATIVE, "pw", &n[..19]), Err(AuthError::ShortNonce));
}

#[test]
fn greetings_parse_and_truncated_ones_say_where() {
    let p = testutil::greeting(CACHING_SHA2, &testutil::NONCE);
    let g = parse_greeting(&p).unwrap();
    assert_eq!(g.version, "8.0.36-test");
    assert_eq!(g.nonce, testutil::NONCE);
    assert_eq!(g.plugin, CACHING_SHA2);
    assert_ne!(g.capabilities & CLIENT_PROTOCOL_41, 0);
    // Cut anywhere before the plugin name, it is short; except right
    // after the low capability bits, where pre-4.1 greetings end.
    for cut in (0..p.len() - CACHING_SHA2.len() - 1).filter(|&c| c != 28) {
        assert!(parse_greeting(&p[..cut]).is_err(), "cut at {cut}");
    }
    // A pre-4.1 greeting stops after the low capability bits.
    let old = parse_greeting(b"\x0a4.0\0\x01\0\0\0abcdefgh\0\x00\x00").unwrap();
    assert_eq!((old.capabilities, old.nonce.as_slice()), (0, &b"abcdefgh"[..]));
}

#[test]
fn auth_switch_requests_parse() {
    let (plugin, nonce) = parse_auth_switch(b"\xfemysql_native_password\0abcdefghijklmnopqrst\0");
    assert_eq!((plugin.as_slice(), nonce.as_slice()), (NATIVE, &testutil::NONCE[..]));
    assert_eq!(parse_auth_switch(b"\xfe").0, b"mysql_old_password");
    assert_eq!(parse_auth_switch(b"\xfecaching_sha2_password").1, b"");
}

#[test]
fn handshake_layout() {
    let h = handshake_response(1, 0xffff_ffff, "check", NATIVE, &[9u8; 20]);
    let mut r = PacketReader::new();
    r.extend(&h);
    let packet = r.next_packet().unwrap().unwrap();
    let p = packet.payload;
    assert_eq!(packet.seq, 1);
    let caps = u32::from_le_bytes(p[..4].try_into().unwrap());
    assert_eq!(
        caps,
        CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
    );
    assert_eq!(p[8], CHARSET_UTF8);
    assert_eq!(&p[32..38], b"check\0");
    assert_eq!(p[38], 20);
    assert_eq!(&p[39..59], &[9u8; 20]);
    assert_eq!(&p[59..], b"mysql_native_password\0");
    // No plugin name to a server without plugin auth.
    let h = handshake_response(1, CLIENT_PROTOCOL_41, "u", NATIVE, &[]);
    assert_eq!(&h[4 + 32..], b"u\0\0");
}

#[test]
fn the_encrypted_password_decrypts_to_password_nul_xor_nonce() {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
    let public = testutil::rsa_key();
    let nonce = testutil::NONCE;
    let password = "a password longer than the twenty-byte nonce";
    let enc = encrypt_password(&public, password, &nonce).unwrap();
    assert_eq!(enc.len(), 256);
    let plain = key.oaep_decrypt::<Sha1>(&enc).unwrap();
    let unmasked: Vec<u8> = plain.iter().zip(nonce.iter().cycle()).map(|(a, b)| a ^ b).collect();
    assert_eq!(unmasked, [password.as_bytes(), b"\0"].concat());
    // OAEP is randomised.
    assert_ne!(enc, encrypt_password(&public, password, &nonce).unwrap());
}

#[test]
fn long_passwords_and_short_nonces_fail_cleanly() {
    let key = testutil::rsa_key();
    let n = testutil::NONCE;
    assert_eq!(key.max_password(), 213);
    assert!(encrypt_password(&key, &"x".repeat(213), &n).is_ok());
    assert!(encrypt_password(&key, &"x".repeat(214), &n).is_err());
    assert!(encrypt_password(&key, "pw", &n[..10]).is_err());
}
