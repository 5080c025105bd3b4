//! Reading user files: one text that may hold several YAML documents (or one JSON document) into
//! JSON values, with a size cap checked before any parsing.
//!
//! YAML is parsed with YAML 1.2 core-schema semantics (`yes` stays a string), duplicate keys and
//! tabs used for indentation are errors, alias expansion and nesting depth are bounded by the
//! parser, so no input can make this panic or run away.

use serde::Deserialize;

/// The largest pipeline file accepted anywhere (KFP's `MaxFileLength`, 32 MiB).
pub const MAX_FILE_BYTES: usize = 32 << 20;

/// A document of a multi-document file, numbered from 1 as a person counts them.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 1-based position in the file (empty documents are counted too).
    pub index: usize,
    /// The document as JSON.
    pub value: serde_json::Value,
}

/// Why a file could not be read as documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Over [`MAX_FILE_BYTES`]; nothing was parsed.
    #[error("file is {size} bytes; the limit is {limit} bytes (32 MiB)")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not UTF-8 text.
    #[error("file is not UTF-8 text: {0}")]
    NotUtf8(String),
    /// A syntax error, with the parser's position.
    #[error("document {document}: {message}")]
    Syntax {
        /// 1-based document number.
        document: usize,
        /// The parser's message (with line and column).
        message: String,
    },
}

/// Parses every document of `bytes`. Empty documents (only comments, or `---` with nothing
/// after it) are skipped but still counted in [`Document::index`].
pub fn read_documents(bytes: &[u8]) -> Result<Vec<Document>, ReadError> {
    read_with(bytes, None)
}

fn read_with(
    bytes: &[u8],
    dups: Option<&std::cell::RefCell<Vec<String>>>,
) -> Result<Vec<Document>, ReadError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            size: bytes.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.to_string()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // JSON first when it looks like JSON: exact JSON semantics (numbers, escapes) and speed.
    let trimmed = text.trim_start();
    if (trimmed.starts_with('{') || trimmed.starts_with('['))
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
    {
        // serde_json keeps the last of duplicate keys silently; JSON gets the same rule as YAML.
        let found = json_duplicate_fields(text.as_bytes());
        match dups {
            Some(d) => d.borrow_mut().extend(found),
            None => {
                if let Some(first) = found.into_iter().next() {
                    return Err(ReadError::Syntax {
                        document: 1,
                        message: first,
                    });
                }
            }
        }
        return Ok(vec![Document { index: 1, value }]);
    }
    flow_depth_within(text, MAX_FLOW_DEPTH)?;
    let mut docs = Vec::new();
    for (i, de) in serde_norway::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let seed = Seed {
            path: String::new(),
            dups,
        };
        let value =
            serde::de::DeserializeSeed::deserialize(seed, de).map_err(|e| ReadError::Syntax {
                document: index,
                message: e.to_string(),
            })?;
        if !value.is_null() {
            docs.push(Document { index, value });
        }
    }
    Ok(docs)
}

/// The deepest nesting of flow collections (`[`, `{`) accepted: the parser's own recursion limit.
pub const MAX_FLOW_DEPTH: usize = 128;

/// One linear pass over the text, before the YAML parser sees it, that refuses flow collections
/// nested deeper than `limit`. libyaml's scanner re-checks every open flow level on every token
/// and serde_norway scans the whole document before building it, so `a: [[[[...` costs the
/// square of its length (200 KB took more than a minute) although it is refused at depth 128
/// in the end. Quoted scalars and comments are skipped; brackets inside block scalars are
/// counted, which can only refuse a document whose text nests brackets past the limit.
fn flow_depth_within(text: &str, limit: usize) -> Result<(), ReadError> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let mut state = In::Plain;
    let mut depth = 0usize;
    let (mut line, mut column, mut document) = (1usize, 0usize, 1usize);
    let mut prev = '\n';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        column += 1;
        match state {
            In::Plain => match c {
                '[' | '{' => {
                    depth += 1;
                    if depth > limit {
                        return Err(ReadError::Syntax {
                            document,
                            message: format!(
                                "flow collections nested deeper than {limit} levels at line \
                                 {line} column {column}"
                            ),
                        });
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                '#' if prev.is_whitespace() => state = In::Comment,
                '\'' | '"' if prev.is_whitespace() || matches!(prev, '[' | '{' | ',' | ':') => {
                    state = if c == '"' { In::Double } else { In::Single };
                }
                _ => {}
            },
            In::Single if c == '\'' => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    column += 1;
                } else {
                    state = In::Plain;
                }
            }
            In::Double if c == '\\' => {
                if chars.next() == Some('\n') {
                    line += 1;
                    column = 0;
                } else {
                    column += 1;
                }
            }
            In::Double if c == '"' => state = In::Plain,
            In::Comment if c == '\n' => state = In::Plain,
            _ => {}
        }
        if c == '\n' {
            line += 1;
            column = 0;
            if state == In::Plain && chars.clone().take(3).eq("---".chars()) {
                // A new document starts; the flow depth of a broken one does not carry over.
                document += 1;
                depth = 0;
            }
        }
        prev = c;
    }
    Ok(())
}

