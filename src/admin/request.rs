//! Admin API, requests: the head (at most 8 KiB) parsed with httparse, a body of at most 4 KiB (Content-Length of plain digits only), routed to a [`Command`] or answered with an error.

use serde_json::{json, Map, Value};

use super::Command;
use crate::balance::AdminState;
use crate::stats::{response, Answer, MAX_HEAD};

/// Largest request body accepted; larger gets 413.
pub const MAX_BODY: usize = 4096;
/// The most input a request may take: head and body.
pub const MAX_INPUT: usize = MAX_HEAD + MAX_BODY;
/// Longest service or backend name a body may carry.
const MAX_NAME: usize = 512;

/// A complete request, borrowed from the input read.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<&'a [u8]>,
    pub body: &'a [u8],
}

/// What the input read so far amounts to.
pub enum Parsed<'a> {
    /// Incomplete: wait for more.
    Wait,
    /// Incomplete, and the client will send no more: close.
    Close,
    /// Answer this (an error) and close.
    Answer(Answer),
    Request(Request<'a>),
}

/// Parses `input` (`eof`: the client has finished sending).
pub fn parse(input: &[u8], eof: bool) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let too_large = || Parsed::Answer(error(431, "request header too large"));
    let head_len = match req.parse(input) {
        // However it arrived: in one segment the whole head is there at once.
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Partial) if eof => return Parsed::Close,
        Ok(httparse::Status::Partial) => return Parsed::Wait,
        Err(httparse::Error::TooManyHeaders) => return too_large(),
        Err(_) => return Parsed::Answer(error(400, "malformed request")),
    };
    let (mut length, mut bearer, mut chunked) = (None, None, None);
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let only_chunked = h.value.eq_ignore_ascii_case(b"chunked");
            chunked = Some(chunked.unwrap_or(true) && only_chunked);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match (content_length(h.value), length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return Parsed::Answer(error(400, "bad Content-Length (one value, plain digits)")),
            }
        } else if h.name.eq_ignore_ascii_case("authorization") {
            bearer = bearer_token(h.value);
        }
    }
    // A body framed two ways is how requests are smuggled past proxies.
    match (chunked, length) {
        (None, _) => {}
        (Some(_), Some(_)) => return Parsed::Answer(error(400, "Transfer-Encoding and Content-Length together")),
        (Some(true), None) => return Parsed::Answer(error(411, "send the body with Content-Length")),
        (Some(false), None) => {
            return Parsed::Answer(error(501, "Transfer-Encoding is not supported; send Content-Length"))
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY as u64 {
        return Parsed::Answer(error(413, &format!("the body may have at most {MAX_BODY} bytes")));
    }
    let Ok(length) = usize::try_from(length) else {
        return Parsed::Answer(error(413, &format!("the body may have at most {MAX_BODY} bytes")));
    };
    let Some(body) = input.get(head_len..head_len + length) else {
        return if eof { Parsed::Close } else { Parsed::Wait };
    };
    Parsed::Request(Request {
        method: req.method.unwrap_or(""),
        path: req.path.unwrap_or(""),
        bearer,
        body,
    })
}

/// A `Content-Length` value (httparse has taken the spaces around it):
/// ASCII digits only (no sign, no `_`, no list), leading zeros allowed as
/// the grammar allows them; a number past `u64` counts as `u64::MAX`
/// (too large either way).
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))),
    )
}

/// The token of `Bearer TOKEN` (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| value.get(7..))
        .flatten()
        .map(|t| t.trim_ascii())
}

