//! Configuration, step 1 for EasyProxy's JSON file: each key of the tree checked for its type and range, every problem named by its key and reported at once.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::tree::Node;

/// Longest `heartbeat`, in seconds: one year, the longest `interval_ms`.
const MAX_HEARTBEAT: u64 = 365 * 24 * 3600;

/// EasyProxy's keys, typed. `host` is an IP address.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EasyFile {
    pub(super) service: Option<String>,
    pub(super) host: IpAddr,
    pub(super) port: u16,
    pub(super) webport: Option<u16>,
    pub(super) strategy: Option<String>,
    /// Seconds; 0 means no health checks.
    pub(super) heartbeat: Option<u64>,
    pub(super) maxprocessor: Option<u64>,
    pub(super) backends: Vec<EasyBackend>,
}

/// One `backends` entry: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EasyBackend {
    pub(super) host: String,
    pub(super) port: u16,
}

/// A key's value: not there (or `null`), there but wrong (the problem is
/// recorded), or good.
enum Field<T> {
    Absent,
    Bad,
    Good(T),
}

impl<T> Field<T> {
    /// `None` when bad; absent is `Some(None)`.
    fn optional(self) -> Option<Option<T>> {
        match self {
            Field::Absent => Some(None),
            Field::Bad => None,
            Field::Good(v) => Some(Some(v)),
        }
    }
}

/// An object's members, taken one key at a time.
struct Members(Vec<(String, Node)>);

impl Members {
    /// The member named `key`; `null` counts as absent, as in serde.
    fn take(&mut self, key: &str) -> Option<Node> {
        let at = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.swap_remove(at).1).filter(|n| *n != Node::Null)
    }
}

/// Reads the tree, collecting problems.
#[derive(Default)]
struct Reader {
    problems: Vec<String>,
}

/// Reads EasyProxy's file; the error lists every problem found.
pub(super) fn easy_file(node: Node) -> Result<EasyFile, Vec<String>> {
    let mut r = Reader::default();
    let file = r.file(node);
    match file {
        Some(f) if r.problems.is_empty() => Ok(f),
        _ => Err(r.problems),
    }
}

impl Reader {
    fn err(&mut self, key: &str, msg: impl fmt::Display) {
        self.problems.push(format!("{key}: {msg}"));
    }

    /// An object's members; a repeated or unknown key is a problem.
    fn object(&mut self, key: &str, node: Node, known: &[&str]) -> Option<Members> {
        let Node::Object(members) = node else {
            self.err(key, format!("expected an object, found {}", node.kind()));
            return None;
        };
        let mut seen = HashSet::new();
        for (k, _) in &members {
            let name = if key.is_empty() {
                k.clone()
            } else {
                format!("{key}.{k}")
            };
            if !known.contains(&k.as_str()) {
                self.err(&name, format!("unknown key (expected one of: {})", known.join(", ")));
            } else if !seen.insert(k.as_str()) {
                self.err(&name, "duplicate key");
            }
        }
        Some(Members(members))
    }

    fn file(&mut self, node: Node) -> Option<EasyFile> {
        const KEYS: [&str; 8] = [
            "service",
            "host",
            "port",
            "webport",
            "strategy",
            "heartbeat",
            "maxprocessor",
            "backends",
        ];
        let Node::Object(_) = node else {
            self.err("file", format!("expected a JSON object, found {}", node.kind()));
            return None;
        };
        let mut m = self.object("", node, &KEYS)?;
        let service = self.string("service", m.take("service")).optional();
        let host = self.listen_host(m.take("host"));
        let port = self.port("port", m.take("port"));
        let webport = self.port("webport", m.take("webport")).optional();
        let strategy = self.string("strategy", m.take("strategy")).optional();
        let heartbeat = self
            .number("heartbeat", m.take("heartbeat"), 0, MAX_HEARTBEAT)
            .optional();
        let maxprocessor = self
            .number("maxprocessor", m.take("maxprocessor"), 0, u64::MAX)
            .optional();
        let backends = self.backends(m.take("backends"));
        // Every required key is looked at before giving up on any.
        let (host, port) = (self.required("host", host), self.required("port", port));
        let backends = self.required("backends", backends);
        Some(EasyFile {
            service: service?,
            host: host?,
            port: port?,
            webport: webport?,
            strategy: strategy?,
            heartbeat: heartbeat?,
            maxprocessor: maxprocessor?,
            backends: backends?,
        })
    }

