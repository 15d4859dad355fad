//! Health flow, MySQL check: a real client session, without any socket
//! (`check` drives it). `packets` frames and reads packets, `auth` builds
//! the login (scrambles, RSA), `resultset` reads query answers, `role`
//! says what they mean for the wanted role, `text` cleans what a server
//! says before a reason shows it, and `session` runs the steps.
//! The check logs in, runs its queries and quits, so the server sees a
//! clean session instead of an aborted connection (which it counts towards
//! `max_connect_errors` and which would end with the proxy's address
//! blocked).

pub mod auth;
pub mod packets;
pub mod resultset;
pub mod role;
pub mod session;
#[cfg(test)]
pub mod testutil;
pub mod text;

pub use packets::{frame, Packet, PacketReader, TooLong, MAX_PAYLOAD, QUIT};
pub use session::{Reply, Session, MAX_AUTH_SWITCHES};
