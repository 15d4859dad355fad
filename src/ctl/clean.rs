//! `easyproxy ctl`, output: everything that came from the server is made
//! safe for the operator's terminal before it is printed (no escape
//! sequences, no carriage returns, no text reordered or hidden by Unicode
//! format characters).

/// Whether `c` must not reach a terminal as it is: C0 controls, DEL and
/// C1 controls (`char::is_control`), and the Unicode format characters
/// that reorder text (bidi marks, embeddings, overrides and isolates),
/// break lines (U+2028, U+2029) or hide it (zero-width characters, tags).
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
                | '\u{e0000}'..='\u{e007f}'
        )
}

/// Characters that separate words or lines: replaced by a space rather
/// than dropped, so that `ok\rhidden` shows as `ok hidden`.
fn is_break(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// `s` on one line (a table cell, a field of a message): breaks become
/// spaces, every other unsafe character is removed.
pub fn line(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            c if is_break(c) => Some(' '),
            c if is_unsafe(c) => None,
            c => Some(c),
        })
        .collect()
}

/// `s` where newlines are meant (a table, a JSON document): as [`line`]
/// but `\n` is kept.
pub fn text(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            c if is_break(c) => Some(' '),
            c if is_unsafe(c) => None,
            c => Some(c),
        })
        .collect()
}

/// A message from the server (an `error` or a `summary`) on one line: the
/// lines of a multi-line message are joined with `; `.
pub fn message(s: &str) -> String {
    line(&s.trim().replace("\r\n", "\n").replace('\n', "; "))
}

/// At most `max` bytes of a body that is not JSON, on one line, saying
/// how long the whole was when it was cut.
pub fn snippet(body: &[u8], max: usize) -> String {
    let shown = body.get(..max).unwrap_or(body);
    let mut s = line(String::from_utf8_lossy(shown).trim());
    if shown.len() < body.len() {
        s.push_str(&format!(" ... ({} bytes in all)", body.len()));
    }
    s
}

/// A valid JSON text made safe to print, with the same value: unsafe
/// characters can only be inside strings there (outside them JSON allows
/// ASCII only, and raw C0 controls only as the whitespace `\t \n \r`), so
/// each is written as its `\uXXXX` escape; `\r` and `\t` between tokens
/// become nothing and a space. Ends with a newline.
pub fn json(valid: &str) -> String {
    let mut out = String::with_capacity(valid.len() + 1);
    for c in valid.chars() {
        match c {
            '\n' => out.push('\n'),
            '\r' => {}
            '\t' => out.push(' '),
            c if is_unsafe(c) => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "a\u{1b}[2Jb\u{1b}]0;pwned\u{7}c\u{1b}]8;;http://x/\u{1b}\\d\re\u{202e}f\u{9b}g\u{7f}h\u{2066}i\u{200b}j\u{e0041}k\tl\nm\u{2028}n";

    fn safe(s: &str, newline_ok: bool) -> bool {
        s.chars().all(|c| !is_unsafe(c) || (newline_ok && c == '\n'))
    }

    #[test]
    fn lines_and_texts_hold_no_control_or_format_character() {
        let l = line(HOSTILE);
        assert!(safe(&l, false), "{l:?}");
        assert_eq!(l, "a[2Jb]0;pwnedc]8;;http://x/\\d efghijk l m n");
        let t = text(HOSTILE);
        assert!(safe(&t, true), "{t:?}");
        assert_eq!(t.lines().count(), 2);
        assert_eq!(message("first\nsecond\r\nthird\n"), "first; second; third");
        assert!(safe(&message(HOSTILE), false));
        // Plain text and letters of any script go through untouched.
        assert_eq!(line("db-1 10.0.0.7:3306 é ✓ 日本"), "db-1 10.0.0.7:3306 é ✓ 日本");
    }

    #[test]
    fn snippets_are_bounded_lossy_and_clean() {
        let mut body = b"<h1>\x1b[2J\x9b Bad \xff gateway</h1>\r\n".to_vec();
        body.extend_from_slice(&[b'x'; 10_000]);
        let s = snippet(&body, 100);
        assert!(safe(&s, false), "{s:?}");
        assert!(s.starts_with("<h1>[2J\u{fffd} Bad \u{fffd} gateway</h1>  xx"), "{s:?}");
        assert!(s.ends_with(&format!(" ... ({} bytes in all)", body.len())), "{s:?}");
        assert!(s.len() < 200);
        assert_eq!(snippet(b"short", 100), "short");
    }

    #[test]
    fn json_keeps_its_value_and_loses_its_escapes() {
        let v = serde_json::json!({ HOSTILE: [HOSTILE, 1, null, { "k\u{9b}": "\u{202e}" }] });
        for raw in [
            serde_json::to_string(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap().replace('\n', "\r\n\t"),
        ] {
            let out = json(&raw);
            assert!(safe(&out, true), "{out:?}");
            assert!(out.ends_with('\n'));
            let back: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(back, v);
        }
    }
}