/// Reads a YAML value into JSON, turning scalar keys (`1: x`) into strings as Kubernetes'
/// YAML-to-JSON conversion does. A duplicate mapping key is refused (YAML 1.2 and Go's yaml.v3
/// forbid them; silently keeping one would hide a mistake), or, with `dups`, recorded as
/// `duplicate field "a.b"` with the last value kept — for request bodies, where the
/// `fieldValidation` mode decides (kube-apiserver: Strict refuses, Warn warns, Ignore keeps).
struct Seed<'a> {
    path: String,
    dups: Option<&'a std::cell::RefCell<Vec<String>>>,
}

impl Seed<'_> {
    fn child(&self, segment: &str) -> Self {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else if segment.starts_with('[') {
            format!("{}{segment}", self.path)
        } else {
            format!("{}.{segment}", self.path)
        };
        Seed {
            path,
            dups: self.dups,
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Seed<'_> {
    type Value = serde_json::Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// The whole value, refusing duplicate keys (files).
struct StrictValue(serde_json::Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed;
        Seed {
            path: String::new(),
            dups: None,
        }
        .deserialize(d)
        .map(StrictValue)
    }
}

impl<'de> serde::de::Visitor<'de> for Seed<'_> {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value representable as JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v)
            .map(serde_json::Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not representable in JSON")))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child(&format!("[{}]", items.len())))? {
            items.push(v);
        }
        Ok(serde_json::Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(StrictValue(key)) = map.next_key()? {
            let key = match key {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => "null".to_owned(),
                _ => {
                    return Err(serde::de::Error::custom(
                        "mapping keys must be scalars (strings, numbers or booleans)",
                    ));
                }
            };
            let child = self.child(&key);
            let value = map.next_value_seed(child)?;
            if out.contains_key(&key) {
                match self.dups {
                    Some(dups) => dups
                        .borrow_mut()
                        .push(format!("duplicate field \"{}\"", self.child(&key).path)),
                    None => {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate mapping key \"{key}\""
                        )));
                    }
                }
            }
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// The duplicate keys of a JSON text, as `duplicate field "a.b"` (in document order). Text that
/// is not JSON has none; the caller's parse reports it.
pub fn json_duplicate_fields(bytes: &[u8]) -> Vec<String> {
    json_reporting_duplicates(bytes)
        .map(|(_, d)| d)
        .unwrap_or_default()
}

/// Parses one JSON value (serde_json's syntax and limits), recording duplicate keys as
/// `duplicate field "a.b"` with the last value kept, for the `fieldValidation` mode to judge.
pub fn json_reporting_duplicates(
    bytes: &[u8],
) -> Result<(serde_json::Value, Vec<String>), serde_json::Error> {
    let dups = std::cell::RefCell::new(Vec::new());
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
        path: String::new(),
        dups: Some(&dups),
    };
    let value = serde::de::DeserializeSeed::deserialize(seed, &mut de)?;
    de.end()?;
    Ok((value, dups.into_inner()))
}

