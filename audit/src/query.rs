//! SQL over the sealed events: DataFusion with the table `access_events`, a listing table over
//! `DATA/events/` and its `date=YYYY-MM-DD` partitions, beside the policy-state tables
//! (`bundles`, `workloads`, `targets`, `credentials`, `rules`; [`crate::policy_state`]).
//!
//! Queries take no lock and read only sealed segments, so they work while a server has the
//! store open; events still in the write-ahead log are not visible until sealed. Only a
//! single read-only query runs: anything else is refused before planning. A query runs under
//! [`QueryLimits`]: a time limit and a memory limit, past which it stops with an error.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
pub use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::policy_state::{self, PolicyStateError};
use crate::schema::access_events_schema;
use crate::store::EVENTS_DIR;

/// The table name queries use.
pub const TABLE_NAME: &str = "access_events";
/// The hive partition column, the UTC date of `time` as `YYYY-MM-DD` text.
pub const DATE_COLUMN: &str = "date";

/// An error of a query or of formatting its result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("only a single SELECT query is allowed; got `{statement}`")]
    NotAQuery { statement: String },

    #[error("only a single SELECT query is allowed; got {count} statements")]
    SeveralStatements { count: usize },

    #[error("only a single SELECT query is allowed; got no statement")]
    NoStatement,

    #[error("{0}")]
    DataFusion(DataFusionError),

    /// The statement does not parse; the parser's own message, said once.
    #[error("the query does not parse: {0}")]
    Syntax(String),

    #[error("cannot format the result: {0}")]
    Format(#[from] arrow::error::ArrowError),

    #[error("cannot read the policy state: {0}")]
    PolicyState(#[from] PolicyStateError),

    #[error("the query ran longer than its limit of {} s", .limit.as_secs_f64())]
    TimedOut { limit: Duration },

    /// A limit that cannot be set (zero, or beyond what the machine can address).
    #[error("invalid query limit: {0}")]
    Limit(&'static str),
}

/// How long a query may run and how much memory its operators may hold. Past either, it
/// stops with an error rather than slowing the server that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits {
            timeout: Duration::from_secs(60),
            memory_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> QueryError {
        match error {
            DataFusionError::SQL(parse, _) => QueryError::Syntax(parse.to_string()),
            other => QueryError::DataFusion(other),
        }
    }
}

/// How [`format_batches`] renders a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A bordered text table.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row (JSON lines), nulls included, times as RFC 3339 text.
    Json,
}

/// Runs one read-only SQL query over the events and the policy state in `data_dir`, under
/// the default [`QueryLimits`].
pub async fn query(data_dir: &Path, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    query_with_limits(data_dir, sql, QueryLimits::default()).await
}

/// Runs one read-only SQL query over the events and the policy state in `data_dir`.
pub async fn query_with_limits(
    data_dir: &Path,
    sql: &str,
    limits: QueryLimits,
) -> Result<Vec<RecordBatch>, QueryError> {
    check_single_query(sql)?;
    if limits.timeout.is_zero() || limits.memory_bytes == 0 {
        return Err(QueryError::Limit(
            "the time and memory limits must be above zero",
        ));
    }
    // Operators that can spill or must fail when the pool is exhausted (sorts, joins,
    // aggregations) take their memory from this pool.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .build_arc()?;
    let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
    ctx.register_table(TABLE_NAME, events_table(&data_dir.join(EVENTS_DIR))?)?;
    policy_state::register(&ctx, data_dir)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let run = async {
        let frame = ctx.sql_with_options(sql, options).await?;
        let schema = Arc::clone(frame.schema().inner());
        let batches = frame.collect().await?;
        // No rows still has columns: an empty batch keeps them for the table and CSV header.
        if batches.is_empty() {
            return Ok(vec![RecordBatch::new_empty(schema)]);
        }
        Ok::<_, QueryError>(batches)
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(result) => result,
        Err(_) => Err(QueryError::TimedOut {
            limit: limits.timeout,
        }),
    }
}

/// Refuses everything but one plain query, naming what was found instead.
fn check_single_query(sql: &str) -> Result<(), QueryError> {
    let mut statements = DFParser::parse_sql(sql)?;
    if statements.len() > 1 {
        return Err(QueryError::SeveralStatements {
            count: statements.len(),
        });
    }
    let Some(statement) = statements.pop_front() else {
        return Err(QueryError::NoStatement);
    };
    if let DfStatement::Statement(inner) = &statement
        && matches!(**inner, Statement::Query(_))
    {
        return Ok(());
    }
    Err(QueryError::NotAQuery {
        statement: statement_keywords(&statement.to_string()),
    })
}

/// The leading keywords of a statement (`DROP TABLE`, `COPY`, `SET`), for the refusal.
fn statement_keywords(text: &str) -> String {
    let keywords: Vec<&str> = text
        .split_whitespace()
        .take_while(|word| word.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .take(3)
        .collect();
    if keywords.is_empty() {
        text.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    } else {
        keywords.join(" ")
    }
}

/// The listing table over the segments; with no segment yet it is simply empty.
fn events_table(events_dir: &Path) -> Result<Arc<ListingTable>, QueryError> {
    // A trailing separator makes the URL a directory even before it exists.
    let dir = format!("{}/", events_dir.display());
    let url = ListingTableUrl::parse(dir)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(DATE_COLUMN.to_owned(), DataType::Utf8)])
        // Every segment is written in `seq` order; DataFusion merges instead of sorting.
        .with_file_sort_order(vec![vec![col("seq").sort(true, false)]]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(access_events_schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Renders query results as text in `format`.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    let bytes = match format {
        OutputFormat::Table => {
            return Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string());
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.into_inner()
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
            writer.write_batches(&batches.iter().collect::<Vec<_>>())?;
            writer.finish()?;
            writer.into_inner()
        }
    };
    String::from_utf8(bytes).map_err(|error| {
        QueryError::Format(arrow::error::ArrowError::ExternalError(Box::new(error)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_name_the_statement() {
        assert_eq!(statement_keywords("DROP TABLE access_events"), "DROP TABLE");
        assert_eq!(statement_keywords("SET datafusion.x = 1"), "SET");
        assert_eq!(
            statement_keywords("INSERT INTO t VALUES (1)"),
            "INSERT INTO"
        );
        assert_eq!(statement_keywords("create external table x"), "create");
    }
}
