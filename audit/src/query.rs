//! SQL over the sealed events: DataFusion with the table `access_events`, a listing table over
//! `DATA/events/` and its `date=YYYY-MM-DD` partitions, beside the policy-state tables
//! (`bundles`, `workloads`, `targets`, `credentials`, `rules`; [`crate::policy_state`]).
//!
//! Queries take no lock, so they work while a server has the store open; they see the sealed
//! segments and the events still in the write-ahead log, each event once. Only a single
//! read-only query runs: anything else is refused before planning. A query runs under
//! [`QueryLimits`]: a time limit and a memory limit, past which it stops with an error.

use std::borrow::Cow;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{Array, Date32Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
pub use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::{
    CacheManagerConfig, FileMetadataCache, FileStatisticsCache,
};
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext, col, lit};
use datafusion::sql::parser::{DFParserBuilder, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Statement, Visit, Visitor};
use datafusion::sql::sqlparser::parser::ParserError;
use futures::StreamExt;

use crate::error::AuditError;
use crate::event::AccessEvent;
use crate::policy_state::{self, PolicyStateError};
use crate::schema::access_events_schema;
use crate::schema::events_to_batch;
use crate::segment::parse_segment_file_name;
use crate::store::EVENTS_DIR;
use crate::store::WAL_DIR;
use crate::wal::{TornTail, WalReader, list_logs};
use coded_groups::CodedGroups;
use count_distinct::CountsBesideDistinct;
use filter_in_aggregate::{FilterInAggregate, ThinBeforeAggregate};
use interleaved::InterleavedSegments;
use null_tests_first::NullTestsFirst;

mod coded_groups;
mod count_distinct;
mod filter_in_aggregate;
mod interleaved;
mod null_tests_first;
mod whole_states;

/// The table name queries use.
pub const TABLE_NAME: &str = "access_events";
/// The hive partition column, the UTC date of `time`, a `DATE` (from the `YYYY-MM-DD` of the
/// directory name).
pub const DATE_COLUMN: &str = "date";

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// An error of a query or of formatting its result.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("only a single SELECT query is allowed; got `{statement}`")]
    NotAQuery { statement: String },

    #[error("only a single SELECT query is allowed; got {count} statements")]
    SeveralStatements { count: usize },

    #[error("only a single SELECT query is allowed; got no statement")]
    NoStatement,

    /// An expression too deep or a statement too large to plan in reasonable time: planning
    /// is not interrupted by the time limit, and its cost grows with the square of the depth.
    #[error("the query is too complex: {what} is {found}, and the limit is {limit}; {advice}")]
    TooComplex {
        what: &'static str,
        found: usize,
        limit: usize,
        advice: &'static str,
    },

    #[error("{0}")]
    DataFusion(DataFusionError),

    /// The statement does not parse; the parser's own message, said once.
    #[error("the query does not parse: {0}")]
    Syntax(String),

    /// A JSON row is an object, which cannot hold two values under one name.
    #[error(
        "two columns of the result are named `{name}`, and a JSON row holds one value per name; \
         name them apart with AS (`... AS {name}_2`)"
    )]
    SameColumnName { name: String },

    #[error("cannot format the result: {0}")]
    Format(#[from] arrow::error::ArrowError),

    #[error("cannot read the policy state: {0}")]
    PolicyState(#[from] PolicyStateError),

    #[error("the query ran longer than its limit of {} s", .limit.as_secs_f64())]
    TimedOut { limit: Duration },

    /// A limit that cannot be set (zero, or beyond what the machine can address).
    #[error("invalid query limit: {0}")]
    Limit(&'static str),

    #[error("the result is larger than {limit} bytes; select fewer columns or rows")]
    ResultTooLarge { limit: usize },

    /// The query's sorts, joins or aggregations needed more than its memory limit.
    #[error(
        "the query needs more memory than its limit of {} MiB; narrow it (a condition on \
         `date` or `time`, fewer groups, a LIMIT) or raise `audit.query_memory_mb` in the \
         configuration ({detail})",
        .limit_bytes / (1024 * 1024)
    )]
    MemoryLimit { limit_bytes: usize, detail: String },

    /// The query asks what cannot be answered, said where DataFusion's own words mislead.
    #[error("{0}")]
    Plan(String),

    /// A segment could not be read: damaged, truncated or not Parquet.
    #[error(
        "an event segment cannot be read ({detail}); `portcullis audit verify` names the \
         damaged segment"
    )]
    Segment { detail: String },

    #[error("cannot run the query: {0}")]
    Runtime(String),

    /// The write-ahead log, whose events queries include, cannot be read.
    #[error("cannot read the events not yet sealed: {0}")]
    Log(AuditError),
}