    /// A required key: absent is a problem.
    fn required<T>(&mut self, key: &str, f: Field<T>) -> Option<T> {
        match f {
            Field::Absent => {
                self.err(key, "missing");
                None
            }
            Field::Bad => None,
            Field::Good(v) => Some(v),
        }
    }

    fn string(&mut self, key: &str, v: Option<Node>) -> Field<String> {
        match v {
            None => Field::Absent,
            Some(Node::Str(s)) => Field::Good(s),
            Some(other) => {
                self.err(key, format!("expected a string, found {}", other.kind()));
                Field::Bad
            }
        }
    }

    /// A whole number in `min..=max`.
    fn number(&mut self, key: &str, v: Option<Node>, min: u64, max: u64) -> Field<u64> {
        match v {
            None => Field::Absent,
            Some(Node::Int(n)) => match u64::try_from(n).ok().filter(|n| (min..=max).contains(n)) {
                Some(n) => Field::Good(n),
                None => {
                    self.err(key, format!("{n} is out of range ({min}..={max})"));
                    Field::Bad
                }
            },
            Some(other) => {
                self.err(key, format!("expected a whole number, found {}", other.kind()));
                Field::Bad
            }
        }
    }

    /// A TCP port, 1..=65535 (EasyProxy's file has no "any port").
    fn port(&mut self, key: &str, v: Option<Node>) -> Field<u16> {
        match self.number(key, v, 1, u64::from(u16::MAX)) {
            Field::Good(n) => u16::try_from(n).map_or(Field::Bad, Field::Good),
            Field::Absent => Field::Absent,
            Field::Bad => Field::Bad,
        }
    }

    /// The address the service (and the stats page) listen on: an IP.
    fn listen_host(&mut self, v: Option<Node>) -> Field<IpAddr> {
        match self.string("host", v) {
            Field::Good(s) => match s.parse::<IpAddr>() {
                Ok(ip) => Field::Good(ip),
                Err(_) => {
                    self.err("host", format!("{s:?} is not an IP address (the address to listen on)"));
                    Field::Bad
                }
            },
            Field::Absent => Field::Absent,
            Field::Bad => Field::Bad,
        }
    }

    /// `backends`: a list of `{"host": ..., "port": ...}`.
    fn backends(&mut self, v: Option<Node>) -> Field<Vec<EasyBackend>> {
        let list = match v {
            None => return Field::Absent,
            Some(Node::List(list)) => list,
            Some(other) => {
                self.err("backends", format!("expected a list, found {}", other.kind()));
                return Field::Bad;
            }
        };
        let read: Vec<Option<EasyBackend>> = list
            .into_iter()
            .enumerate()
            .map(|(i, b)| self.backend(&format!("backends[{i}]"), b))
            .collect();
        read.into_iter()
            .collect::<Option<Vec<_>>>()
            .map_or(Field::Bad, Field::Good)
    }

    fn backend(&mut self, key: &str, node: Node) -> Option<EasyBackend> {
        let mut m = self.object(key, node, &["host", "port"])?;
        let host_key = format!("{key}.host");
        let host = self.string(&host_key, m.take("host"));
        let host = self.required(&host_key, host);
        let port_key = format!("{key}.port");
        let port = self.port(&port_key, m.take("port"));
        let port = self.required(&port_key, port);
        let host = host.filter(|h| self.backend_host(&host_key, h))?;
        Some(EasyBackend { host, port: port? })
    }

    /// A host name or IP address; the port is a key of its own.
    fn backend_host(&mut self, key: &str, host: &str) -> bool {
        if host.is_empty() {
            self.err(key, "must not be empty");
            false
        } else if host.contains(':') && host.parse::<Ipv6Addr>().is_err() {
            self.err(key, format!("{host:?} is not a host name or IP address"));
            false
        } else {
            true
        }
    }
}
