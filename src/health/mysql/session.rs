//! Health flow, MySQL check, the client session without a socket: each
//! server packet in, what to send back out. Greeting (or an ERR: too many
//! connections, host blocked), HandshakeResponse41, auth switches, caching_sha2
//! fast and full authentication, then one query at a time for the wanted
//! role, then COM_QUIT, only once authentication has finished and the last
//! answer is in (never pipelined), so the server counts no aborted
//! connection. Bounded: a few auth switches, one full authentication, a few
//! auth packets; every answer capped by the packet and result-set readers.
//!
//! The password leaves only scrambled, or in full authentication encrypted
//! to the pinned key (`mysql_server_public_key_file`) or, with
//! `mysql_get_server_public_key`, to the key the server sends. Without
//! either, or with a key refused, the session declines: it answers with a
//! byte that is neither a key request nor a password, so the server ends
//! the login with an access-denied error instead of seeing a dropped
//! handshake (which it would count towards blocking the proxy's address).

use crate::balance::health::{CheckOutcome, CheckResult};
use crate::config::{HealthCheck, MysqlServerKey, Role, RsaKey};

use super::auth::{self, AuthError, CACHING_SHA2, CLIENT_PROTOCOL_41, NATIVE};
use super::packets::{frame, is_err, Packet, ServerError};
use super::resultset::{Feed, ResultReader};
use super::role::{self, Findings, Query};

/// Auth-switch requests answered in one login; a server asking for more is
/// broken or hostile, and the check fails.
pub const MAX_AUTH_SWITCHES: u8 = 2;
/// Server packets taken between the login request and its OK.
const MAX_AUTH_PACKETS: u8 = 8;
/// Why full authentication fails without a key to encrypt the password to.
pub const NEEDS_KEY: &str = "full authentication needs the server's public key: set mysql_server_public_key_file";
/// caching_sha2's request for the server's public key.
const REQUEST_PUBLIC_KEY: u8 = 0x02;
/// The answer that declines full authentication: one byte, neither the
/// key request nor an RSA block, so the server refuses the login.
const DECLINE: [u8; 1] = [0x00];

/// What to do after a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Write these bytes, then read on.
    Send(Vec<u8>),
    /// Nothing to send: read on.
    Wait,
    /// Write COM_QUIT ([`super::QUIT`]); once it is out the check ends with this.
    Quit(CheckOutcome),
    /// The check ends now; the connection is dropped.
    Fail(CheckOutcome),
}

#[derive(Debug)]
enum Phase {
    Greeting,
    /// Waiting for the login's answer (OK, ERR, switch, more data).
    Auth,
    /// caching_sha2 full authentication: waiting for the public key.
    PublicKey,
    /// Full authentication declined (why): waiting for the server to end
    /// the login.
    Declined(String),
    /// Waiting for a query's answer.
    Query(Query, ResultReader),
    Done,
}

/// One check's MySQL session.
#[derive(Debug)]
pub struct Session {
    want: Option<Role>,
    phase: Phase,
    /// The sequence number the next server packet must carry.
    seq: u8,
    capabilities: u32,
    nonce: Vec<u8>,
    plugin: Vec<u8>,
    auth_packets: u8,
    switches: u8,
    full_auth: bool,
    /// The login's OK came.
    logged_in: bool,
    seen: Findings,
}

fn protocol(why: &'static str) -> Reply {
    Reply::Fail(CheckResult::Protocol(why).into())
}

fn login_failed(detail: String) -> Reply {
    Reply::Fail(CheckOutcome::with_detail(CheckResult::LoginFailed, detail))
}

impl Session {
    /// A session checking for `want` (`None`: logging in, plus
    /// `mysql_query` when set, is enough).
    pub fn new(want: Option<Role>) -> Session {
        Session {
            want,
            phase: Phase::Greeting,
            seq: 0,
            capabilities: 0,
            nonce: Vec::new(),
            plugin: Vec::new(),
            auth_packets: 0,
            switches: 0,
            full_auth: false,
            logged_in: false,
            seen: Findings::default(),
        }
    }

    /// Whether authentication has finished (COM_QUIT may be sent).
    pub fn authenticated(&self) -> bool {
        self.logged_in
    }