/// How many times its memory limit a query may spill to temporary files.
const SPILL_PER_MEMORY: u64 = 4;

/// How long a query may run and how much memory its operators may hold. Past either, it
/// stops with an error rather than slowing the server that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    pub timeout: Duration,
    pub memory_bytes: usize,
    /// Rows kept at most: the query is cut after one more, so a caller can tell.
    pub max_rows: Option<usize>,
    /// The result held at most, in bytes of Arrow memory; past it the query stops.
    pub max_result_bytes: Option<usize>,
}

impl QueryLimits {
    /// The most bytes a query may spill to temporary files.
    fn spill_bytes(&self) -> u64 {
        u64::try_from(self.memory_bytes)
            .unwrap_or(u64::MAX)
            .saturating_mul(SPILL_PER_MEMORY)
    }
}

impl Default for QueryLimits {
    fn default() -> QueryLimits {
        QueryLimits {
            timeout: Duration::from_secs(60),
            memory_bytes: 1024 * 1024 * 1024,
            max_rows: None,
            max_result_bytes: None,
        }
    }
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> QueryError {
        // The planner wraps the parser's error in context and diagnostics.
        match error.find_root() {
            DataFusionError::SQL(parse, _) => QueryError::Syntax(syntax_message(parse)),
            _ => QueryError::DataFusion(error),
        }
    }
}

/// The parser's complaint, said in terms a user can act on.
fn syntax_message(error: &ParserError) -> String {
    match error {
        ParserError::RecursionLimitExceeded => format!(
            "it nests parentheses, function calls, `NOT`s or subqueries more than \
             {PARSER_RECURSION_LIMIT} levels deep; write fewer levels (`NOT NOT x` is `x`, and a \
             long chain of `OR`s over one column is `IN (…)`)"
        ),
        ParserError::ParserError(message) | ParserError::TokenizerError(message) => message.clone(),
    }
}

pub use portcullis_lang::lexer::hides_in_text;

/// Whether [`escape_hidden`] changes `text`.
fn needs_escape(text: &str) -> bool {
    text.chars().any(|c| c == '\\' || hides_in_text(c))
}

