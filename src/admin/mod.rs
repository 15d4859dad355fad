//! Side flow: the admin API, served from the same event loop as the stats
//! port. Operators drain, put in maintenance or re-weight a backend, close
//! its connections, read the status and reload, over TCP with a bearer
//! token or over a unix socket; `easyproxy ctl` (`crate::ctl`) is its
//! client.
//!
//! One file per step: `listen` binds, `server` accepts and keeps the
//! connection slots, `conn` reads a request and checks its token (`auth`;
//! refusals are summed up in the log by `attempts`), `request` parses and routes it to a [`Command`], `command` carries it
//! out, `persist` keeps the changes in `global.state_file`. The loop hands
//! requests from the server to `command` and the answers back.

mod attempts;
mod auth;
pub mod command;
mod conn;
mod listen;
pub mod persist;
mod request;
mod server;
mod stream;

use mio::net::TcpListener;
use mio::{Interest, Registry};

use crate::balance::AdminState;
use crate::config::AdminConfig;
use crate::token::Target;
use listen::UnixSocket;

pub use server::{AdminServer, Ready};
pub use stream::Peer;

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `GET /v1/status`.
    Status,
    /// `POST /v1/backend/state`.
    State {
        service: String,
        backend: String,
        state: AdminState,
    },
    /// `POST /v1/backend/weight`; `None` returns to the file's.
    Weight {
        service: String,
        backend: String,
        weight: Option<u32>,
    },
    /// `POST /v1/backend/close`.
    Close { service: String, backend: String },
    /// `POST /v1/reload`.
    Reload,
}

/// The `reload` answer: `{"ok": true, "summary": ...}` or
/// `{"ok": false, "error": ...}`.
pub fn reload_answer(outcome: &Result<String, String>) -> crate::stats::Answer {
    let body = match outcome {
        Ok(summary) => serde_json::json!({ "ok": true, "summary": summary }),
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
    };
    request::answer(200, &body)
}

/// New listeners for a changed `[admin]`, bound before anything changes.
pub struct Rebind {
    tcp: Change<TcpListener>,
    unix: Change<UnixSocket>,
}

enum Change<T> {
    Keep,
    Close,
    New(T),
}

impl AdminServer {
    /// Binds what `new` has that is not listening yet (TCP first, the unix
    /// socket last); an error changes nothing (a socket file made here is
    /// removed when the `Rebind` is dropped).
    pub fn prepare(&self, new: Option<&AdminConfig>) -> Result<Rebind, String> {
        let listen = new.and_then(|a| a.listen);
        let tcp = match listen {
            None if self.tcp.is_some() => Change::Close,
            None => Change::Keep,
            Some(a) if self.tcp.is_some() && self.listen == Some(a) => Change::Keep,
            Some(a) => Change::New(listen::bind_tcp(a)?),
        };
        let path = new.and_then(|a| a.socket.clone());
        // The file at the path is compared, not the path: the same socket
        // through another spelling (a symlinked directory, `dir/../dir`) is
        // kept, and a socket file that was deleted or replaced since is
        // made afresh (a reload brings `ctl` back). Only a new path that
        // cannot be listened on fails the reload; the old path that cannot
        // be made again is a warning, the rest of the reload goes on.
        let unix = match (path, &self.unix) {
            (None, Some(_)) => Change::Close,
            (None, None) => Change::Keep,
            (Some(p), Some(u)) if u.is_at(&p) => Change::Keep,
            (Some(p), Some(u)) if u.path() == p => match listen::bind_unix(&p) {
                Ok(again) => Change::New(again),
                Err(e) => {
                    log::warn!("{e}; the socket file is gone or not ours, and cannot be made again: only TCP reaches the admin API until a reload can");
                    Change::Keep
                }
            },
            (Some(p), _) => Change::New(listen::bind_unix(&p)?),
        };
        Ok(Rebind { tcp, unix })
    }

    /// Puts the prepared listeners in place and takes `new`'s token.
    /// Connections open go on.
    pub fn reconfigure(&mut self, rebind: Rebind, new: Option<&AdminConfig>, registry: &Registry) {
        self.token = new.and_then(|a| a.token.clone());
        self.listen = new.and_then(|a| a.listen);
        match rebind.tcp {
            Change::Keep => {}
            Change::Close => self.close_tcp(registry),
            Change::New(mut l) => {
                self.close_tcp(registry);
                match registry.register(&mut l, Target::AdminListener.token(), Interest::READABLE) {
                    Ok(()) => {
                        if let Ok(a) = l.local_addr() {
                            log::info!("admin API on http://{a}/ (bearer token)");
                        }
                        self.set_pending(false);
                        self.tcp = Some(l);
                    }
                    Err(e) => log::error!("cannot register the admin listener: {e}"),
                }
            }
        }
        match rebind.unix {
            Change::Keep => {}
            Change::Close => self.close_unix(registry),
            Change::New(mut u) => {
                if self.socket_path() == Some(u.path()) {
                    log::warn!(
                        "admin: the socket file {} was deleted or replaced; made it afresh",
                        u.path().display()
                    );
                }
                self.close_unix(registry);
                match registry.register(&mut u.listener, Target::AdminSocket.token(), Interest::READABLE) {
                    Ok(()) => {
                        log::info!("admin API on unix socket {}", u.path().display());
                        self.set_pending(true);
                        self.unix = Some(u);
                    }
                    Err(e) => log::error!("cannot register the admin socket: {e}"),
                }
            }
        }
    }

    fn close_tcp(&mut self, registry: &Registry) {
        if let Some(mut l) = self.tcp.take() {
            let _ = registry.deregister(&mut l);
        }
    }

    fn close_unix(&mut self, registry: &Registry) {
        if let Some(mut u) = self.unix.take() {
            let _ = registry.deregister(&mut u.listener);
        }
    }
}
