//! Values put into the dashboard's SQL. No user input reaches a query but through these: text
//! as a string literal with every `'` doubled (DataFusion's dialect gives a backslash no
//! meaning inside one, so doubling is the whole escape), times and numbers only after they
//! were parsed into their types ([`crate::params`]) and printed again here.

use chrono::{DateTime, Utc};

/// `text` as an SQL string literal.
pub(crate) fn text(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('\'');
    for c in text.chars() {
        if c == '\'' {
            literal.push('\'');
        }
        literal.push(c);
    }
    literal.push('\'');
    literal
}

/// `time` as an SQL timestamp literal, to the microsecond.
pub(crate) fn time(time: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", time.format("%Y-%m-%dT%H:%M:%S%.6fZ"))
}

/// The `date` partition of `time`, as a literal to prune partitions with.
pub(crate) fn date(time: DateTime<Utc>) -> String {
    format!("DATE '{}'", time.format("%Y-%m-%d"))
}

/// The condition that keeps events from `from` (inclusive) to `to` (exclusive), on `time` and
/// on the `date` partitions, so that whole days outside are never read.
pub(crate) fn time_range(from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(from) = from {
        conditions.push(format!("time >= {}", time(from)));
        conditions.push(format!("date >= {}", date(from)));
    }
    if let Some(to) = to {
        conditions.push(format!("time < {}", time(to)));
        conditions.push(format!("date <= {}", date(to)));
    }
    conditions
}

/// `conditions` as a `WHERE` clause; nothing when there are none.
pub(crate) fn where_all(conditions: &[String]) -> String {
    if conditions.is_empty() {
        return String::new();
    }
    format!("WHERE {}", conditions.join(" AND "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use portcullis_audit::query::{QueryLimits, query_with_limits};

    use super::*;
    use crate::store::Table;

    #[test]
    fn quotes_are_doubled_and_nothing_else_changes() {
        assert_eq!(text("it's"), "'it''s'");
        assert_eq!(text(r"\'; DROP TABLE x; --"), r"'\''; DROP TABLE x; --'");
        assert_eq!(text(""), "''");
    }

    /// What the literal reads as in DataFusion is the text, whatever the text holds.
    #[tokio::test]
    async fn a_literal_reads_back_as_the_text_itself() {
        let dir = tempfile::tempdir().unwrap();
        let hostile = r#"a'b\' OR 1=1; -- "c" ' UNION SELECT 1 --\"#;
        let sql = format!("SELECT {} AS v", text(hostile));
        let batches = query_with_limits(dir.path(), &sql, QueryLimits::default())
            .await
            .unwrap();
        let table = Table::from_batches(&batches);
        assert_eq!(table.rows.len(), 1);
        assert_eq!(table.cell(0, 0).text(), Some(hostile));
    }
}
