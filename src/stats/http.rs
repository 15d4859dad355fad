//! Request to answer: the request head parsed, routed to a view, and the response bytes.

use std::time::Instant;

use super::{html, metrics, snapshot, Source};

/// Largest request head accepted; larger gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// What the request head read so far calls for.
pub(super) enum Reply {
    /// Incomplete: wait for more.
    Wait,
    /// Incomplete, and the client will send no more: close.
    Close,
    /// Send these bytes, then close.
    Send(Vec<u8>),
}

/// The reply to `head` (`eof`: the client has finished sending), rendered
/// from `src` at `now` when it is a request for a view.
pub(super) fn reply(head: &[u8], eof: bool, src: &Source<'_>, now: Instant) -> Reply {
    match parse(head) {
        Parsed::Partial if head.len() > MAX_HEAD => {
            Reply::Send(response(431, "text/plain", "", b"request header too large\n", false))
        }
        Parsed::Partial if eof => Reply::Close,
        Parsed::Partial => Reply::Wait,
        Parsed::Bad => Reply::Send(response(400, "text/plain", "", b"bad request\n", false)),
        Parsed::Request { method, path } => Reply::Send(answer(method, path, src, now)),
    }
}

enum Parsed<'a> {
    Partial,
    Bad,
    Request { method: &'a str, path: &'a str },
}

fn parse(head: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => Parsed::Request {
            method: req.method.unwrap_or(""),
            path: req.path.unwrap_or(""),
        },
        Ok(httparse::Status::Partial) => Parsed::Partial,
        // Malformed, or more headers than the array above holds.
        Err(_) => Parsed::Bad,
    }
}

/// The response to a complete request: a view for `GET`/`HEAD` of a known
/// path (query string ignored), else 404 or 405.
fn answer(method: &str, path: &str, src: &Source<'_>, now: Instant) -> Vec<u8> {
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return response(
            405,
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
            false,
        );
    }
    let path = path.split('?').next().unwrap_or("");
    let (content_type, body) = match path {
        "/" | "/statistic" => (
            "text/html; charset=utf-8",
            html::render(&snapshot::snapshot(src, now)).into_bytes(),
        ),
        "/stats" => ("application/json", snapshot::json(&snapshot::snapshot(src, now))),
        "/metrics" => (
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&snapshot::snapshot(src, now)).into_bytes(),
        ),
        _ => return response(404, "text/plain", "", b"not found\n", head_only),
    };
    response(200, content_type, "", &body, head_only)
}

/// A complete HTTP/1.1 response that closes the connection; `extra_headers`
/// are whole lines (each ending in CRLF) after the standard ones. `HEAD`
/// gets the head only, with the body's length.
fn response(status: u16, content_type: &str, extra_headers: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
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
    }

    #[test]
    fn method_not_allowed_names_allow_before_the_blank_line() {
        let r = response(
            405,
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
            false,
        );
        assert_eq!(
            String::from_utf8_lossy(&r),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\
             Cache-Control: no-store\r\nConnection: close\r\nAllow: GET, HEAD\r\n\r\nmethod not allowed\n"
        );
    }
}
