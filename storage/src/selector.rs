//! Label and field selectors: parsing the query-string syntax kube-apiserver accepts and
//! matching objects in memory (watch filtering). The SQL backends translate the same parsed form
//! into SQL (`sql::query`), so both paths agree on meaning.

use std::collections::BTreeMap;

use crate::index::IndexColumn;

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the label is absent).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also true when absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// What a field selector term compares: the object's name, its namespace, or one of the generic
/// indexed columns (which selector name maps to which column is the caller's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
    /// A generic indexed column.
    Indexed(IndexColumn),
}

/// A parsed field selector: `field=value` and `field!=value` terms, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(Field, bool, String)>);

/// A selector that does not parse; the message is kube-apiserver's style.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// Splits on commas that are not inside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (f,g),!h`. Empty means everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_terms(s) {
            let t = term.trim();
            let bad = || SelectorError(format!("unable to parse requirement: {t:?}"));
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement::DoesNotExist(k.trim().to_owned())
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEquals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Equals(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = split_set_op(t, " notin ") {
                Requirement::NotIn(k, parse_set(rest).ok_or_else(bad)?)
            } else if let Some((k, rest)) = split_set_op(t, " in ") {
                Requirement::In(k, parse_set(rest).ok_or_else(bad)?)
            } else {
                Requirement::Exists(t.to_owned())
            };
            let (key, values): (&str, Vec<&str>) = match &req {
                Requirement::Equals(k, v) | Requirement::NotEquals(k, v) => (k, vec![v.as_str()]),
                Requirement::In(k, vs) | Requirement::NotIn(k, vs) => {
                    (k, vs.iter().map(String::as_str).collect())
                }
                Requirement::Exists(k) | Requirement::DoesNotExist(k) => (k, vec![]),
            };
            if !valid_key(key) {
                return Err(SelectorError(format!(
                    "invalid label key {key:?} in selector {s:?}"
                )));
            }
            if let Some(v) = values.iter().find(|v| !valid_value(v)) {
                return Err(SelectorError(format!(
                    "invalid label value {v:?} in selector {s:?}"
                )));
            }
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|x| vs.contains(x)),
            Requirement::NotIn(k, vs) => !labels.get(k).is_some_and(|x| vs.contains(x)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

fn split_set_op(t: &str, op: &str) -> Option<(String, String)> {
    let i = t.find(op)?;
    Some((
        t[..i].trim().to_owned(),
        t[i + op.len()..].trim().to_owned(),
    ))
}

fn parse_set(s: String) -> Option<Vec<String>> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    (!vals.is_empty()).then_some(vals)
}

impl FieldSelector {
    /// Parses `metadata.name=x,spec.parent!=y`; `allowed` maps each selectable field name to what
    /// it compares. Unknown fields are errors, as in kube-apiserver ("field label not supported").
    pub fn parse(s: &str, allowed: &[(&str, Field)]) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for term in s.split(',') {
            let t = term.trim();
            let (name, eq, value) = if let Some((k, v)) = t.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = t.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once('=') {
                (k, true, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            let field = allowed
                .iter()
                .find(|(n, _)| *n == name.trim())
                .map(|(_, f)| *f)
                .ok_or_else(|| {
                    SelectorError(format!("field label not supported: {}", name.trim()))
                })?;
            terms.push((field, eq, value.trim().to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    /// True when the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an object with these field values matches.
    pub fn matches(&self, get: impl Fn(Field) -> Option<String>) -> bool {
        self.0.iter().all(|(f, eq, v)| {
            let actual = get(*f).unwrap_or_default();
            (actual == *v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse("a=b,c==d,e!=f,g in (h, i),j notin (k),l,!m").unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("a".into(), "b".into()),
                Requirement::Equals("c".into(), "d".into()),
                Requirement::NotEquals("e".into(), "f".into()),
                Requirement::In("g".into(), vec!["h".into(), "i".into()]),
                Requirement::NotIn("j".into(), vec!["k".into()]),
                Requirement::Exists("l".into()),
                Requirement::DoesNotExist("m".into()),
            ]
        );
    }

    #[test]
    fn matches_like_kubernetes() {
        let l = labels(&[("team", "t3"), ("env", "prod")]);
        for (sel, want) in [
            ("team=t3", true),
            ("team!=t3", false),
            ("missing!=x", true),
            ("team in (t1,t3)", true),
            ("team notin (t3)", false),
            ("missing notin (t3)", true),
            ("env", true),
            ("!env", false),
            ("team=t3,env=dev", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(LabelSelector::parse("a in b").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("=b").is_err());
        let allowed = [
            ("metadata.name", Field::Name),
            ("metadata.namespace", Field::Namespace),
        ];
        assert!(FieldSelector::parse("spec.parent=x", &allowed).is_err());
        assert!(FieldSelector::parse("metadata.name", &allowed).is_err());
        let f = FieldSelector::parse("metadata.name=a,metadata.namespace!=b", &allowed).unwrap();
        assert!(f.matches(|f| Some(if f == Field::Name { "a" } else { "c" }.to_owned())));
        assert!(!f.matches(|_| Some("b".to_owned())));
    }
}
