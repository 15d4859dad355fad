//! Test harness, scripted MySQL 8 server: a thread on 127.0.0.1:0 that
//! greets, authenticates the way it is told (mysql_native_password,
//! caching_sha2 fast path, caching_sha2 full path over RSA with the fixture
//! key, an auth switch to native, or an ERR greeting), checks the password
//! itself, answers the role queries from a shared [`Db`] state and counts
//! clean quits and aborted sessions, as a real server would. In full
//! authentication it also plays the rogue: it records every key request,
//! every packet the client answers with, and every password it could
//! decrypt; it may send another key than its own ([`Db::served_key`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use super::Backend;

/// The test key pair (`openssl genpkey -algorithm RSA -pkeyopt
/// rsa_keygen_bits:2048`, then `openssl pkey -pubout`); a key for tests only.
pub const PRIVATE_PEM: &str = include_str!("../fixtures/mysql_rsa_private.pem");
pub const PUBLIC_PEM: &str = include_str!("../fixtures/mysql_rsa_public.pem");

const CAPS: u32 = 0x0000_0001 | 0x0000_0200 | 0x0000_8000 | 0x0008_0000;

/// How the server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Native,
    /// caching_sha2, the password in the server's cache: 0x01 0x03, OK.
    Fast,
    /// caching_sha2, not cached: 0x01 0x04, public key, RSA.
    Full,
    /// Greets with caching_sha2, then switches the client to native.
    SwitchToNative,
    /// Answers the connect with ERR 1040.
    TooManyConnections,
}

/// The server's state, shared with the test.
#[derive(Debug, Clone)]
pub struct Db {
    pub auth: Auth,
    pub user: String,
    pub password: String,
    pub read_only: bool,
    /// Replica status row: (IO running, SQL running, Seconds_Behind); `None`: not a replica.
    pub replica: Option<(&'static str, &'static str, Option<u64>)>,
    /// Answer ERR to `SHOW REPLICA STATUS` (older servers).
    pub old_syntax: bool,
    /// Full authentication: the PEM sent on a key request instead of
    /// [`PUBLIC_PEM`] (whose private half this server holds).
    pub served_key: Option<String>,
    /// Full authentication: key requests (0x02) received.
    pub key_requests: usize,
    /// Full authentication: what the client sent in place of the password
    /// (the RSA block, or whatever else).
    pub full_auth_answers: Vec<Vec<u8>>,
    /// Passwords this server decrypted (with [`PRIVATE_PEM`]): what a
    /// rogue server holding the key it sends learns.
    pub learned: Vec<String>,
    pub logins: usize,
    pub denied: usize,
    pub quits: usize,
    /// Sessions closed by the client without COM_QUIT (after the greeting).
    pub aborted: usize,
    pub queries: Vec<String>,
}

impl Db {
    pub fn new(auth: Auth, user: &str, password: &str) -> Db {
        Db {
            auth,
            user: user.into(),
            password: password.into(),
            read_only: false,
            replica: None,
            old_syntax: false,
            served_key: None,
            key_requests: 0,
            full_auth_answers: Vec::new(),
            learned: Vec::new(),
            logins: 0,
            denied: 0,
            quits: 0,
            aborted: 0,
            queries: Vec::new(),
        }
    }
}

/// A scripted server and its state.
pub struct Server {
    pub backend: Backend,
    pub db: Arc<Mutex<Db>>,
}

impl Server {
    pub fn spawn(db: Db) -> Server {
        let db = Arc::new(Mutex::new(db));
        let shared = db.clone();
        let backend = Backend::spawn(move |s| serve(s, &shared));
        Server { backend, db }
    }

    pub fn db(&self) -> std::sync::MutexGuard<'_, Db> {
        self.db.lock().unwrap()
    }
}

/// Frames one packet.
pub fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    p.extend_from_slice(payload);
    p
}

/// A protocol 10 greeting announcing `plugin`, with a 20-byte `nonce`.
pub fn greeting(plugin: &str, nonce: &[u8; 20]) -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(b"8.0.36-scripted\0\x07\0\0\0");
    p.extend_from_slice(&nonce[..8]);
    p.push(0);
    p.extend_from_slice(&(CAPS as u16).to_le_bytes());
    p.extend_from_slice(&[0x21, 2, 0]);
    p.extend_from_slice(&((CAPS >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0u8; 10]);
    p.extend_from_slice(&nonce[8..]);
    p.push(0);
    p.extend_from_slice(plugin.as_bytes());
    p.push(0);
    p
}

