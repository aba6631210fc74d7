//! Text from elsewhere, made safe to print on a terminal.
//!
//! Paths, host names, reasons and names reach the CLI from agents (what a
//! user named a file, what a computer called itself) through the server. A
//! control character in one (an escape sequence) would be run by the
//! admin's terminal: it can rewrite what is on the screen, hide a line, set
//! the window title, or worse; a Unicode bidirectional override or isolate
//! shows a name in another order than it has. [`shown`] makes each of them
//! visible instead, as an escape (`\x1b`, `\u{202e}`). Human output passes
//! every such field through it; `--json` output stays as it is (JSON
//! escapes control characters itself, and its reader is a program).
use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal as it is: C0 controls, DEL, C1
/// controls, and the bidirectional formatting characters (embeddings and
/// overrides U+202A-U+202E, isolates U+2066-U+2069, and the marks U+061C,
/// U+200E, U+200F).
fn hidden(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{61c}'
        | '\u{200e}'
        | '\u{200f}')
}

/// `s` with every control and bidirectional formatting character written
/// as a visible escape: `\t`, `\n`, `\r`, `\xNN` for the other ASCII ones,
/// `\u{NNNN}` beyond. Borrowed when there is nothing to escape. (A
/// backslash stays as it is: Linux paths seldom hold one, and escaping it
/// would make every such path harder to read.)
pub(crate) fn shown(s: &str) -> Cow<'_, str> {
    if !s.chars().any(hidden) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if hidden(c) && (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn control_and_bidi_characters_are_shown_escaped() {
        for (raw, expect) in [
            ("/usr/bin/ls", "/usr/bin/ls"),
            ("/tmp/é ü 日本", "/tmp/é ü 日本"),
            ("/tmp/\x1b]0;pwned\x07x", "/tmp/\\x1b]0;pwned\\x07x"),
            ("/tmp/\x1b[2J\x1b[H", "/tmp/\\x1b[2J\\x1b[H"),
            ("a\tb\nc\rd\0e", "a\\tb\\nc\\rd\\x00e"),
            ("del\x7f", "del\\x7f"),
            ("c1 \u{9b}31m \u{85}", "c1 \\u{9b}31m \\u{85}"),
            ("/tmp/\u{202e}fdp.exe", "/tmp/\\u{202e}fdp.exe"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            (
                "\u{2066}x\u{2067}\u{2068}\u{2069}",
                "\\u{2066}x\\u{2067}\\u{2068}\\u{2069}",
            ),
            ("\u{200e}\u{200f}\u{61c}", "\\u{200e}\\u{200f}\\u{61c}"),
            // Around the ranges: printable, kept.
            (
                "\u{a0}\u{2029}\u{2070}\u{2065}",
                "\u{a0}\u{2029}\u{2070}\u{2065}",
            ),
            ("back\\slash", "back\\slash"),
        ] {
            assert_eq!(shown(raw), expect, "{raw:?}");
        }
        assert!(matches!(shown("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
