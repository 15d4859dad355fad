//! Health flow, MySQL check, server text: every string a server supplies
//! that may end up in a check's reason (error messages, values shown,
//! plugin names, the version) goes through [`clean_text`] first, so a
//! hostile server can neither forge log lines nor reorder them on screen.

/// Longest text kept from a server, in characters (an error message, a
/// value); longer text is cut and ends with `...`.
pub const MAX_TEXT: usize = 200;

/// Whether `c` must not reach a log line: control characters (C0, DEL, C1),
/// the line and paragraph separators (U+2028, U+2029) and the bidirectional
/// controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), which
/// make a terminal show text in another order than it is written.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Server text made safe to log: invalid UTF-8 replaced (U+FFFD), every
/// [`is_unsafe`] character turned into `?`, at most [`MAX_TEXT`]
/// characters.
pub fn clean_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut chars = text.chars();
    let mut out: String = chars
        .by_ref()
        .take(MAX_TEXT)
        .map(|c| if is_unsafe(c) { '?' } else { c })
        .collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_become_question_marks() {
        assert_eq!(clean_text(b"plain text, \xc3\xa4 kept"), "plain text, \u{e4} kept");
        assert_eq!(clean_text(b"a\r\nb\tc\x1b[31m\x7f\0"), "a??b?c?[31m??");
        // C1 controls (U+0085 NEL, U+009B CSI).
        assert_eq!(clean_text("x\u{85}y\u{9b}z".as_bytes()), "x?y?z");
        for c in [
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            let text = format!("user{c}txt.exe");
            assert_eq!(clean_text(text.as_bytes()), "user?txt.exe", "U+{:04X}", c as u32);
        }
        // Neighbours of the ranges stay: they are ordinary characters.
        assert_eq!(
            clean_text("\u{2027}\u{202f}\u{2065}\u{206a}".as_bytes()),
            "\u{2027}\u{202f}\u{2065}\u{206a}"
        );
        assert_eq!(clean_text(b"ok \xff"), "ok \u{fffd}");
        assert_eq!(clean_text(b""), "");
    }

    #[test]
    fn long_text_is_cut() {
        assert_eq!(clean_text(&[b'x'; MAX_TEXT]), "x".repeat(MAX_TEXT));
        let long = clean_text(&[b'y'; MAX_TEXT + 1]);
        assert_eq!(long, format!("{}...", "y".repeat(MAX_TEXT)));
        // Counted in characters, not bytes.
        let wide = "\u{e4}".repeat(MAX_TEXT + 50);
        assert_eq!(clean_text(wide.as_bytes()).chars().count(), MAX_TEXT + 3);
        let hostile = "\u{202e}".repeat(10_000);
        assert_eq!(clean_text(hostile.as_bytes()), format!("{}...", "?".repeat(MAX_TEXT)));
    }
}
