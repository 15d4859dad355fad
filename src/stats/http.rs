//! Request to answer: the request head parsed, routed to a view, and the response bytes.

use std::time::Instant;

use super::cache::{Answer, View};
use super::{html, metrics, snapshot, Source};

/// Largest request head accepted; larger gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the request head read so far calls for.
pub(super) enum Reply {
    /// Incomplete: wait for more.
    Wait,
    /// Incomplete, and the client will send no more: close.
    Close,
    /// Send this answer (its head only when `true`), then close.
    Send(Answer, bool),
    /// Send the answer of this view (its head only when `true`), then close.
    View(View, bool),
}

/// The reply to `head` (`eof`: the client has finished sending).
pub(super) fn reply(head: &[u8], eof: bool) -> Reply {
    match parse(head) {
        Parsed::TooLarge => Reply::Send(response(431, "text/plain", "", b"request header too large\n"), false),
        Parsed::Partial if head.len() > MAX_HEAD => {
            Reply::Send(response(431, "text/plain", "", b"request header too large\n"), false)
        }
        Parsed::Partial if eof => Reply::Close,
        Parsed::Partial => Reply::Wait,
        Parsed::Bad => Reply::Send(response(400, "text/plain", "", b"bad request\n"), false),
        Parsed::Request { method, path } => route(method, path),
    }
}

enum Parsed<'a> {
    Partial,
    Bad,
    /// Complete but longer than [`MAX_HEAD`] (it came in one go), or more
    /// header lines than are parsed.
    TooLarge,
    Request {
        method: &'a str,
        path: &'a str,
    },
}

fn parse(head: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Parsed::TooLarge,
        Ok(httparse::Status::Complete(_)) => Parsed::Request {
            method: req.method.unwrap_or(""),
            path: req.path.unwrap_or(""),
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::TooLarge,
        Err(_) => Parsed::Bad,
    }
}

/// What a complete request asks for: a view for `GET`/`HEAD` of a known
/// path (query string ignored), else 404 or 405.
fn route(method: &str, path: &str) -> Reply {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        let allow = "Allow: GET, HEAD\r\n";
        return Reply::Send(response(405, "text/plain", allow, b"method not allowed\n"), false);
    }
    match path.split('?').next().unwrap_or("") {
        "/" | "/statistic" => Reply::View(View::Html, head_only),
        "/stats" => Reply::View(View::Json, head_only),
        "/metrics" => Reply::View(View::Metrics, head_only),
        _ => Reply::Send(response(404, "text/plain", "", b"not found\n"), head_only),
    }
}

/// The answer of `view`, rendered from `src` at `now`: O(backends).
pub(super) fn render(view: View, src: &Source<'_>, now: Instant) -> Answer {
    let snap = snapshot::snapshot(src, now);
    let (content_type, body) = match view {
        View::Html => ("text/html; charset=utf-8", html::render(&snap).into_bytes()),
        View::Json => ("application/json", snapshot::json(&snap)),
        View::Metrics => (
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&snap).into_bytes(),
        ),
    };
    response(200, content_type, "", &body)
}

/// A complete HTTP/1.1 response that closes the connection; `extra_headers`
/// are whole lines (each ending in CRLF) after the standard ones. A `HEAD`
/// request gets its head only, which states the body's length.
pub(crate) fn response(status: u16, content_type: &str, extra_headers: &str, body: &[u8]) -> Answer {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    Answer::new(head.as_bytes(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classes() {
        assert!(matches!(
            parse(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Request { .. }
        ));
        assert!(matches!(parse(b"GET /stats HTTP/1.1\r\nHost"), Parsed::Partial));
        assert!(matches!(parse(b"\x00\x01garbage\r\n\r\n"), Parsed::Bad));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(
            matches!(parse(long.as_bytes()), Parsed::TooLarge),
            "a complete head over the limit"
        );
        let many: String = (0..65).map(|i| format!("X-{i}: y\r\n")).collect();
        assert!(matches!(
            parse(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Parsed::TooLarge
        ));
    }

    #[test]
    fn method_not_allowed_names_allow_before_the_blank_line() {
        let r = response(405, "text/plain", "Allow: GET, HEAD\r\n", b"method not allowed\n");
        let (bytes, len) = r.to_send(false);
        assert_eq!(
            String::from_utf8_lossy(bytes.get(..len).unwrap_or_default()),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\
             Cache-Control: no-store\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nmethod not allowed\n"
        );
    }
}