pub fn err_payload(code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#HY000");
    p.extend_from_slice(msg.as_bytes());
    p
}

const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

/// Reads one packet: (seq, payload); `None` at end of stream.
pub fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 4];
    s.read_exact(&mut head).ok()?;
    let len = head[0] as usize | (head[1] as usize) << 8 | (head[2] as usize) << 16;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).ok()?;
    Some((head[3], body))
}

/// Serves one connection.
fn serve(mut s: TcpStream, db: &Mutex<Db>) {
    let cfg = db.lock().unwrap().clone();
    if cfg.auth == Auth::TooManyConnections {
        let _ = s.write_all(&packet(0, &err_payload(1040, "Too many connections")));
        return;
    }
    let nonce: [u8; 20] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11) | 1);
    let plugin = if cfg.auth == Auth::Native {
        "mysql_native_password"
    } else {
        "caching_sha2_password"
    };
    if s.write_all(&packet(0, &greeting(plugin, &nonce))).is_err() {
        return;
    }
    match authenticate(&mut s, &cfg, db, &nonce) {
        Some(true) => db.lock().unwrap().logins += 1,
        Some(false) => {
            db.lock().unwrap().denied += 1;
            return;
        }
        None => {
            db.lock().unwrap().aborted += 1;
            return;
        }
    }
    commands(&mut s, db);
}

/// Runs the login; `Some(ok)` once decided, `None` when the client left.
fn authenticate(s: &mut TcpStream, db: &Db, state: &Mutex<Db>, nonce: &[u8; 20]) -> Option<bool> {
    use easyproxy::health::mysql::auth::{scramble_caching_sha2, scramble_native};
    let (seq, login) = read_packet(s)?;
    let user_end = 32 + login[32..].iter().position(|&b| b == 0)?;
    let user = String::from_utf8_lossy(&login[32..user_end]).to_string();
    let len = *login.get(user_end + 1)? as usize;
    let data = login.get(user_end + 2..user_end + 2 + len)?.to_vec();
    let pw = db.password.as_bytes();
    let mut seq = seq + 1;
    let ok = match db.auth {
        Auth::Native => data == scramble_native(pw, nonce),
        Auth::Fast if data == scramble_caching_sha2(pw, nonce) => {
            s.write_all(&packet(seq, &[0x01, 0x03])).ok()?;
            seq += 1;
            true
        }
        Auth::Fast => false,
        Auth::Full => {
            let ok = full_auth(s, &mut seq, db, state, nonce)?;
            ok && data == scramble_caching_sha2(pw, nonce)
        }
        Auth::SwitchToNative => {
            let nonce2 = *b"0123456789abcdefghij";
            let switch = [&b"\xfemysql_native_password\0"[..], &nonce2, b"\0"].concat();
            s.write_all(&packet(seq, &switch)).ok()?;
            let (_, data) = read_packet(s)?;
            seq += 2;
            data == scramble_native(pw, &nonce2)
        }
        Auth::TooManyConnections => false,
    };
    let ok = ok && user == db.user;
    let reply = if ok {
        OK.to_vec()
    } else {
        let msg = format!("Access denied for user '{user}'@'127.0.0.1' (using password: YES)");
        err_payload(1045, &msg)
    };
    s.write_all(&packet(seq, &reply)).ok()?;
    Some(ok)
}

/// caching_sha2 full authentication: asks for it, sends the public key on
/// request (or takes the password encrypted to a key the client already
/// has), decrypts the password and compares; everything the client sends
/// is recorded.
fn full_auth(s: &mut TcpStream, seq: &mut u8, db: &Db, state: &Mutex<Db>, nonce: &[u8; 20]) -> Option<bool> {
    use rsa::pkcs8::DecodePrivateKey;
    s.write_all(&packet(*seq, &[0x01, 0x04])).ok()?;
    let (_, mut answer) = read_packet(s)?;
    *seq += 2;
    if answer == [0x02] {
        state.lock().unwrap().key_requests += 1;
        let pem = db.served_key.as_deref().unwrap_or(PUBLIC_PEM);
        s.write_all(&packet(*seq, &[b"\x01", pem.as_bytes()].concat())).ok()?;
        answer = read_packet(s)?.1;
        *seq += 2;
    }
    state.lock().unwrap().full_auth_answers.push(answer.clone());
    let key = rsa::PrivateKey::from_pkcs8_pem(PRIVATE_PEM).unwrap();
    let Ok(plain) = key.oaep_decrypt::<sha1::Sha1>(&answer) else {
        return Some(false);
    };
    let unmasked: Vec<u8> = plain.iter().zip(nonce.iter().cycle()).map(|(a, b)| a ^ b).collect();
    let password = unmasked.strip_suffix(b"\0").unwrap_or(&unmasked);
    state
        .lock()
        .unwrap()
        .learned
        .push(String::from_utf8_lossy(password).into_owned());
    Some(password == db.password.as_bytes())
}