/// `text` as a terminal or a page shows it faithfully: each [`hides_in_text`] character as
/// JSON escapes it (`\n`, `\t`, `\u001b`, `\u202e`; beyond the first plane as its UTF-16
/// pair, `\udb40\udc41`), and a backslash as `\\`, so that the text `\n` does not look
/// like an escaped line break. Text without either comes back as it is.
pub fn escape_hidden(text: &str) -> Cow<'_, str> {
    if !needs_escape(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if hides_in_text(c) => {
                let mut units = [0_u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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
    query_with_tables(data_dir, sql, limits, Vec::new()).await
}

/// A table given to one query beside the store's own: its name and its rows.
pub type ExtraTable = (String, RecordBatch);

/// [`query_with_limits`], with `extra` tables registered beside `access_events` and the
/// policy-state tables, for facts that are not in the store's files (the compliance
/// evaluation's integrity check). A name the store already uses is refused.
pub async fn query_with_tables(
    data_dir: &Path,
    sql: &str,
    limits: QueryLimits,
    extra: Vec<ExtraTable>,
) -> Result<Vec<RecordBatch>, QueryError> {
    if limits.timeout.is_zero() || limits.memory_bytes == 0 {
        return Err(QueryError::Limit(
            "the time and memory limits must be above zero",
        ));
    }
    // Parsing, checking, planning and running a deeply nested expression (a `WHERE` of a
    // hundred `OR`s) recurse deeply: on a runtime's ordinary worker stack that overflows and
    // aborts the process, the server with it. The query runs on threads of its own with a
    // stack that holds the deepest expression the SQL size limit allows, and the statement
    // is parsed there too, before its depth is known.
    let (answer, answered) = tokio::sync::oneshot::channel();
    let data_dir = data_dir.to_owned();
    let sql = sql.to_owned();
    std::thread::Builder::new()
        .name("audit-query".to_owned())
        .stack_size(QUERY_STACK_BYTES)
        .spawn(move || {
            // Checked here too: a deep expression recurses through the parser's tree.
            if let Err(error) = check_single_query(&sql) {
                let _ = answer.send(Err(error));
                return;
            }
            let result = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(QUERY_THREADS)
                .thread_stack_size(QUERY_STACK_BYTES)
                .enable_all()
                .build()
                .map_err(|error| QueryError::Runtime(error.to_string()))
                .and_then(|runtime| runtime.block_on(run_query(&data_dir, &sql, limits, extra)));
            let _ = answer.send(result);
        })
        .map_err(|error| QueryError::Runtime(error.to_string()))?;
    // The query's own limit cannot stop work between two of its awaits, such as planning;
    // the caller stops waiting a little after it, and the query's thread ends on its own at
    // its next await.
    let deadline = limits.timeout.saturating_add(ANSWER_GRACE);
    match tokio::time::timeout(deadline, answered).await {
        Ok(answer) => answer.map_err(|_| {
            QueryError::Runtime("the query's thread ended without an answer".into())
        })?,
        Err(_) => Err(QueryError::TimedOut {
            limit: limits.timeout,
        }),
    }
}

/// How long past its time limit a query's caller waits for the query to stop itself.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The stack of a query's threads: the SQL text is at most 64 KiB, and the deepest expression
/// it can hold needs tens of MiB to plan. Only the pages used are ever touched.
const QUERY_STACK_BYTES: usize = 512 * 1024 * 1024;

/// Worker threads of a query.
const QUERY_THREADS: usize = 2;

async fn run_query(
    data_dir: &Path,
    sql: &str,
    limits: QueryLimits,
    extra: Vec<ExtraTable>,
) -> Result<Vec<RecordBatch>, QueryError> {
    // Operators that can spill or must fail when the pool is exhausted (sorts, joins,
    // aggregations) take their memory from this pool.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        // Sorts and aggregations past the memory limit spill to the system's temporary
        // directory; bounded too, so that one query cannot fill the disk the log is on.
        .with_max_temp_directory_size(limits.spill_bytes())
        .with_cache_manager(segment_caches())
        .build_arc()?;
    let mut config = SessionConfig::new().set_usize(
        "datafusion.sql_parser.recursion_limit",
        PARSER_RECURSION_LIMIT,
    );
    // Each partition reads the segments dealt to it, in `seq` order (`query/interleaved.rs`).
    // With stealing, an idle partition would take the next file from one queue of every
    // partition's files, one partition's after the other's, and a merge by `seq` would then
    // see a partition's rows out of order.
    config
        .options_mut()
        .execution
        .enable_file_stream_work_stealing = false;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rule(Arc::new(ThinBeforeAggregate))
        // After the thinning, whose aggregations it may then run.
        .with_physical_optimizer_rule(Arc::new(CodedGroups))
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.add_optimizer_rule(Arc::new(CountsBesideDistinct));
    ctx.add_optimizer_rule(Arc::new(NullTestsFirst));
    ctx.add_optimizer_rule(Arc::new(FilterInAggregate));
    register_events(&ctx, data_dir)?;
    policy_state::register(&ctx, data_dir)?;
    for (name, batch) in extra {
        if ctx.table_exist(name.as_str())? {
            return Err(QueryError::Runtime(format!(
                "the table `{name}` exists already"
            )));
        }
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name.as_str(), Arc::new(table))?;
    }
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let run = async {
        let mut frame = ctx.sql_with_options(sql, options).await?;
        let schema =
            plain_text(RecordBatch::new_empty(Arc::clone(frame.schema().inner())))?.schema();
        // An explanation is a few rows, and DataFusion runs one only at the root of a plan.
        let explains = matches!(
            frame.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)
        );
        if let Some(rows) = limits.max_rows.filter(|_| !explains) {
            // One more than kept, so that the caller can tell a cut result.
            frame = frame.limit(0, Some(rows.saturating_add(1)))?;
        }
        // The result is held whole; past `max_result_bytes` the query stops.
        let task = frame.task_ctx();
        let plan = frame.create_physical_plan().await?;
        let task = whole_states::context_for(&plan, task);
        let mut stream = execute_stream(plan, Arc::new(task))?;
        let mut batches = Vec::new();
        let mut bytes = 0usize;
        while let Some(batch) = stream.next().await {
            let batch = plain_text(batch?)?;
            bytes = bytes.saturating_add(batch.get_array_memory_size());
            if limits.max_result_bytes.is_some_and(|limit| bytes > limit) {
                return Err(QueryError::ResultTooLarge {
                    limit: limits.max_result_bytes.unwrap_or_default(),
                });
            }
            batches.push(batch);
        }
        // No rows still has columns: an empty batch keeps them for the table and CSV header.
        if batches.is_empty() {
            return Ok(vec![RecordBatch::new_empty(schema)]);
        }
        Ok::<_, QueryError>(batches)
    };
    match tokio::time::timeout(limits.timeout, run).await {
        Ok(result) => result.map_err(|error| in_our_terms(error, limits)),
        Err(_) => Err(QueryError::TimedOut {
            limit: limits.timeout,
        }),
    }
}

