//! KFP list parameters -> the store's sorted query: `filter` (JSON of KFP's `Filter`, raw or
//! URL-encoded once or twice more, numeric or named operations, snake_case or lowerCamelCase
//! value keys), `sort_by` (`"field"`, `"field asc"`, `"field desc"`), `page_size` (0 -> 20,
//! clamped to 200) and `page_token` (opaque: base64 of the sort, the filter and the keyset cursor,
//! so a page continues after the last row returned and nothing is skipped or repeated while
//! others write). Everything runs in the store's SQL; nothing is filtered in memory here.
//!
//! Empty query values (`page_token=&sort_by=`, as kfp.Client sends) mean "not given".

use base64::Engine;
use kfp_storage::IndexColumn;
use kfp_storage::query::{Column, Cursor, Op, Predicate, Value as QValue};
use serde::{Deserialize, Serialize};

use super::error::KfpError;

/// kfp's default page size when none is given.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// KFP's largest page.
pub const MAX_PAGE_SIZE: usize = 200;
/// A bound on the filter's JSON, so a hostile filter costs nothing.
const MAX_FILTER_BYTES: usize = 64 << 10;
/// A bound on predicates and on values of an `IN`.
const MAX_PREDICATES: usize = 64;
const MAX_IN_VALUES: usize = 1000;

/// Which list: the keys each one can filter and sort on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    /// ListPipelines.
    Pipelines,
    /// ListPipelineVersions.
    Versions,
}

impl Listing {
    fn model(self) -> &'static str {
        match self {
            Listing::Pipelines => "Pipeline",
            Listing::Versions => "PipelineVersion",
        }
    }

    /// The store column of a KFP field name (`None`: unknown; `Err`: known but not served).
    fn column(self, key: &str) -> Result<Option<Column>, KfpError> {
        Ok(Some(match (self, key) {
            (_, "id") | (Listing::Pipelines, "pipeline_id") => Column::Uid,
            (Listing::Versions, "pipeline_version_id") => Column::Uid,
            (Listing::Pipelines, "name") => Column::Name,
            (Listing::Versions, "name") => Column::Indexed(IndexColumn::Alias),
            (_, "display_name") => Column::Indexed(IndexColumn::Title),
            (_, "created_at") => Column::CreatedAt,
            (_, "description") => Column::Indexed(IndexColumn::Detail),
            (Listing::Pipelines, "namespace") => Column::Namespace,
            (Listing::Versions, "status" | "pipeline_spec") => {
                return Err(KfpError::invalid(format!(
                    "filtering or sorting on {key:?} is not supported by this server"
                )));
            }
            _ => return Ok(None),
        }))
    }
}

/// A KFP filter, decoded as protojson does (both key casings; unknown fields refused).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterIn {
    #[serde(default)]
    predicates: Vec<PredicateIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredicateIn {
    #[serde(default)]
    key: String,
    #[serde(default)]
    operation: Option<Operation>,
    #[serde(default, alias = "intValue")]
    int_value: Option<Number>,
    #[serde(default, alias = "longValue")]
    long_value: Option<Number>,
    #[serde(default, alias = "stringValue")]
    string_value: Option<String>,
    #[serde(default, alias = "timestampValue")]
    timestamp_value: Option<String>,
    #[serde(default, alias = "intValues")]
    int_values: Option<Values<Number>>,
    #[serde(default, alias = "longValues")]
    long_values: Option<Values<Number>>,
    #[serde(default, alias = "stringValues")]
    string_values: Option<Values<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Values<T> {
    #[serde(default = "Vec::new")]
    values: Vec<T>,
}

/// An integer as protojson accepts it: a JSON number, or a string of digits (int64).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

impl Number {
    fn get(&self) -> Result<i64, KfpError> {
        match self {
            Number::Int(i) => Ok(*i),
            Number::Text(t) => t
                .parse()
                .map_err(|_| KfpError::invalid(format!("invalid integer {t:?} in the filter"))),
        }
    }
}

/// An operation, by name or by number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Operation {
    Number(i64),
    Name(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    In,
    Substring,
}

impl Operation {
    fn kind(&self) -> Result<OpKind, KfpError> {
        let kind = match self {
            Operation::Number(1) => OpKind::Eq,
            Operation::Number(2) => OpKind::Ne,
            Operation::Number(3) => OpKind::Gt,
            Operation::Number(5) => OpKind::Ge,
            Operation::Number(6) => OpKind::Lt,
            Operation::Number(7) => OpKind::Le,
            Operation::Number(8) => OpKind::In,
            Operation::Number(9) => OpKind::Substring,
            Operation::Name(n) => match n.as_str() {
                "EQUALS" => OpKind::Eq,
                "NOT_EQUALS" => OpKind::Ne,
                "GREATER_THAN" => OpKind::Gt,
                "GREATER_THAN_EQUALS" => OpKind::Ge,
                "LESS_THAN" => OpKind::Lt,
                "LESS_THAN_EQUALS" => OpKind::Le,
                "IN" => OpKind::In,
                "IS_SUBSTRING" => OpKind::Substring,
                _ => return Err(KfpError::invalid(format!("invalid filter operation {n:?}"))),
            },
            Operation::Number(n) => {
                return Err(KfpError::invalid(format!("invalid filter operation {n}")));
            }
        };
        Ok(kind)
    }
}

/// A decoded filter: column predicates and tag terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Column predicates.
    pub predicates: Vec<Predicate>,
    /// `tags.<key>` = value.
    pub terms: Vec<(String, String)>,
    /// The canonical text of the filter (what a page token remembers).
    pub canonical: String,
}