/// The command a request asks for, or the error to answer.
pub fn route(req: &Request<'_>) -> Result<Command, Answer> {
    let path = req.path.split('?').next().unwrap_or("");
    let post = |cmd: fn(&Map<String, Value>) -> Result<Command, Answer>| {
        if req.method != "POST" {
            return Err(not_allowed("POST"));
        }
        cmd(&body_object(req.body)?)
    };
    match path {
        "/v1/status" if req.method == "GET" => Ok(Command::Status),
        "/v1/status" => Err(not_allowed("GET")),
        "/v1/backend/state" => post(|o| {
            let (service, backend) = target(o, &["state"])?;
            let state = o.get("state").and_then(Value::as_str).and_then(AdminState::parse);
            let state = state.ok_or_else(|| error(400, "state must be \"ready\", \"drain\" or \"maint\""))?;
            Ok(Command::State {
                service,
                backend,
                state,
            })
        }),
        "/v1/backend/weight" => post(|o| {
            let (service, backend) = target(o, &["weight"])?;
            let weight = match o.get("weight") {
                Some(Value::Null) => None,
                Some(w) => Some(
                    w.as_u64()
                        .filter(|w| (1..=256).contains(w))
                        .ok_or_else(|| error(400, "weight must be 1..=256, or null for the file's"))?
                        as u32,
                ),
                None => return Err(error(400, "weight is missing (1..=256, or null for the file's)")),
            };
            Ok(Command::Weight {
                service,
                backend,
                weight,
            })
        }),
        "/v1/backend/close" => post(|o| {
            let (service, backend) = target(o, &[])?;
            Ok(Command::Close { service, backend })
        }),
        "/v1/reload" if req.method == "POST" => Ok(Command::Reload),
        "/v1/reload" => Err(not_allowed("POST")),
        _ => Err(error(404, "no such endpoint")),
    }
}

/// The body as a JSON object (empty means `{}`).
fn body_object(body: &[u8]) -> Result<Map<String, Value>, Answer> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(error(400, "the body must be a JSON object")),
        Err(e) => Err(error(400, &format!("the body is not JSON: {e}"))),
    }
}

/// `service` and `backend` of a body whose other keys may only be `extra`.
fn target(o: &Map<String, Value>, extra: &[&str]) -> Result<(String, String), Answer> {
    if let Some(k) = o
        .keys()
        .find(|k| !["service", "backend"].contains(&k.as_str()) && !extra.contains(&k.as_str()))
    {
        return Err(error(400, &format!("unknown field {k:?}")));
    }
    let field = |name: &str| {
        o.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= MAX_NAME)
            .map(str::to_string)
            .ok_or_else(|| error(400, &format!("{name} must be a non-empty string")))
    };
    Ok((field("service")?, field("backend")?))
}

/// A JSON answer.
pub fn answer(status: u16, body: &Value) -> Answer {
    with_headers(status, "", body)
}

/// A JSON answer with extra header lines (each ending in CRLF).
pub fn with_headers(status: u16, headers: &str, body: &Value) -> Answer {
    let mut bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    response(status, "application/json", headers, &bytes)
}

/// `{"error": msg}` with `status`.
pub fn error(status: u16, msg: &str) -> Answer {
    answer(status, &json!({ "error": msg }))
}

