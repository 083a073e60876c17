//! The server's side of `POST /v1/audit/query`: runs the SQL with DataFusion under the
//! configured limits, and caps the rows an answer carries.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use portcullis_audit::query::{QueryLimits, query_with_limits};
use portcullis_audit::{OutputFormat, QueryError, format_batches};
use portcullis_engine::api::audit_query::{AuditQuery, QueryAnswer, QueryFormat, QueryRefusal};
use serde_json::{Value, json};

/// Rows an HTTP answer carries at most; a larger result is cut and says so.
pub const MAX_ROWS: usize = 10_000;

/// The largest result an HTTP answer is built from, in bytes of Arrow memory; past it the
/// query stops with an error rather than the server growing.
pub const MAX_RESULT_BYTES: usize = 64 * 1024 * 1024;

/// Queries the server runs at once; another is refused (503) until one finishes. Each takes
/// up to two cores and the configured memory, so more would only slow every one of them and
/// let one token holder crowd out the decisions.
pub const MAX_CONCURRENT_QUERIES: usize = 2;

#[derive(Debug)]
pub struct SqlOverStore {
    pub data_dir: PathBuf,
    pub limits: QueryLimits,
    /// One permit per query running; see [`MAX_CONCURRENT_QUERIES`].
    pub running: Arc<tokio::sync::Semaphore>,
}

impl SqlOverStore {
    pub fn new(data_dir: PathBuf, limits: QueryLimits) -> SqlOverStore {
        SqlOverStore {
            data_dir,
            limits,
            running: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_QUERIES)),
        }
    }
}

impl AuditQuery for SqlOverStore {
    fn run(
        &self,
        sql: String,
        format: QueryFormat,
    ) -> Pin<Box<dyn Future<Output = Result<QueryAnswer, QueryRefusal>> + Send + 'static>> {
        let data_dir = self.data_dir.clone();
        let limits = QueryLimits {
            max_rows: Some(MAX_ROWS),
            max_result_bytes: Some(MAX_RESULT_BYTES),
            ..self.limits
        };
        let permit = Arc::clone(&self.running).try_acquire_owned();
        Box::pin(async move {
            let Ok(permit) = permit else {
                tracing::warn!(
                    running = MAX_CONCURRENT_QUERIES,
                    status = 503,
                    "audit_query_refused_busy"
                );
                return Err(QueryRefusal {
                    status: axum_status(503),
                    message: format!(
                        "{MAX_CONCURRENT_QUERIES} audit queries are running already, the most \
                         the server runs at once; try again when one has finished"
                    ),
                });
            };
            // The query runs as a task of its own that holds the permit: a caller who goes
            // away drops this future, not the query, which keeps its place until it ends and
            // is logged if a limit stops it.
            let running = tokio::spawn(async move {
                let _permit = permit;
                query_with_limits(&data_dir, &sql, limits)
                    .await
                    .map_err(refusal)
            });
            let batches = running.await.map_err(|error| QueryRefusal {
                status: axum_status(500),
                message: format!("the query's task failed: {error}"),
            })??;
            let row_count: usize = batches.iter().map(|batch| batch.num_rows()).sum();
            let mut kept = Vec::new();
            let mut room = MAX_ROWS;
            for batch in &batches {
                if room == 0 {
                    break;
                }
                let take = batch.num_rows().min(room);
                kept.push(batch.slice(0, take));
                room -= take;
            }
            let truncated = row_count > MAX_ROWS;
            let row_count = row_count.min(MAX_ROWS);
            match format {
                // CSV has nowhere to say it was cut: a result too large for one answer is
                // refused instead.
                QueryFormat::Csv if truncated => Err(QueryRefusal {
                    status: axum_status(413),
                    message: format!(
                        "the result has more than {MAX_ROWS} rows, more than one CSV answer \
                         carries; narrow the query, add LIMIT and OFFSET, or use \
                         `portcullis audit query` on the data directory"
                    ),
                }),
                QueryFormat::Csv => {
                    let body = format_batches(&kept, OutputFormat::Csv).map_err(refusal)?;
                    Ok(QueryAnswer {
                        content_type: "text/csv; charset=utf-8",
                        body,
                    })
                }
                QueryFormat::Json => {
                    let lines = format_batches(&kept, OutputFormat::Json).map_err(refusal)?;
                    let rows: Vec<Value> = lines
                        .lines()
                        .filter(|line| !line.trim().is_empty())
                        .map(serde_json::from_str)
                        .collect::<Result<_, _>>()
                        .map_err(|error| QueryRefusal {
                            status: axum_status(500),
                            message: format!("cannot write the result as JSON: {error}"),
                        })?;
                    let body = json!({
                        "rows": rows,
                        "row_count": row_count,
                        "truncated": truncated,
                        "max_rows": MAX_ROWS,
                    });
                    Ok(QueryAnswer {
                        content_type: "application/json",
                        body: body.to_string(),
                    })
                }
            }
        })
    }
}

/// A query error as an answer: the caller's mistake is 400; a limit reached is 503; a store
/// that cannot be read is 500. The operator sees in the log each query stopped by a limit
/// and each store problem (the SQL is not logged: it may name subjects).
fn refusal(error: QueryError) -> QueryRefusal {
    let status = match &error {
        QueryError::TimedOut { .. } | QueryError::MemoryLimit { .. } => 503,
        QueryError::ResultTooLarge { .. } => 413,
        QueryError::DataFusion(inner) if is_resources_exhausted(inner) => 503,
        QueryError::PolicyState(_)
        | QueryError::Format(_)
        | QueryError::Segment { .. }
        | QueryError::Log(_)
        | QueryError::Runtime(_) => 500,
        _ => 400,
    };
    match status {
        503 | 413 => tracing::warn!(%error, status, "audit_query_stopped"),
        500 => tracing::error!(%error, status, "audit_query_failed"),
        _ => {}
    }
    QueryRefusal {
        status: axum_status(status),
        message: error.to_string(),
    }
}

fn is_resources_exhausted(error: &portcullis_audit::query::DataFusionError) -> bool {
    matches!(
        error.find_root(),
        portcullis_audit::query::DataFusionError::ResourcesExhausted(_)
    )
}

fn axum_status(code: u16) -> portcullis_engine::api::StatusCode {
    portcullis_engine::api::StatusCode::from_u16(code)
        .unwrap_or(portcullis_engine::api::StatusCode::INTERNAL_SERVER_ERROR)
}
