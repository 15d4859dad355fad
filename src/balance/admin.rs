//! Step 2 of the flow, balance: what an operator said about a backend at run time (`ready`, `drain`, `maint`), next to what health checks say.

use std::fmt;

/// The operator's say on a backend, set through the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdminState {
    /// Health checks decide (the default).
    #[default]
    Ready,
    /// No new clients; open connections go on; health checks go on.
    Drain,
    /// No new clients and no health checks.
    Maint,
}

impl AdminState {
    /// Parses `ready`, `drain` or `maint`.
    pub fn parse(s: &str) -> Option<AdminState> {
        Some(match s {
            "ready" => AdminState::Ready,
            "drain" => AdminState::Drain,
            "maint" => AdminState::Maint,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