/// DataFusion's errors that a user of Portcullis should read in its own terms: the memory
/// limit with the setting that raises it, rather than DataFusion's own option names; a
/// segment that cannot be decoded with the command that finds it.
fn in_our_terms(error: QueryError, limits: QueryLimits) -> QueryError {
    let QueryError::DataFusion(inner) = &error else {
        return error;
    };
    // DataFusion says this one only in words, inside an I/O error.
    if inner
        .to_string()
        .contains("spilling process has exceeded the allowable limit")
    {
        let spill = limits.spill_bytes();
        return QueryError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
            detail: format!(
                "what did not fit was spilled to temporary files, up to their limit of {} MiB",
                spill / (1024 * 1024)
            ),
        };
    }
    if let Some(message) = plain_planning_message(&inner.to_string()) {
        return QueryError::Plan(message);
    }
    match inner.find_root() {
        DataFusionError::ResourcesExhausted(detail) => QueryError::MemoryLimit {
            limit_bytes: limits.memory_bytes,
            detail: refusal(detail),
        },
        DataFusionError::ParquetError(parquet) => QueryError::Segment {
            detail: parquet.to_string(),
        },
        DataFusionError::ArrowError(arrow, _)
            if matches!(**arrow, arrow::error::ArrowError::ParquetError(_)) =>
        {
            QueryError::Segment {
                detail: arrow.to_string(),
            }
        }
        _ => error,
    }
}