/// Percent-decoding as Go's `url.QueryUnescape` (`+` is a space); `None` on a bad escape.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = |b: u8| (b as char).to_digit(16);
                let h = hex(*bytes.get(i + 1)?)?;
                let l = hex(*bytes.get(i + 2)?)?;
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses the `filter` parameter (already URL-decoded once by the query parser). The raw JSON
/// is tried first, then up to two more decodings (the dashboard double-encodes): a raw JSON
/// value keeps its `+` and `%`, unlike KFP, which always decodes once more.
pub fn parse_filter(raw: &str, listing: Listing) -> Result<Filter, KfpError> {
    if raw.len() > MAX_FILTER_BYTES {
        return Err(KfpError::invalid("failed to parse valid filter: too long"));
    }
    let mut text = raw.to_owned();
    let mut parsed = serde_json::from_str::<FilterIn>(&text);
    for _ in 0..2 {
        if parsed.is_ok() {
            break;
        }
        match query_unescape(&text) {
            Some(t) if t != text => {
                text = t;
                parsed = serde_json::from_str::<FilterIn>(&text);
            }
            _ => break,
        }
    }
    let filter = parsed.map_err(|e| {
        KfpError::invalid(format!("failed to parse valid filter from {raw:?}: {e}"))
    })?;
    if filter.predicates.len() > MAX_PREDICATES {
        return Err(KfpError::invalid(format!(
            "a filter has at most {MAX_PREDICATES} predicates"
        )));
    }
    let mut out = Filter::default();
    for p in &filter.predicates {
        predicate(p, listing, &mut out)?;
    }
    out.canonical = canonical(&out);
    Ok(out)
}

fn canonical(f: &Filter) -> String {
    // Debug text is stable for the same decoded filter: what the page token compares.
    format!("{:?}|{:?}", f.predicates, f.terms)
}

