//! Sorted, filtered, keyset-paged queries for the KFP REST view (`sort_by`, `filter`,
//! `page_size`/`page_token`, `total_size`), run in SQL on indexed columns instead of filtering
//! the whole list in memory as upstream's Kubernetes store does.
//!
//! The KFP layer maps its field names (`name`, `display_name`, `created_at`, `pipeline_id`, ...)
//! to [`Column`]s and encodes the [`Cursor`] in its own page token; this module knows nothing of
//! KFP's wire formats.

use crate::Object;
use crate::index::IndexColumn;

/// An indexed column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Column {
    /// `metadata.uid`.
    Uid,
    /// `metadata.name`.
    Name,
    /// `metadata.namespace`.
    Namespace,
    /// `metadata.creationTimestamp`, Unix seconds.
    CreatedAt,
    /// A generic indexed column ("" when the resource leaves it unset).
    Indexed(IndexColumn),
}

impl Column {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            Column::Uid => "o.uid",
            Column::Name => "o.name",
            Column::Namespace => "o.namespace",
            Column::CreatedAt => "o.created_at",
            Column::Indexed(c) => crate::sql::column_sql(c),
        }
    }

    /// Whether values of this column are integers.
    pub fn is_integer(self) -> bool {
        self == Column::CreatedAt
    }
}

/// A value compared with or sorted by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Value {
    /// For [`Column::CreatedAt`].
    Int(i64),
    /// For text columns.
    Text(String),
}

/// A comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `=`.
    Eq(Value),
    /// `<>`.
    Ne(Value),
    /// `>`.
    Gt(Value),
    /// `>=`.
    Ge(Value),
    /// `<`.
    Lt(Value),
    /// `<=`.
    Le(Value),
    /// One of.
    In(Vec<Value>),
    /// Case-insensitive substring (text columns). The title column folds Unicode case (a
    /// folded copy is stored); other columns fold with the database's LOWER() (ASCII only on
    /// SQLite).
    Substring(String),
    /// Case-sensitive substring: for columns whose values the caller knows are lower case
    /// (object names, uids), where folding every row's case is wasted work.
    Contains(String),
}

/// One filter term; terms are AND-ed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predicate {
    /// The column.
    pub column: Column,
    /// The comparison.
    pub op: Op,
}

/// Where the next page starts: the last row's sort value and uid (the tie-breaker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The sort column's value in the last row returned.
    pub value: Value,
    /// That row's uid.
    pub uid: String,
}

/// A sorted query.
#[derive(Clone, Debug)]
pub struct QueryRequest {
    /// The resource.
    pub resource: String,
    /// One namespace, or all.
    pub namespace: Option<String>,
    /// Filter terms.
    pub predicates: Vec<Predicate>,
    /// Indexed terms (see [`crate::Indexed::terms`]) the rows must have: key = value, AND-ed.
    pub terms: Vec<(String, String)>,
    /// Sort column; ties are broken by uid in the same direction (as KFP does).
    pub sort: Column,
    /// Descending order.
    pub descending: bool,
    /// Continue after this row.
    pub after: Option<Cursor>,
    /// Page size.
    pub limit: usize,
}

/// A page of a sorted query.
#[derive(Clone, Debug, Default)]
pub struct QueryPage {
    /// The rows.
    pub items: Vec<Object>,
    /// How many rows match in all (KFP's `total_size`).
    pub total: u64,
    /// Where the next page starts, when there is one.
    pub next: Option<Cursor>,
}

/// Escapes `%`, `_` and the escape character itself for `LIKE ... ESCAPE '!'`, lower-cased.
pub(crate) fn like_pattern(s: &str) -> String {
    escaped_pattern(&s.to_lowercase())
}

/// [`like_pattern`] without lower-casing.
pub(crate) fn escaped_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("A_b%c!"), "%a!_b!%c!!%");
    }
}
