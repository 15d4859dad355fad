//! Dispatch: what a readiness event is about. The only place
//! that turns raw `mio::Token` numbers into meaning and back.
//!
//! A token is `index << 3 | kind`: the low three bits name the kind of
//! socket, the rest index the slab (or service table) that owns it.

use mio::Token;

const KIND_BITS: usize = 3;
const KIND_MASK: usize = (1 << KIND_BITS) - 1;

/// What a token refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The self-pipe that delivers SIGHUP/SIGTERM/SIGINT.
    Signals,
    /// The `[stats]` HTTP listener.
    StatsListener,
    /// The waker of the helper threads (mio allows one per poll): the
    /// configuration reader has read a reload's file, or the state file
    /// writer has finished a job.
    Woken,
    /// A service's listener, by service key.
    Listener(usize),
    /// The client side of a pair, by pair key.
    Client(usize),
    /// The backend side of a pair, by pair key.
    Backend(usize),
    /// A health-check probe, by probe key.
    Probe(usize),
    /// A connection to the stats listener, by stats-connection key.
    StatsClient(usize),
    /// The `[admin]` TCP listener.
    AdminListener,
    /// The `[admin]` unix socket.
    AdminSocket,
    /// A connection to an admin listener, by admin-connection key.
    AdminClient(usize),
}

impl Target {
    /// Encodes the target as a poll token.
    pub fn token(self) -> Token {
        let (index, kind) = match self {
            Target::Signals => (0, 0),
            Target::StatsListener => (1, 0),
            Target::Woken => (2, 0),
            Target::AdminListener => (3, 0),
            Target::AdminSocket => (4, 0),
            Target::Listener(i) => (i, 1),
            Target::Client(i) => (i, 2),
            Target::Backend(i) => (i, 3),
            Target::Probe(i) => (i, 4),
            Target::StatsClient(i) => (i, 5),
            Target::AdminClient(i) => (i, 6),
        };
        Token((index << KIND_BITS) | kind)
    }

    /// Decodes a poll token; `None` for a number no target produces.
    pub fn from_token(token: Token) -> Option<Target> {
        let index = token.0 >> KIND_BITS;
        Some(match token.0 & KIND_MASK {
            0 if index == 0 => Target::Signals,
            0 if index == 1 => Target::StatsListener,
            0 if index == 2 => Target::Woken,
            0 if index == 3 => Target::AdminListener,
            0 if index == 4 => Target::AdminSocket,
            1 => Target::Listener(index),
            2 => Target::Client(index),
            3 => Target::Backend(index),
            4 => Target::Probe(index),
            5 => Target::StatsClient(index),
            6 => Target::AdminClient(index),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            Target::Signals,
            Target::StatsListener,
            Target::Woken,
            Target::Listener(0),
            Target::Listener(7),
            Target::Client(0),
            Target::Client(123456),
            Target::Backend(123456),
            Target::Probe(3),
            Target::StatsClient(9),
            Target::AdminListener,
            Target::AdminSocket,
            Target::AdminClient(0),
            Target::AdminClient(77),
        ] {
            assert_eq!(Target::from_token(t.token()), Some(t));
        }
        assert_eq!(Target::from_token(Token(5 << 3)), None);
        assert_eq!(Target::from_token(Token(7)), None);
    }
}