fn predicate(p: &PredicateIn, listing: Listing, out: &mut Filter) -> Result<(), KfpError> {
    if p.key.is_empty() {
        return Err(KfpError::invalid("filter predicate key is empty"));
    }
    let kind = p
        .operation
        .as_ref()
        .ok_or_else(|| {
            KfpError::invalid(format!("filter predicate on {:?} has no operation", p.key))
        })?
        .kind()?;
    let scalars = [
        p.int_value.is_some(),
        p.long_value.is_some(),
        p.string_value.is_some(),
        p.timestamp_value.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let lists = [
        p.int_values.is_some(),
        p.long_values.is_some(),
        p.string_values.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if scalars + lists != 1 {
        return Err(KfpError::invalid(format!(
            "filter predicate on {:?} needs exactly one value",
            p.key
        )));
    }
    if let Some(tag) = p.key.strip_prefix("tags.") {
        return match (kind, &p.string_value) {
            (OpKind::Eq, Some(v)) if !tag.is_empty() => {
                out.terms.push((tag.to_owned(), v.clone()));
                Ok(())
            }
            _ => Err(KfpError::invalid(format!(
                "tag filter {:?} supports only EQUALS with a string_value",
                p.key
            ))),
        };
    }
    let column = listing.column(&p.key)?.ok_or_else(|| {
        KfpError::invalid(format!(
            "no support for filtering on unrecognized field {:?}",
            p.key
        ))
    })?;
    let value = |v: &PredicateIn| -> Result<QValue, KfpError> {
        scalar(v, column)?
            .ok_or_else(|| KfpError::invalid(format!("filter on {:?} needs a single value", p.key)))
    };
    let op = match kind {
        OpKind::Eq => Op::Eq(value(p)?),
        OpKind::Ne => Op::Ne(value(p)?),
        OpKind::Gt => Op::Gt(value(p)?),
        OpKind::Ge => Op::Ge(value(p)?),
        OpKind::Lt => Op::Lt(value(p)?),
        OpKind::Le => Op::Le(value(p)?),
        OpKind::In => Op::In(list(p, column)?),
        OpKind::Substring => match (&p.string_value, column.is_integer()) {
            // Names, namespaces, version names and uids are lower case by their validation:
            // a case-sensitive match of the lower-cased value is the same answer, cheaper.
            (Some(s), false) if lower_case_column(column) => Op::Contains(s.to_lowercase()),
            (Some(s), false) => Op::Substring(s.clone()),
            _ => {
                return Err(KfpError::invalid(format!(
                    "IS_SUBSTRING on {:?} needs a string_value on a text field",
                    p.key
                )));
            }
        },
    };
    out.predicates.push(Predicate { column, op });
    Ok(())
}

/// Columns whose values are always lower case (DNS names, label-like names, uuids).
fn lower_case_column(c: Column) -> bool {
    matches!(
        c,
        Column::Name | Column::Namespace | Column::Uid | Column::Indexed(IndexColumn::Alias)
    )
}

/// A scalar value for `column` (`None` when the predicate carries a list).
fn scalar(p: &PredicateIn, column: Column) -> Result<Option<QValue>, KfpError> {
    let int = |i: i64| {
        if column.is_integer() {
            QValue::Int(i)
        } else {
            QValue::Text(i.to_string())
        }
    };
    if let Some(n) = p.int_value.as_ref().or(p.long_value.as_ref()) {
        return Ok(Some(int(n.get()?)));
    }
    if let Some(t) = &p.timestamp_value {
        let secs = t
            .parse::<k8s_openapi::jiff::Timestamp>()
            .map_err(|e| KfpError::invalid(format!("invalid timestamp_value {t:?}: {e}")))?
            .as_second();
        return Ok(Some(int(secs)));
    }
    if let Some(s) = &p.string_value {
        if column.is_integer() {
            // created_at compared with a string: an RFC 3339 time or a number of seconds.
            let secs = s
                .parse::<i64>()
                .ok()
                .or_else(|| {
                    s.parse::<k8s_openapi::jiff::Timestamp>()
                        .ok()
                        .map(|t| t.as_second())
                })
                .ok_or_else(|| {
                    KfpError::invalid(format!("{s:?} is not a time (RFC 3339) or a number"))
                })?;
            return Ok(Some(QValue::Int(secs)));
        }
        return Ok(Some(QValue::Text(s.clone())));
    }
    Ok(None)
}

fn list(p: &PredicateIn, column: Column) -> Result<Vec<QValue>, KfpError> {
    let values: Vec<QValue> = if let Some(v) = p.int_values.as_ref().or(p.long_values.as_ref()) {
        v.values
            .iter()
            .map(|n| {
                n.get().map(|i| {
                    if column.is_integer() {
                        QValue::Int(i)
                    } else {
                        QValue::Text(i.to_string())
                    }
                })
            })
            .collect::<Result<_, _>>()?
    } else if let Some(v) = &p.string_values {
        if column.is_integer() {
            return Err(KfpError::invalid(format!(
                "IN on {:?} needs int_values or long_values",
                p.key
            )));
        }
        v.values.iter().cloned().map(QValue::Text).collect()
    } else {
        return Err(KfpError::invalid(format!(
            "IN on {:?} needs a list of values",
            p.key
        )));
    };
    if values.len() > MAX_IN_VALUES {
        return Err(KfpError::invalid(format!(
            "IN takes at most {MAX_IN_VALUES} values"
        )));
    }
    Ok(values)
}

/// A decoded `sort_by`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sort {
    /// The KFP field name, as given.
    pub field: String,
    /// Descending.
    pub desc: bool,
}

impl Sort {
    /// The default: `created_at` ascending.
    pub fn default_order() -> Self {
        Sort {
            field: "created_at".into(),
            desc: false,
        }
    }

    /// The store column.
    pub fn column(&self, listing: Listing) -> Result<Column, KfpError> {
        listing.column(&self.field)?.ok_or_else(|| {
            KfpError::invalid(format!(
                "Invalid sorting field: {:?} on listable type {}",
                self.field,
                listing.model()
            ))
        })
    }
}

/// Parses `sort_by`.
pub fn parse_sort(raw: &str, listing: Listing) -> Result<Sort, KfpError> {
    let lower = raw.to_lowercase();
    let parts: Vec<&str> = lower.split_whitespace().collect();
    let sort = match parts.as_slice() {
        [] => Sort::default_order(),
        [f] => Sort {
            field: (*f).to_owned(),
            desc: false,
        },
        [f, "asc"] => Sort {
            field: (*f).to_owned(),
            desc: false,
        },
        [f, "desc"] => Sort {
            field: (*f).to_owned(),
            desc: true,
        },
        _ => {
            return Err(KfpError::invalid(format!(
                "Invalid sorting order {raw:?}: use \"field\", \"field asc\" or \"field desc\""
            )));
        }
    };
    sort.column(listing)?;
    Ok(sort)
}

/// Parses `page_size`: absent or 0 -> 20, above 200 -> 200, negative or not a number -> 400.
pub fn parse_page_size(raw: Option<&str>) -> Result<usize, KfpError> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_PAGE_SIZE),
        Some(s) => match s.parse::<i64>() {
            Ok(0) => Ok(DEFAULT_PAGE_SIZE),
            Ok(n) if n < 0 => Err(KfpError::invalid(format!(
                "The page size should be greater than 0. Got {n}"
            ))),
            Ok(n) => Ok((n as u64).min(MAX_PAGE_SIZE as u64) as usize),
            Err(_) => Err(KfpError::invalid(format!(
                "invalid page_size {s:?}: not an integer"
            ))),
        },
    }
}