/// Parses every document as [`read_documents`] does, but records duplicate mapping keys
/// (`duplicate field "spec.x"`, the last value kept) instead of refusing them: for request
/// bodies, whose `fieldValidation` decides what a duplicate means.
pub fn read_documents_reporting_duplicates(
    bytes: &[u8],
) -> Result<(Vec<Document>, Vec<String>), ReadError> {
    let dups = std::cell::RefCell::new(Vec::new());
    let docs = read_with(bytes, Some(&dups))?;
    Ok((docs, dups.into_inner()))
}

#[cfg(test)]
mod tests {

    #[test]
    fn duplicates_are_refused_in_files_and_reported_in_bodies() {
        let yaml = b"a: 1\nspec:\n  x: 1\n  x: 2\nitems:\n- k: 1\n  k: 2\n";
        assert!(read_documents(yaml).is_err(), "files: an error");
        let (docs, dups) = read_documents_reporting_duplicates(yaml).expect("parses");
        assert_eq!(
            dups,
            vec![
                "duplicate field \"spec.x\"",
                "duplicate field \"items[0].k\""
            ]
        );
        assert_eq!(docs[0].value["spec"]["x"], 2, "the last value is kept");
        let json = br#"{"spec": {"displayName": "a", "displayName": "b"}}"#;
        assert!(read_documents(json).is_err(), "JSON files too");
        let (v, dups) = json_reporting_duplicates(json).expect("parses");
        assert_eq!(dups, vec!["duplicate field \"spec.displayName\""]);
        assert_eq!(v["spec"]["displayName"], "b");
        assert!(json_reporting_duplicates(b"{} trailing").is_err());
        assert!(json_duplicate_fields(br#"{"a": [1, {"b": 1}]}"#).is_empty());
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_the_parser_sees_it() {
        for text in [
            format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a: {}", "{x: ".repeat(50_000)),
            format!("[{}", "[".repeat(200)),
        ] {
            match read_documents(text.as_bytes()) {
                Err(ReadError::Syntax {
                    document: 1,
                    message,
                }) => assert!(
                    message.contains("nested deeper than 128 levels"),
                    "{message}"
                ),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn brackets_in_strings_comments_and_block_scalars_do_not_count() {
        let deep = "[".repeat(300);
        let text = format!(
            "a: \"{deep}\"\nb: '{deep} it''s'\n# {deep}\nc: |\n  [[ -f x ]] && echo \"it's\"\nd: [1, [2, [3]]]\n"
        );
        let docs = read_documents(text.as_bytes()).expect("valid YAML");
        assert_eq!(docs[0].value["a"], serde_json::json!(deep));
        assert_eq!(docs[0].value["d"], serde_json::json!([1, [2, [3]]]));
        // The depth of one document does not carry over into the next.
        let half = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let two = format!("a: {}\n---\nb: {}\n", half(100), half(100));
        assert_eq!(
            read_documents(two.as_bytes()).expect("two documents").len(),
            2
        );
    }

    use super::*;

    #[test]
    fn multi_document_and_empty_documents() {
        let docs = read_documents(b"# only a comment\n---\na: 1\n---\n---\nb: [x]\n").unwrap();
        assert_eq!(docs.len(), 2);
        // A comment before the first `---` is not a document of its own (YAML 1.2).
        assert_eq!(docs[0].index, 1);
        assert_eq!(docs[1].index, 3);
        assert_eq!(docs[1].value["b"][0], "x");
    }

    #[test]
    fn yaml_1_2_booleans_stay_strings() {
        let docs = read_documents(b"a: yes\nb: true\n").unwrap();
        assert_eq!(docs[0].value["a"], "yes");
        assert_eq!(docs[0].value["b"], true);
    }

    #[test]
    fn duplicate_keys_and_tabs_are_errors() {
        assert!(matches!(
            read_documents(b"a: 1\na: 2\n"),
            Err(ReadError::Syntax { .. })
        ));
        assert!(matches!(
            read_documents(b"a:\n\tb: 1\n"),
            Err(ReadError::Syntax { .. })
        ));
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(matches!(
            read_documents(&big),
            Err(ReadError::TooLarge { .. })
        ));
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            s.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(read_documents(s.as_bytes()).is_err());
    }

    #[test]
    fn json_is_read_as_json() {
        let docs = read_documents(b" {\"a\": 1.0, \"b\": \"\\u00e9\"}").unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].value["b"], "é");
    }
}
