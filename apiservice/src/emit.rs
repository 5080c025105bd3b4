//! Writing JSON values as YAML that every YAML reader in the path reads back unchanged: kubectl
//! and client-go (go-yaml v2, YAML 1.1: `n`, `yes`, `on` are booleans, `1_000` and `0o17` are
//! integers), PyYAML (YAML 1.1: `1e5` is a string, `1.0e+5` a float), and YAML 1.2 readers.
//!
//! A string is written plain only when it is plainly a string under all of them (a letter or
//! `_` or `/` first, then letters, digits, `_`, `.`, `/`, `-` and single inner spaces, and not
//! one of YAML 1.1's boolean or null words); multi-line text as a literal block when that keeps
//! it exactly; everything else double-quoted with YAML escapes. Keys follow the same rule, so an
//! input named `n` stays the string `"n"`. Floats always carry a `.` and a signed exponent.
//! It writes what it is given: choosing and validating the objects is the caller's job.

use serde_json::Value;

/// YAML 1.1's boolean and null words (go-yaml v2 and PyYAML resolve these plain scalars).
const RESERVED: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// Several documents, separated by `---`.
pub fn documents(values: &[Value]) -> String {
    let mut out = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&document(v));
    }
    out
}

/// One document.
pub fn document(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0),
        other => {
            out.push_str(&scalar_inline(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        pad(out, indent);
        out.push_str(&string(k));
        out.push(':');
        write_value(out, v, indent, true);
    }
}

fn write_seq(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        match v {
            Value::Object(m) if !m.is_empty() => {
                // The item's mapping at indent + 2, its first line led by "- " instead.
                let mut child = String::new();
                write_map(&mut child, m, indent + 2);
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&child[indent + 2..]);
            }
            Value::Array(inner) if !inner.is_empty() => {
                let mut child = String::new();
                write_seq(&mut child, inner, indent + 2);
                pad(out, indent);
                out.push_str("- ");
                out.push_str(&child[indent + 2..]);
            }
            _ => {
                pad(out, indent);
                out.push('-');
                write_value(out, v, indent, false);
            }
        }
    }
}

/// The value after `key:` (`in_map`) or `-`: inline, a literal block, or a nested block on the
/// next lines (a mapping's sequence at the key's indent, as kubectl writes it).
fn write_value(out: &mut String, v: &Value, indent: usize, in_map: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_map(out, m, indent + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_seq(out, a, if in_map { indent } else { indent + 2 });
        }
        Value::String(s) if literal_ok(s) => {
            let trailing = s.len() - s.trim_end_matches('\n').len();
            out.push_str(match trailing {
                0 => " |-\n",
                1 => " |\n",
                _ => " |+\n",
            });
            let body = s.strip_suffix('\n').unwrap_or(s);
            for line in body.split('\n') {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&scalar_inline(other));
            out.push('\n');
        }
    }
}

/// Multi-line text a literal block keeps exactly: printable, no carriage returns or other
/// line breaks than `\n`, and a first non-empty line that does not start with a space or a tab
/// (the block's indentation is detected from it; an indentation indicator would be needed,
/// which parsers read differently). Empty lines before it are fine: they are written empty.
fn literal_ok(s: &str) -> bool {
    let Some(first) = s.split('\n').find(|l| !l.is_empty()) else {
        return false;
    };
    s.contains('\n')
        && !first.starts_with([' ', '\t'])
        && s.chars().all(|c| c == '\n' || c == '\t' || printable(c))
}

/// YAML's printable set, less the characters YAML 1.1 takes as line breaks or a byte-order mark.
fn printable(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7e}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')
}

fn scalar_inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn number(n: &serde_json::Number) -> String {
    if n.is_f64() {
        let mut s = n.to_string();
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => (s[..i].to_owned(), Some(s[i + 1..].to_owned())),
            None => (s.clone(), None),
        };
        let mantissa = if mantissa.contains('.') {
            mantissa
        } else {
            format!("{mantissa}.0")
        };
        s = match exponent {
            Some(e) if e.starts_with(['-', '+']) => format!("{mantissa}e{e}"),
            Some(e) => format!("{mantissa}e+{e}"),
            None => mantissa,
        };
        s
    } else {
        n.to_string()
    }
}

/// A string scalar: plain when unambiguous, else double-quoted.
fn string(s: &str) -> String {
    if plain_ok(s) { s.to_owned() } else { quoted(s) }
}

fn plain_ok(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    if RESERVED.contains(&s) || s.ends_with(' ') || s.contains("  ") {
        return false;
    }
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ' '))
}

fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn back(text: &str) -> Vec<Value> {
        crate::yaml::read_documents(text.as_bytes())
            .unwrap()
            .into_iter()
            .map(|d| d.value)
            .collect()
    }

    #[test]
    fn yaml_1_1_words_and_numbers_stay_strings() {
        let v = json!({
            "n": "y", "yes": "on", "off": "NO", "null": "~", "x": "1_000", "o": "0o17",
            "h": "0x1f", "t": "2001-12-14", "e": "1e5", "dot": ".inf", "m": "<<",
            "empty": "", "sp": " lead", "tr": "trail ", "colon": "a: b", "hash": "a #b",
            "dash": "-x", "q": "{{$}}", "u": "caf\u{e9} \u{2028} \u{85}", "ctl": "a\u{7f}b",
        });
        let text = document(&v);
        for word in [
            "\"n\":",
            "\"yes\":",
            "\"off\":",
            "\"null\":",
            "\"y\"",
            "\"on\"",
            "\"NO\"",
        ] {
            assert!(text.contains(word), "{word} not quoted in\n{text}");
        }
        assert!(text.contains("\\u2028") && text.contains("\\x85") && text.contains("\\x7f"));
        assert_eq!(back(&text), vec![v]);
    }

    #[test]
    fn numbers_keep_their_kind() {
        let v = json!({"i": 42, "neg": -7, "f": 42.0, "big": 1e20, "small": 1.5e-9, "b": true});
        let text = document(&v);
        assert!(text.contains("f: 42.0\n"), "{text}");
        assert!(text.contains("big: 1.0e+20\n"), "{text}");
        assert!(text.contains("small: 1.5e-9\n"), "{text}");
        assert_eq!(back(&text), vec![v]);
    }

    #[test]
    fn text_blocks_round_trip() {
        for s in [
            "a\nb",
            "a\nb\n",
            "a\n\nb\n\n\n",
            "\nleading newline",
            " leading space\nx",
            "tab\tinside\n\tindented by tab\n",
            "trailing spaces  \n  indented\n",
            "\n",
            "\n\n",
            "\n\nfirst line after two empty ones\n  indented\n",
            "\n  first content line indented\n",
            "\n\tfirst content line after a tab\n",
            "crlf\r\nline",
        ] {
            let v = json!({"k": s, "list": [s, {"inner": s}]});
            let text = document(&v);
            assert_eq!(back(&text), vec![v], "{s:?} as\n{text}");
        }
    }

    #[test]
    fn nesting_and_empties() {
        let v = json!({
            "a": {"b": [1, [2, 3], {"c": [], "d": {}}, [], {}], "e": null},
            "seq": [[{"x": 1, "y": [true]}]],
        });
        let text = documents(&[v.clone(), json!({"k": "v"})]);
        assert_eq!(back(&text), vec![v, json!({"k": "v"})]);
    }
}