/// What a page token carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageToken {
    /// Which list (`Pipeline` / `PipelineVersion`, and the parent or namespace it ran over).
    pub scope: String,
    /// The sort.
    pub sort: Sort,
    /// The filter's canonical text.
    pub filter: String,
    /// The last row's sort value: an integer or a text.
    pub int: Option<i64>,
    /// The last row's sort value, for text columns.
    pub text: Option<String>,
    /// The last row's uid.
    pub uid: String,
}

impl PageToken {
    /// The token for the page after `cursor`.
    pub fn new(scope: &str, sort: &Sort, filter: &Filter, cursor: &Cursor) -> Self {
        let (int, text) = match &cursor.value {
            QValue::Int(i) => (Some(*i), None),
            QValue::Text(t) => (None, Some(t.clone())),
        };
        PageToken {
            scope: scope.to_owned(),
            sort: sort.clone(),
            filter: filter.canonical.clone(),
            int,
            text,
            uid: cursor.uid.clone(),
        }
    }

    /// Standard base64 of the JSON, as KFP's tokens look.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a token; 400 `Invalid page token` when it is not one of ours.
    pub fn decode(raw: &str) -> Result<Self, KfpError> {
        let bad = |why: &str| KfpError::invalid(format!("Invalid page token: {why}"));
        if raw.len() > 16 << 10 {
            return Err(bad("too long"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw.trim())
            .map_err(|_| bad("not base64"))?;
        serde_json::from_slice(&bytes).map_err(|_| bad("not a token of this server"))
    }

    /// The cursor to continue after.
    pub fn cursor(&self) -> Result<Cursor, KfpError> {
        let value = match (&self.int, &self.text) {
            (Some(i), None) => QValue::Int(*i),
            (None, Some(t)) => QValue::Text(t.clone()),
            _ => return Err(KfpError::invalid("Invalid page token: no position")),
        };
        Ok(Cursor {
            value,
            uid: self.uid.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_every_form_clients_send() {
        let sdk =
            r#"{"predicates": [{"operation": 1, "key": "display_name", "stringValue": "a+b%"}]}"#;
        let f = parse_filter(sdk, Listing::Pipelines).unwrap();
        assert_eq!(
            f.predicates,
            vec![Predicate {
                column: Column::Indexed(IndexColumn::Title),
                op: Op::Eq(QValue::Text("a+b%".into()))
            }],
            "raw JSON keeps + and %"
        );
        let dashboard = r#"{"predicates":[{"key":"name","operation":"IS_SUBSTRING","string_value":"Hello World"}]}"#;
        let once: String = form_urlencoded::byte_serialize(dashboard.as_bytes()).collect();
        let twice: String = form_urlencoded::byte_serialize(once.as_bytes()).collect();
        for raw in [dashboard.to_owned(), once, twice] {
            let f = parse_filter(&raw, Listing::Pipelines).unwrap();
            assert_eq!(
                f.predicates,
                vec![Predicate {
                    column: Column::Name,
                    op: Op::Contains("hello world".into())
                }],
                "{raw}"
            );
        }
        let time = r#"{"predicates":[{"key":"created_at","operation":"GREATER_THAN","timestamp_value":"1970-01-01T00:01:00Z"},
            {"key":"created_at","operation":"LESS_THAN_EQUALS","long_value":"120"},
            {"key":"tags.team","operation":"EQUALS","string_value":"ml"},
            {"key":"id","operation":"IN","string_values":{"values":["u1","u2"]}}]}"#;
        let f = parse_filter(time, Listing::Versions).unwrap();
        assert_eq!(f.predicates[0].op, Op::Gt(QValue::Int(60)));
        assert_eq!(f.predicates[1].op, Op::Le(QValue::Int(120)));
        assert_eq!(f.terms, vec![("team".to_owned(), "ml".to_owned())]);
        assert_eq!(
            f.predicates[2].op,
            Op::In(vec![QValue::Text("u1".into()), QValue::Text("u2".into())])
        );
        assert_eq!(
            parse_filter(
                r#"{"predicates":[{"key":"name","operation":"EQUALS","string_value":"v"}]}"#,
                Listing::Versions
            )
            .unwrap()
            .predicates[0]
                .column,
            Column::Indexed(IndexColumn::Alias),
            "a version's name is its versionName"
        );
    }

    #[test]
    fn bad_filters_are_400_with_kfps_words() {
        for (raw, want) in [
            (
                r#"{"predicates":[{"key":"nope","operation":1,"string_value":"x"}]}"#,
                "unrecognized field",
            ),
            (
                r#"{"predicates":[{"key":"","operation":1,"string_value":"x"}]}"#,
                "key is empty",
            ),
            (
                r#"{"predicates":[{"key":"name","operation":0,"string_value":"x"}]}"#,
                "invalid filter operation",
            ),
            (
                r#"{"predicates":[{"key":"name","operation":"IN","string_value":"x"}]}"#,
                "list of values",
            ),
            (
                r#"{"predicates":[{"key":"name","operation":"EQUALS","string_values":{"values":["x"]}}]}"#,
                "single value",
            ),
            (
                r#"{"predicates":[{"key":"created_at","operation":"IS_SUBSTRING","string_value":"1"}]}"#,
                "text field",
            ),
            (
                r#"{"predicates":[{"key":"tags.t","operation":"NOT_EQUALS","string_value":"x"}]}"#,
                "only EQUALS",
            ),
            (
                r#"{"predicates":[{"key":"name","operation":1}]}"#,
                "exactly one value",
            ),
            (
                r#"{"predicates":[{"key":"name","operation":1,"string_value":"x","bogus":1}]}"#,
                "failed to parse",
            ),
            ("%", "failed to parse"),
            ("{", "failed to parse"),
        ] {
            let e = parse_filter(raw, Listing::Pipelines).unwrap_err();
            assert_eq!(e.code, super::super::error::Code::InvalidArgument, "{raw}");
            assert!(e.user.contains(want), "{raw}: {}", e.user);
        }
    }

    #[test]
    fn sort_page_size_and_tokens() {
        assert_eq!(
            parse_sort("", Listing::Pipelines).unwrap(),
            Sort::default_order()
        );
        assert_eq!(
            parse_sort("Name DESC", Listing::Pipelines).unwrap(),
            Sort {
                field: "name".into(),
                desc: true
            }
        );
        assert!(parse_sort("name up", Listing::Pipelines).is_err());
        assert!(parse_sort("a b c", Listing::Pipelines).is_err());
        let e = parse_sort("bogus", Listing::Pipelines).unwrap_err();
        assert!(e.user.contains("Invalid sorting field"), "{}", e.user);
        assert_eq!(parse_page_size(None).unwrap(), 20);
        assert_eq!(parse_page_size(Some("")).unwrap(), 20);
        assert_eq!(parse_page_size(Some("0")).unwrap(), 20);
        assert_eq!(parse_page_size(Some("1000")).unwrap(), 200);
        assert!(parse_page_size(Some("-1")).is_err());
        assert!(parse_page_size(Some("abc")).is_err());
        let t = PageToken::new(
            "ns",
            &Sort::default_order(),
            &Filter::default(),
            &Cursor {
                value: QValue::Int(5),
                uid: "u".into(),
            },
        );
        let back = PageToken::decode(&t.encode()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.cursor().unwrap().value, QValue::Int(5));
        assert!(PageToken::decode("!!").is_err());
        assert!(PageToken::decode("e30=").is_err(), "{{}} is not a token");
    }
}