    /// The answer to one server packet.
    pub fn on_packet(&mut self, packet: &Packet, hc: &HealthCheck) -> Reply {
        if packet.seq != self.seq {
            return protocol("packets out of sequence");
        }
        self.seq = packet.seq.wrapping_add(1);
        let p = packet.payload.as_slice();
        match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::Greeting => self.greeting(p, hc),
            Phase::Declined(why) => self.declined(p, why),
            Phase::Auth | Phase::PublicKey if self.auth_packets >= MAX_AUTH_PACKETS => {
                protocol("too many auth packets")
            }
            Phase::Auth => {
                self.auth_packets += 1;
                self.auth(p, hc)
            }
            Phase::PublicKey => {
                self.auth_packets += 1;
                self.public_key(p, hc)
            }
            Phase::Query(q, reader) => self.answer(q, reader, p, hc),
            Phase::Done => protocol("packet after the end"),
        }
    }

    /// Frames `payload` as the next client packet of this exchange.
    fn send(&mut self, payload: &[u8]) -> Reply {
        let out = frame(self.seq, payload);
        self.seq = self.seq.wrapping_add(1);
        Reply::Send(out)
    }

    fn greeting(&mut self, p: &[u8], hc: &HealthCheck) -> Reply {
        if is_err(p) {
            return login_failed(ServerError::parse(p).to_string());
        }
        if p.first() != Some(&0x0a) {
            return Reply::Fail(CheckOutcome::with_detail(
                CheckResult::UnexpectedReply,
                "not a MySQL greeting",
            ));
        }
        let g = match auth::parse_greeting(p) {
            Ok(g) => g,
            Err(t) => return protocol(t.0),
        };
        if g.capabilities & CLIENT_PROTOCOL_41 == 0 {
            return protocol("server lacks protocol 4.1");
        }
        // A default plugin this client does not speak: offer the native
        // one, the server switches to what the user needs.
        let plugin = if g.plugin == CACHING_SHA2 { CACHING_SHA2 } else { NATIVE };
        let data = match auth::auth_data(plugin, hc.mysql_password.expose(), &g.nonce) {
            Ok(data) => data,
            Err(e) => return auth_error(e),
        };
        (self.capabilities, self.nonce, self.plugin) = (g.capabilities, g.nonce, plugin.to_vec());
        let user = hc.mysql_user.as_deref().unwrap_or("");
        self.phase = Phase::Auth;
        let out = auth::handshake_response(self.seq, self.capabilities, user, plugin, &data);
        self.seq = self.seq.wrapping_add(1);
        Reply::Send(out)
    }

    fn auth(&mut self, p: &[u8], hc: &HealthCheck) -> Reply {
        match p.first() {
            Some(0x00) => self.authenticated_now(hc),
            Some(0xff) => login_failed(ServerError::parse(p).to_string()),
            Some(0xfe) => self.switch(p, hc),
            Some(0x01) if self.plugin == CACHING_SHA2 => self.more_data(p, hc),
            _ => protocol("unexpected packet during login"),
        }
    }

    /// An auth-switch request: the new plugin's data from the new nonce.
    fn switch(&mut self, p: &[u8], hc: &HealthCheck) -> Reply {
        if self.switches >= MAX_AUTH_SWITCHES {
            return protocol("too many auth switches");
        }
        self.switches += 1;
        let (plugin, nonce) = auth::parse_auth_switch(p);
        let password = hc.mysql_password.expose();
        let data = match auth::auth_data(&plugin, password, &nonce) {
            Ok(data) => data,
            Err(e) => return auth_error(e),
        };
        (self.plugin, self.nonce) = (plugin, nonce);
        self.phase = Phase::Auth;
        self.send(&data)
    }

    /// caching_sha2's AuthMoreData: 0x03 fast auth passed (OK follows),
    /// 0x04 full authentication wanted: the password encrypted to the
    /// pinned key, or a request for the server's key (opt-in only), or a
    /// decline.
    fn more_data(&mut self, p: &[u8], hc: &HealthCheck) -> Reply {
        match p.get(1..) {
            Some([0x03]) => {
                self.phase = Phase::Auth;
                Reply::Wait
            }
            Some([0x04]) if self.full_auth => protocol("full authentication asked twice"),
            Some([0x04]) => {
                self.full_auth = true;
                match &hc.mysql_server_key {
                    MysqlServerKey::Pinned(pinned) => self.encrypted(&pinned.key, hc),
                    MysqlServerKey::FromServer => {
                        self.phase = Phase::PublicKey;
                        self.send(&[REQUEST_PUBLIC_KEY])
                    }
                    MysqlServerKey::Refuse => self.decline(NEEDS_KEY.to_string()),
                }
            }
            _ => protocol("unexpected auth data"),
        }
    }

    /// The server's RSA public key (0x01 + PEM), asked for with the
    /// opt-in: the encrypted password, unless the key is refused.
    fn public_key(&mut self, p: &[u8], hc: &HealthCheck) -> Reply {
        if is_err(p) {
            return login_failed(ServerError::parse(p).to_string());
        }
        let Some((0x01, pem)) = p.split_first().map(|(a, b)| (*a, b)) else {
            return protocol("no public key from the server");
        };
        match RsaKey::from_pem(pem) {
            Ok(key) => self.encrypted(&key, hc),
            Err(e) => self.decline(format!("the server's public key: {e}")),
        }
    }

    /// The password encrypted to `key`, sent.
    fn encrypted(&mut self, key: &RsaKey, hc: &HealthCheck) -> Reply {
        match auth::encrypt_password(key, hc.mysql_password.expose(), &self.nonce) {
            Ok(data) => {
                self.phase = Phase::Auth;
                self.send(&data)
            }
            Err(why) => self.decline(why.to_string()),
        }
    }

    /// Full authentication declined: [`DECLINE`] sent, the check fails
    /// with `why` once the server has answered.
    fn decline(&mut self, why: String) -> Reply {
        self.phase = Phase::Declined(why);
        self.send(&DECLINE)
    }

    /// The server's answer to a decline. An OK (a server that lets anyone
    /// in) still fails the check, after a clean COM_QUIT.
    fn declined(&mut self, p: &[u8], why: String) -> Reply {
        let outcome = CheckOutcome::with_detail(CheckResult::LoginFailed, why);
        if p.first() == Some(&0x00) {
            self.logged_in = true;
            return Reply::Quit(outcome);
        }
        Reply::Fail(outcome)
    }

    /// The login's OK: the first query, or done.
    fn authenticated_now(&mut self, hc: &HealthCheck) -> Reply {
        self.logged_in = true;
        let first = role::first(self.want, hc);
        self.next_query(first, hc)
    }

    fn next_query(&mut self, q: Option<Query>, hc: &HealthCheck) -> Reply {
        let Some(q) = q else {
            self.phase = Phase::Done;
            return Reply::Quit(self.seen.outcome(CheckResult::Ok, None));
        };
        self.phase = Phase::Query(q, ResultReader::new());
        self.seq = 0;
        let mut payload = Vec::with_capacity(1 + q.sql(hc).len());
        payload.push(0x03);
        payload.extend_from_slice(q.sql(hc).as_bytes());
        self.send(&payload)
    }

    /// One packet of a query's answer.
    fn answer(&mut self, q: Query, mut reader: ResultReader, p: &[u8], hc: &HealthCheck) -> Reply {
        let feed = match reader.feed(p) {
            Ok(feed) => feed,
            Err(m) => return protocol(m.0),
        };
        let next = match feed {
            Feed::More => {
                self.phase = Phase::Query(q, reader);
                return Reply::Wait;
            }
            Feed::Done(table) => role::on_table(q, &table, self.want, hc, &mut self.seen),
            Feed::Failed(e) => role::on_error(q, &e, &self.seen).map(Some),
        };
        match next {
            Ok(next) => self.next_query(next, hc),
            Err(outcome) => {
                self.phase = Phase::Done;
                Reply::Quit(outcome)
            }
        }
    }
}

fn auth_error(e: AuthError) -> Reply {
    match e {
        AuthError::ShortNonce => protocol("server nonce too short"),
        AuthError::Unsupported(name) => login_failed(format!("auth plugin {name:?} is not supported")),
        AuthError::Cleartext(name) => login_failed(format!(
            "auth plugin {name:?} refused: it would send the password in clear"
        )),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
