//! Configuration, step 2 per `[service.health_check]`: timing, thresholds and the escaped send/expect bytes
//! (the MySQL keys are in `mysql`).

use super::raw::RawHealthCheck;
use super::validate::Validator;
use super::HealthCheck;

/// Longest `expect` string, in bytes.
const MAX_EXPECT: usize = 4096;
/// Longest `send` string, in bytes.
const MAX_SEND: usize = 65536;

impl Validator {
    /// A health check, its unset keys taken from [`HealthCheck::default`].
    pub(super) fn health(&mut self, key: &str, mut h: RawHealthCheck) -> HealthCheck {
        let d = HealthCheck::default();
        let send = self.escaped(&format!("{key}.send"), h.send.as_deref());
        let expect = self.escaped(&format!("{key}.expect"), h.expect.as_deref());
        if expect.len() > MAX_EXPECT {
            self.err(&format!("{key}.expect"), format!("longer than {MAX_EXPECT} bytes"));
        }
        if send.len() > MAX_SEND {
            self.err(&format!("{key}.send"), format!("longer than {MAX_SEND} bytes"));
        }
        let mysql_user = self.mysql_user(&format!("{key}.mysql_user"), h.mysql_user.take(), &send, &expect);
        let mysql = self.mysql_keys(key, &mut h, mysql_user.is_some());
        let interval = self.ms(&format!("{key}.interval_ms"), h.interval_ms, millis(&d.interval), false);
        let timeout = self.ms(&format!("{key}.timeout_ms"), h.timeout_ms, millis(&d.timeout), false);
        if timeout > interval {
            self.warn(
                &format!("{key}.timeout_ms"),
                format!(
                    "{} ms is above interval_ms ({} ms): checks never overlap, so a backend that does not answer is checked only about every {} ms",
                    timeout.as_millis(),
                    interval.as_millis(),
                    timeout.as_millis()
                ),
            );
        }
        HealthCheck {
            mysql_user,
            interval,
            timeout,
            rise: self.count(&format!("{key}.rise"), h.rise, u64::from(d.rise), 1, 1000) as u32,
            fall: self.count(&format!("{key}.fall"), h.fall, u64::from(d.fall), 1, 1000) as u32,
            send,
            expect,
            mysql_password: mysql.password,
            mysql_password_file: mysql.password_file,
            role: mysql.role,
            max_replication_lag: mysql.max_replication_lag,
            mysql_query: mysql.query,
            mysql_server_key: mysql.server_key,
        }
    }

    /// A `send`/`expect` string with its escapes interpreted; empty when absent.
    fn escaped(&mut self, key: &str, s: Option<&str>) -> Vec<u8> {
        s.and_then(|s| self.check(key, unescape(s))).unwrap_or_default()
    }

    /// The MySQL login probe's user: an empty name means none; it replaces
    /// send/expect, so cannot come with them.
    fn mysql_user(&mut self, key: &str, user: Option<String>, send: &[u8], expect: &[u8]) -> Option<String> {
        let user = user.filter(|u| !u.is_empty());
        if user.is_some() && (!send.is_empty() || !expect.is_empty()) {
            self.err(key, "cannot be combined with send/expect");
        }
        if user.as_ref().is_some_and(|u| u.len() > 64 || u.contains('\0')) {
            self.err(key, "must be at most 64 bytes without NUL");
        }
        user
    }
}

/// A default duration in whole milliseconds.
fn millis(d: &std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Interprets `\r`, `\n`, `\t`, `\0`, `\\` and `\xHH` escapes in health-check
/// strings, so that literal TOML strings (`'PING\r\n'`) work too.
pub fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = bytes.get(i + 1) else {
            return Err("a lone backslash ends the string".into());
        };
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = s.get(i + 2..i + 4).ok_or("\\x needs two hex digits")?;
                let v = u8::from_str_radix(hex, 16).map_err(|_| format!("\\x{hex} is not a hex byte"))?;
                out.push(v);
                i += 2;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
        i += 2;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescape_works() {
        assert_eq!(unescape(r"PING\r\n").unwrap(), b"PING\r\n");
        assert_eq!(unescape(r"\x00\xff").unwrap(), vec![0, 255]);
        assert!(unescape(r"\q").is_err());
        assert!(unescape("\\").is_err());
        assert!(unescape(r"\x4").is_err());
    }
}