/// Two of DataFusion's planning errors in words that fit the mistake, or none for any other:
/// an aggregate or function given an argument of a type it does not take, which DataFusion
/// reports as an internal error and a bug of its own; and a selected column that is neither
/// grouped nor aggregated, which it reports as met "while expanding wildcard" when the query
/// has no wildcard.
fn plain_planning_message(text: &str) -> Option<String> {
    const NO_MATCH: &str = "No function matches the given name and argument types '";
    if let Some((_, rest)) = text.split_once(NO_MATCH) {
        let (call, rest) = rest.split_once('\'')?;
        let name = call.split('(').next().unwrap_or(call);
        let candidates = rest
            .split_once("Candidate functions:")
            .map(|(_, list)| {
                list.split(['\n', '\t'])
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Some(format!(
            "`{name}` does not take these arguments: {call}; it takes {candidates}. Give it \
             arguments of those types and number, casting where needed (`CAST(x AS BIGINT)`, \
             `CAST(x AS VARCHAR)`)"
        ));
    }
    const NOT_GROUPED: &str = "column \"";
    if text.contains("must appear in the GROUP BY clause")
        && let Some((_, rest)) = text.split_once(NOT_GROUPED)
    {
        let (column, _) = rest.split_once('"')?;
        return Some(format!(
            "the column `{column}` is used outside an aggregate but not grouped: add it to GROUP \
             BY, or use an aggregate of it (`max({column})`, `count(DISTINCT {column})`)"
        ));
    }
    None
}

/// What DataFusion's memory pool refused, in one line: the allocation and what was left.
/// DataFusion may put a list of its operators by their internal names ahead of it (then the
/// refusal follows `Error: `), and advice that names its own settings, which a user cannot set
/// here, after it.
fn refusal(detail: &str) -> String {
    let line = detail
        .lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("Error: "))
        .unwrap_or_else(|| detail.lines().next().unwrap_or(detail));
    let line = line.split(". Consider").next().unwrap_or(line);
    // "… remain available for the total memory pool: greedy(used: …, pool_size: …)"
    let line = match line.find(" memory pool:") {
        Some(at) => &line[..at + " memory pool".len()],
        None => line,
    };
    line.trim().trim_end_matches(':').to_owned()
}

/// The caches every query shares: each segment's Parquet footer (with its page index) and
/// statistics, as read by the first query that opened it. DataFusion checks an entry against
/// the file's size and modification time before using it, and a sealed segment is never
/// rewritten in place, so a query never sees stale metadata. The listing of the segments is
/// not cached: each query lists them anew and so sees every segment sealed before it began.
fn segment_caches() -> CacheManagerConfig {
    static CACHES: LazyLock<(Arc<FileMetadataCache>, Arc<FileStatisticsCache>)> =
        LazyLock::new(|| {
            let footers: Arc<FileMetadataCache> = Arc::new(
                DefaultCache::new(SEGMENT_FOOTER_CACHE_BYTES).with_name("segment_footers"),
            );
            let statistics: Arc<FileStatisticsCache> = Arc::new(
                DefaultCache::new(SEGMENT_STATISTICS_CACHE_BYTES).with_name("segment_statistics"),
            );
            (footers, statistics)
        });
    let (footers, statistics) = &*CACHES;
    CacheManagerConfig::default()
        .with_file_metadata_cache(Some(Arc::clone(footers)))
        .with_metadata_cache_limit(SEGMENT_FOOTER_CACHE_BYTES)
        .with_file_statistics_cache(Some(Arc::clone(statistics)))
        .with_file_statistics_cache_limit(SEGMENT_STATISTICS_CACHE_BYTES)
}

/// Memory the footers of recently read segments may hold: a 100,000-event segment's footer
/// with its page index is about 100 KiB, so this keeps a few years of a busy node's segments.
const SEGMENT_FOOTER_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Memory the segments' statistics may hold (a few KiB each).
const SEGMENT_STATISTICS_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Refuses everything but one plain query, naming what was found instead.
pub(crate) fn check_single_query(sql: &str) -> Result<(), QueryError> {
    let mut statements = DFParserBuilder::new(sql)
        .with_recursion_limit(PARSER_RECURSION_LIMIT)
        .build()?
        .parse_statements()?;
    if statements.len() > 1 {
        return Err(QueryError::SeveralStatements {
            count: statements.len(),
        });
    }
    let Some(statement) = statements.pop_front() else {
        return Err(QueryError::NoStatement);
    };
    if is_query(&statement) {
        return check_complexity(&statement);
    }
    Err(QueryError::NotAQuery {
        statement: statement_keywords(&statement.to_string()),
    })
}

/// The deepest expression a query may hold: a chain of 256 `OR`s plans in milliseconds; one of
/// 5,000 took more than a minute, beyond reach of the time limit, which planning does not meet.
const MAX_EXPRESSION_DEPTH: usize = 256;

/// How deep the SQL parser may recurse, here and in DataFusion's own parse: as deep as an
/// expression may nest ([`MAX_EXPRESSION_DEPTH`]); the query's thread has the stack for it.
const PARSER_RECURSION_LIMIT: usize = MAX_EXPRESSION_DEPTH;

/// The most expressions a query may hold, list items included.
const MAX_EXPRESSIONS: usize = 20_000;

/// Refuses a statement whose expressions are nested deeper or are more than planning can
/// take in good time.
fn check_complexity(statement: &DfStatement) -> Result<(), QueryError> {
    #[derive(Default)]
    struct Measure {
        depth: usize,
        deepest: usize,
        count: usize,
    }
    impl Visitor for Measure {
        type Break = ();
        fn pre_visit_expr(&mut self, _expr: &Expr) -> std::ops::ControlFlow<()> {
            self.depth += 1;
            self.count += 1;
            self.deepest = self.deepest.max(self.depth);
            std::ops::ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _expr: &Expr) -> std::ops::ControlFlow<()> {
            self.depth = self.depth.saturating_sub(1);
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut measure = Measure::default();
    let mut statement = statement;
    while let DfStatement::Explain(explain) = statement {
        statement = &explain.statement;
    }
    if let DfStatement::Statement(inner) = statement {
        let _ = inner.visit(&mut measure);
    }
    if measure.deepest > MAX_EXPRESSION_DEPTH {
        return Err(QueryError::TooComplex {
            what: "the deepest expression's nesting",
            found: measure.deepest,
            limit: MAX_EXPRESSION_DEPTH,
            advice: "write a long chain of `OR`s over one column as `IN (…)`, and split a long \
                     chain of `AND`s or `+`s into subqueries",
        });
    }
    if measure.count > MAX_EXPRESSIONS {
        return Err(QueryError::TooComplex {
            what: "the number of expressions",
            found: measure.count,
            limit: MAX_EXPRESSIONS,
            advice: "list items count too: split the question into several queries, each with \
                     a shorter list",
        });
    }
    Ok(())
}

/// A plain query, or `EXPLAIN [ANALYZE]` of one: how a slow question is looked into.
fn is_query(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(inner) => matches!(**inner, Statement::Query(_)),
        DfStatement::Explain(explain) => is_query(&explain.statement),
        _ => false,
    }
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

/// Registers `access_events`: the sealed segments, and the events still in the write-ahead
/// log, each event once.
///
/// The log is read first, then the highest `seq` sealed is taken from the segments' names.
/// The segments answer for every event up to that `seq` (a segment sealed later is left out by
/// the filter), the log for every event after it. A seal that completes meanwhile therefore
/// neither doubles an event nor loses one, and an event recorded after the query began is not
/// in it.
fn register_events(ctx: &SessionContext, data_dir: &Path) -> Result<(), QueryError> {
    let events_dir = data_dir.join(EVENTS_DIR);
    let logged = read_logged_events(&data_dir.join(WAL_DIR))?;
    let sealed_up_to = highest_sealed_seq(&events_dir)?;
    let sealed = events_table(&events_dir)?;
    let fresh: Vec<AccessEvent> = logged
        .into_iter()
        .filter(|event| event.seq > sealed_up_to)
        .collect();
    if fresh.is_empty() {
        ctx.register_table(TABLE_NAME, sealed)?;
        return Ok(());
    }
    let batch = with_date_column(&events_to_batch(&fresh).map_err(QueryError::Log)?)?;
    let unsealed = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    let seq_limit = i64::try_from(sealed_up_to).unwrap_or(i64::MAX);
    let events = ctx
        .read_table(sealed)?
        .filter(col("seq").lt_eq(lit(seq_limit)))?
        .union(ctx.read_table(Arc::new(unsealed))?)?;
    ctx.register_table(TABLE_NAME, events.into_view())?;
    Ok(())
}

/// The events in the write-ahead log files, oldest first. A file the sealer deletes while it
/// is read is skipped: its events are in segments by then. The newest file may end in a
/// record being written, which is left out.
fn read_logged_events(wal_dir: &Path) -> Result<Vec<AccessEvent>, QueryError> {
    if !wal_dir.is_dir() {
        return Ok(Vec::new());
    }
    let files = list_logs(wal_dir).map_err(QueryError::Log)?;
    let mut events = Vec::new();
    // Only files: something else in the way of the next log file is the writer's failure to
    // report (it stops the log), not a query's.
    for path in files.iter().filter(|path| path.is_file()) {
        let mut reader = match WalReader::open(path, TornTail::Allowed) {
            Ok(reader) => reader,
            Err(AuditError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => continue,
            Err(error) => return Err(QueryError::Log(error)),
        };
        loop {
            match reader.next_event() {
                Ok(Some(event)) => events.push(event),
                Ok(None) => break,
                Err(AuditError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                    break;
                }
                Err(error) => return Err(QueryError::Log(error)),
            }
        }
    }
    Ok(events)
}

/// The highest `seq` of any segment, from the segment file names; 0 without one.
fn highest_sealed_seq(events_dir: &Path) -> Result<u64, QueryError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| {
            QueryError::Log(AuditError::Io {
                action: "list",
                path,
                source,
            })
        }
    };
    let dates = match fs::read_dir(events_dir) {
        Ok(dates) => dates,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(io(events_dir)(error)),
    };
    let mut highest = 0;
    for date in dates {
        let date = date.map_err(io(events_dir))?;
        if !date.file_type().map_err(io(&date.path()))?.is_dir() {
            continue;
        }
        for segment in fs::read_dir(date.path()).map_err(io(&date.path()))? {
            let segment = segment.map_err(io(&date.path()))?;
            let name = segment.file_name();
            if let Some((_, last)) = name.to_str().and_then(parse_segment_file_name) {
                highest = highest.max(last);
            }
        }
    }
    Ok(highest)
}

/// `batch` with the partition column `date` that the listing table adds to segments.
fn with_date_column(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let times = batch
        .column_by_name("time")
        .and_then(|column| column.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| {
            QueryError::Format(arrow::error::ArrowError::SchemaError(
                "the events have no `time` column".to_owned(),
            ))
        })?;
    // Days since 1970-01-01, the UTC date of each event as the segment's directory names it.
    let dates: Date32Array = times
        .iter()
        .map(|micros| {
            micros.and_then(|micros| i32::try_from(micros.div_euclid(MICROS_PER_DAY)).ok())
        })
        .collect();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|field| field.as_ref().clone())
        .collect();
    fields.push(Field::new(DATE_COLUMN, DataType::Date32, true));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(dates));
    // The same types as the segments are read in, so that the two can be one table.
    for (field, column) in fields.iter_mut().zip(columns.iter_mut()) {
        if field.data_type() == &DataType::Utf8 {
            *column = arrow::compute::cast(column, &DataType::Utf8View)?;
            *field = field.clone().with_data_type(DataType::Utf8View);
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The schema queries see `access_events` in: the stored schema with its text columns as
/// `Utf8View`. The Parquet reader then hands out views of the pages it decoded instead of
/// copying every value into a new string array, and comparisons, grouping and hashing read a
/// value's first bytes from the view itself; over a month of events that halves the time of
/// a typical aggregation. Results are turned back into plain `Utf8` ([`plain_text`]), so
/// callers see the stored schema's types.
fn read_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let fields: Vec<Field> = access_events_schema()
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Utf8 => field.as_ref().clone().with_data_type(DataType::Utf8View),
                _ => field.as_ref().clone(),
            })
            .collect();
        Arc::new(Schema::new(fields))
    });
    Arc::clone(&SCHEMA)
}