fn not_allowed(allow: &str) -> Answer {
    with_headers(
        405,
        &format!("Allow: {allow}\r\n"),
        &json!({"error": "method not allowed"}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: &Answer) -> String {
        let (bytes, len) = a.to_send(false);
        String::from_utf8_lossy(bytes.get(..len).unwrap_or_default()).to_string()
    }

    fn routed(raw: &str) -> Result<Command, String> {
        match parse(raw.as_bytes(), true) {
            Parsed::Request(r) => route(&r).map_err(|a| text(&a)),
            Parsed::Answer(a) => Err(text(&a)),
            _ => Err("incomplete".into()),
        }
    }

    #[test]
    fn bodies_are_bounded_and_routed() {
        let body = r#"{"service":"s","backend":"b:1","state":"drain"}"#;
        let raw = format!(
            "POST /v1/backend/state HTTP/1.1\r\nAuthorization: Bearer  tok \r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let Parsed::Request(r) = parse(raw.as_bytes(), false) else {
            panic!()
        };
        assert_eq!(r.bearer, Some(&b"tok"[..]));
        assert!(matches!(
            route(&r),
            Ok(Command::State {
                state: AdminState::Drain,
                ..
            })
        ));
        assert!(matches!(parse(&raw.as_bytes()[..raw.len() - 1], false), Parsed::Wait));
        let big = format!("POST /v1/reload HTTP/1.1\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        assert!(routed(&big).unwrap_err().starts_with("HTTP/1.1 413"));
        let chunked = "POST /v1/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(routed(chunked).unwrap_err().starts_with("HTTP/1.1 411"));
        assert!(routed("\x01\x02 garbage\r\n\r\n")
            .unwrap_err()
            .starts_with("HTTP/1.1 400"));
    }

    fn status_of(raw: &str) -> String {
        match routed(raw) {
            Ok(c) => format!("{c:?}"),
            Err(a) => a.get(9..12).unwrap_or("").to_string(),
        }
    }

    #[test]
    fn content_length_is_one_value_of_plain_digits() {
        let post = |headers: &str| status_of(&format!("POST /v1/reload HTTP/1.1\r\n{headers}\r\n{{}}"));
        for bad in ["+2", "-0", "-2", "1_0", "0x2", "2 2", "2,2", "2, 2", "", "\u{b2}", "2."] {
            assert_eq!(post(&format!("Content-Length: {bad}\r\n")), "400", "{bad:?}");
        }
        assert_eq!(post("Content-Length: 2\r\nContent-Length: 3\r\n"), "400");
        assert_eq!(post("Content-Length:    2 \t\r\n"), "Reload");
        assert_eq!(post("Content-Length: 0002\r\ncontent-length: 2\r\n"), "Reload");
        assert_eq!(post(&format!("Content-Length: {}\r\n", "9".repeat(40))), "413");
        assert_eq!(post(&format!("Content-Length: {}\r\n", u64::MAX)), "413");
        assert_eq!(post("Transfer-Encoding: chunked\r\nContent-Length: 2\r\n"), "400");
        assert_eq!(post("Content-Length: 2\r\nTransfer-Encoding: chunked\r\n"), "400");
        assert_eq!(post("Transfer-Encoding: chunked\r\n"), "411");
        assert_eq!(post("Transfer-Encoding: gzip\r\n"), "501");
        assert_eq!(post("Transfer-Encoding: gzip, chunked\r\n"), "501");
    }

    #[test]
    fn the_head_limit_holds_however_the_head_arrives() {
        let head = |filler: usize| format!("GET /v1/status HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(filler));
        let exact = head(MAX_HEAD - head(0).len());
        assert_eq!(exact.len(), MAX_HEAD);
        assert_eq!(status_of(&exact), "Status");
        let over = head(MAX_HEAD + 1 - head(0).len());
        assert_eq!(status_of(&over), "431", "complete, in one piece, one byte over");
        assert_eq!(status_of(&head(9000)), "431");
        // Incomplete and past the limit already.
        let partial = &head(9000)[..MAX_HEAD + 1];
        assert!(matches!(parse(partial.as_bytes(), false), Parsed::Answer(_)));
        let many: String = (0..33).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status_of(&format!("GET /v1/status HTTP/1.1\r\n{many}\r\n")), "431");
    }

    #[test]
    fn errors_name_the_problem() {
        let post = |path: &str, body: &str| {
            routed(&format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ))
        };
        assert!(
            post("/v1/backend/state", r#"{"service":"s","backend":"b","state":"up"}"#)
                .unwrap_err()
                .contains("state must be")
        );
        assert!(
            post("/v1/backend/weight", r#"{"service":"s","backend":"b","weight":0}"#)
                .unwrap_err()
                .contains("1..=256")
        );
        assert!(matches!(
            post("/v1/backend/weight", r#"{"service":"s","backend":"b","weight":null}"#),
            Ok(Command::Weight { weight: None, .. })
        ));
        assert!(post("/v1/backend/close", r#"{"service":"s","backend":"b","x":1}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert!(post("/v1/backend/close", "[1]").unwrap_err().contains("JSON object"));
        assert!(post("/v1/nope", "").unwrap_err().starts_with("HTTP/1.1 404"));
        let get = routed("GET /v1/reload HTTP/1.1\r\n\r\n").unwrap_err();
        assert!(
            get.starts_with("HTTP/1.1 405") && get.contains("Allow: POST\r\n"),
            "{get}"
        );
        assert!(matches!(post("/v1/reload", ""), Ok(Command::Reload)));
    }
}
