//! The SQL dialects: which database a URL names, placeholder syntax, and which driver errors mean
//! "unavailable" (503, retry) rather than a bug. Nothing here runs a query.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AssertSqlSafe;

use crate::{Result, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    pub(crate) fn of(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            _ => Err(StoreError::Invalid(format!(
                "{url:?} is not a SQL store URL (sqlite://, postgres://, mysql://)"
            ))),
        }
    }

    /// Queries are written with `?`; PostgreSQL wants `$1, $2, ...`. Every value reaches the
    /// database as a bound parameter; only static text and integers are ever formatted into SQL.
    pub(crate) fn sql(self, q: &str) -> AssertSqlSafe<String> {
        AssertSqlSafe(self.placeholders(q))
    }

    fn placeholders(self, q: &str) -> String {
        if self != Dialect::Postgres {
            return q.to_owned();
        }
        let mut out = String::with_capacity(q.len() + 16);
        let mut n = 0;
        let mut in_quote = false;
        for c in q.chars() {
            match c {
                '\'' => {
                    in_quote = !in_quote;
                    out.push(c);
                }
                '?' if !in_quote => {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                }
                _ => out.push(c),
            }
        }
        out
    }
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) => {
            let msg = d.message().to_owned();
            let code = d.code().map(|c| c.into_owned()).unwrap_or_default();
            // SQLite busy/locked, PostgreSQL admin shutdown / cannot connect, MySQL gone away.
            if msg.contains("database is locked")
                || code.starts_with("57P")
                || code.starts_with("08")
                || msg.contains("server has gone away")
            {
                StoreError::Unavailable(msg)
            } else {
                StoreError::Internal(e.to_string())
            }
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_placeholders_skip_quotes() {
        assert_eq!(
            Dialect::Postgres.placeholders("SELECT '?' WHERE a = ? AND b = ?"),
            "SELECT '?' WHERE a = $1 AND b = $2"
        );
        assert_eq!(Dialect::Sqlite.placeholders("a = ?"), "a = ?");
    }

    #[test]
    fn schemes_name_dialects() {
        assert_eq!(Dialect::of("sqlite:///x.db").ok(), Some(Dialect::Sqlite));
        assert_eq!(
            Dialect::of("postgresql://h/db").ok(),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of("mariadb://h/db").ok(), Some(Dialect::MySql));
        assert!(Dialect::of("etcd://h").is_err());
    }
}