/// An RSA public key of `bits` bits and exponent `e`, in PEM, whose private
/// half nobody has (a modulus of all one bits: odd, the size wanted).
pub fn crafted_pem(bits: u32, e: u64) -> String {
    use rsa::pkcs8::EncodePublicKey;
    let n = rsa::BoxedUint::from_be_slice(&vec![0xff; bits as usize / 8], bits).unwrap();
    let key = rsa::PublicKey::new_unchecked(n, rsa::BoxedUint::from(e));
    key.to_public_key_pem(rsa::pkcs8::LineEnding::LF).unwrap()
}

/// Commands after the login, until COM_QUIT or the client leaves.
fn commands(s: &mut TcpStream, db: &Mutex<Db>) {
    loop {
        let Some((_, cmd)) = read_packet(s) else {
            db.lock().unwrap().aborted += 1;
            return;
        };
        match cmd.first() {
            Some(0x01) => {
                db.lock().unwrap().quits += 1;
                return;
            }
            Some(0x03) => {
                let sql = String::from_utf8_lossy(&cmd[1..]).to_string();
                db.lock().unwrap().queries.push(sql.clone());
                let answer = answer(&sql, &db.lock().unwrap());
                for (i, p) in answer.iter().enumerate() {
                    if s.write_all(&packet(i as u8 + 1, p)).is_err() {
                        return;
                    }
                }
            }
            _ => {
                let _ = s.write_all(&packet(1, &err_payload(1047, "Unknown command")));
            }
        }
    }
}

fn lenenc(out: &mut Vec<u8>, v: Option<&str>) {
    match v {
        Some(v) => {
            out.push(v.len() as u8);
            out.extend_from_slice(v.as_bytes());
        }
        None => out.push(0xfb),
    }
}

/// A text result set's packets.
pub fn result_set(columns: &[&str], rows: &[Vec<Option<String>>]) -> Vec<Vec<u8>> {
    let eof = vec![0xfe, 0, 0, 2, 0];
    let mut out = vec![vec![columns.len() as u8]];
    for c in columns {
        let mut p = Vec::new();
        for f in ["def", "", "", "", c, c] {
            lenenc(&mut p, Some(f));
        }
        p.extend_from_slice(&[0x0c, 0x21, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        out.push(p);
    }
    out.push(eof.clone());
    for r in rows {
        let mut p = Vec::new();
        r.iter().for_each(|v| lenenc(&mut p, v.as_deref()));
        out.push(p);
    }
    out.push(eof);
    out
}

/// The answer to one query, from the state.
fn answer(sql: &str, db: &Db) -> Vec<Vec<u8>> {
    let s = |v: &str| Some(v.to_string());
    let on = |b: bool| s(if b { "ON" } else { "OFF" });
    if sql.starts_with("SHOW GLOBAL VARIABLES") {
        let rows = vec![
            vec![s("read_only"), on(db.read_only)],
            vec![s("super_read_only"), on(false)],
            vec![s("innodb_read_only"), on(false)],
        ];
        return result_set(&["Variable_name", "Value"], &rows);
    }
    if sql == "SHOW REPLICA STATUS" && db.old_syntax {
        return vec![err_payload(1064, "You have an error in your SQL syntax")];
    }
    if sql == "SHOW REPLICA STATUS" || sql == "SHOW SLAVE STATUS" {
        let rows: Vec<_> = db
            .replica
            .iter()
            .map(|(io, sql, lag)| vec![s(io), s(sql), lag.map(|l| l.to_string())])
            .collect();
        return result_set(
            &["Slave_IO_Running", "Slave_SQL_Running", "Seconds_Behind_Master"],
            &rows,
        );
    }
    vec![err_payload(1064, "You have an error in your SQL syntax")]
}