/// `batch` with its `Utf8View` columns as `Utf8`: the types results are documented in.
fn plain_text(batch: RecordBatch) -> Result<RecordBatch, QueryError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|field| field.data_type() == &DataType::Utf8View)
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type() == &DataType::Utf8View {
            fields.push(field.as_ref().clone().with_data_type(DataType::Utf8));
            columns.push(arrow::compute::cast(column, &DataType::Utf8)?);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    let schema = Schema::new_with_metadata(fields, batch.schema().metadata().clone());
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// The listing table over the segments; with no segment yet it is simply empty.
fn events_table(events_dir: &Path) -> Result<Arc<InterleavedSegments>, QueryError> {
    // A trailing separator makes the URL a directory even before it exists.
    let dir = format!("{}/", events_dir.display());
    let url = ListingTableUrl::parse(dir)?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        // A `DATE`, as other engines read a `date=YYYY-MM-DD` partition: dates compare and
        // subtract as dates, and grouping by one hashes four bytes instead of ten of text.
        .with_table_partition_cols(vec![(DATE_COLUMN.to_owned(), DataType::Date32)])
        // Every segment is written in `seq` order; DataFusion merges instead of sorting.
        .with_file_sort_order(vec![vec![col("seq").sort(true, false)]]);
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(read_schema());
    let listing = Arc::new(ListingTable::try_new(config)?);
    Ok(Arc::new(InterleavedSegments::new(listing)))
}

/// Renders query results as [`format_batches`] does, for a terminal: CSV with every
/// [`hides_in_text`] character and backslash escaped as the table shows them, since a
/// terminal would act on an escape sequence or a carriage return in a value (the exact CSV is
/// for a file or a pipe); the table and JSON as they are.
pub fn format_batches_for_terminal(
    batches: &[RecordBatch],
    format: OutputFormat,
) -> Result<String, QueryError> {
    if format != OutputFormat::Csv {
        return format_batches(batches, format);
    }
    let escaped = batches
        .iter()
        .map(|batch| map_texts(batch, needs_escape, |text| escape_hidden(text).into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    format_batches(&escaped, format)
}

/// Renders query results as text in `format`.
pub fn format_batches(batches: &[RecordBatch], format: OutputFormat) -> Result<String, QueryError> {
    let bytes = match format {
        OutputFormat::Table => {
            // The table's layout takes time that grows faster than a cell's length: long
            // texts are cut, and CSV and JSON carry them whole. Control and invisible
            // characters are shown escaped: events carry text from unauthenticated callers, and
            // a terminal would act on an escape sequence or a line break (forging rows,
            // rewriting lines), and an invisible or reordering character makes one text look
            // like another. A null is shown as `NULL`, so that it is not taken for an empty
            // text.
            let cut = batches
                .iter()
                .map(printable_texts)
                .collect::<Result<Vec<_>, _>>()?;
            let options = arrow::util::display::FormatOptions::default().with_null("NULL");
            let table = arrow::util::pretty::pretty_format_batches_with_options(&cut, &options)?;
            return Ok(table.to_string());
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
            if let Some(batch) = batches.first() {
                let mut names = std::collections::HashSet::new();
                for field in batch.schema().fields() {
                    if !names.insert(field.name().as_str()) {
                        return Err(QueryError::SameColumnName {
                            name: field.name().clone(),
                        });
                    }
                }
            }
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

/// The most characters of a text a table cell shows.
pub const MAX_TABLE_CELL_CHARS: usize = 1024;

/// `batch` with every text longer than [`MAX_TABLE_CELL_CHARS`] cut there, saying how much
/// was left out, and every character that [`hides_in_text`] escaped as JSON escapes it (`\n`,
/// `\u001b`, `\u202e`); a backslash is then `\\`, so that the text `\n` is not shown as a
/// line break was.
fn printable_texts(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    let unprintable = |text: &str| text.len() > MAX_TABLE_CELL_CHARS || needs_escape(text);
    map_texts(batch, unprintable, |text| {
        let (shown, left) = match text.char_indices().nth(MAX_TABLE_CELL_CHARS) {
            Some((end, _)) => (&text[..end], text.len() - end),
            None => (text, 0),
        };
        let mut cell = escape_hidden(shown).into_owned();
        if left > 0 {
            cell.push_str(&format!(
                "… ({left} more bytes; --format csv or json shows all)"
            ));
        }
        cell
    })
}

/// `batch` with each text column that holds a text `needs` picks given through `shown`, nulls
/// kept; other columns, and text columns with no such text, as they are.
fn map_texts(
    batch: &RecordBatch,
    needs: impl Fn(&str) -> bool,
    shown: impl Fn(&str) -> String,
) -> Result<RecordBatch, QueryError> {
    let mut columns = batch.columns().to_vec();
    for column in &mut columns {
        let Some(texts) = column.as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        if !texts.iter().flatten().any(&needs) {
            continue;
        }
        let mapped: StringArray = texts.iter().map(|text| text.map(&shown)).collect();
        *column = Arc::new(mapped);
    }
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn planning_mistakes_are_told_as_the_mistakes_they_are() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(EVENTS_DIR)).unwrap();
        let error = query(dir.path(), "SELECT sum(target) FROM access_events")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, QueryError::Plan(_)), "{error:?}");
        assert!(message.starts_with("`sum` does not take"), "{message}");
        assert!(message.contains("sum(Utf8View)"), "{message}");
        assert!(message.contains("sum(Int64), "), "{message}");
        assert!(!message.contains("bug"), "{message}");
        assert_eq!(message.lines().count(), 1, "{message}");

        let sql = "SELECT workload, count(*) FROM access_events GROUP BY target";
        let error = query(dir.path(), sql).await.unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, QueryError::Plan(_)), "{error:?}");
        assert!(
            message.starts_with("the column `access_events.workload` is used outside"),
            "{message}"
        );
        assert!(!message.contains("wildcard"), "{message}");

        // Other errors keep DataFusion's words.
        let error = query(dir.path(), "SELECT nosuch FROM access_events")
            .await
            .unwrap_err();
        assert!(matches!(error, QueryError::DataFusion(_)), "{error:?}");
        assert!(error.to_string().contains("nosuch"), "{error}");
    }

    #[test]
    fn a_refusal_of_memory_is_told_in_one_whole_line() {
        let alone = "Failed to allocate additional 1.0 MB for ExternalSorter[0] with 2.0 KB \
            already allocated for this reservation - 12.0 KB remain available for the total \
            memory pool: greedy(used: 52.0 KB, pool_size: 64.0 KB)";
        let expected = "Failed to allocate additional 1.0 MB for ExternalSorter[0] with 2.0 KB \
            already allocated for this reservation - 12.0 KB remain available for the total \
            memory pool";
        assert_eq!(refusal(alone), expected);
        let listed = format!(
            "Additional allocation failed for ExternalSorter[0] with top memory consumers \
             (across reservations) as:\n  ExternalSorter[0]#3(can spill: true) consumed \
             50.0 KB\n  ExternalSorterMerge[0]#4(can spill: false) consumed 0.0 B\n\
             Error: {alone}. Consider increasing datafusion.execution.memory_pool"
        );
        assert_eq!(refusal(&listed), expected);
    }

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

    #[test]
    fn queries_and_their_explanations_are_allowed_and_nothing_else() {
        for sql in [
            "SELECT 1",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT count(*) FROM access_events",
            "WITH t AS (SELECT 1 AS x) SELECT x FROM t",
        ] {
            assert!(check_single_query(sql).is_ok(), "{sql}");
        }
        for sql in [
            "EXPLAIN COPY access_events TO '/tmp/x.csv'",
            "EXPLAIN CREATE TABLE t AS SELECT 1",
            "EXPLAIN EXPLAIN DROP TABLE rules",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
        ] {
            assert!(
                matches!(check_single_query(sql), Err(QueryError::NotAQuery { .. })),
                "{sql}"
            );
        }
    }
}
