//! Six audit questions as SQL, answered by Portcullis (`query_with_limits`, as `portcullis
//! audit query` and the server run it) and by DuckDB over the very same Parquet files, in the
//! same run; both answers must agree row by row.
//!
//! In: the history store. Out: per question, each engine's timed runs and the rows.
//!
//! Fairness. Both run warm (an untimed round first; the files are in the page cache for both),
//! taking turns run by run, so that a change in the machine's load meets both alike. Both use
//! the machine's cores as they come: DataFusion's default partitions (one per core) on the two
//! worker threads `query_with_limits` gives each query, DuckDB's default threads (one per
//! core). The SQL text is identical: DuckDB gets `access_events` as a view over
//! `read_parquet('DATA/events/*/*.parquet', hive_partitioning = true)` with `date` as a `DATE`,
//! as Portcullis declares it, and `rules` as a view over a Parquet file written from
//! Portcullis' own `SELECT * FROM rules`. Portcullis' time includes what every one of its
//! queries does before planning: listing the segments and decoding the archived bundles into
//! the policy-state tables; DuckDB reads the rules from a small file instead.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, anyhow, bail};
use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use portcullis_audit::query::{QueryLimits, query_with_limits};
use portcullis_audit::store::EVENTS_DIR;
use serde_json::{Value, json};

/// The DuckDB side, run by the venv's python.
const DUCKDB_RUNNER: &str = include_str!("duckdb_runner.py");

/// One question.
#[derive(Debug, Clone)]
pub struct Question {
    pub name: &'static str,
    pub sql: String,
}

/// What varies in the questions: whose accesses, over which week.
#[derive(Debug, Clone)]
pub struct QuestionParams {
    pub subject: String,
    pub from: String,
    pub to: String,
}

/// The six questions of issue #5, as an auditor would write them.
pub fn questions(params: &QuestionParams) -> Vec<Question> {
    let QuestionParams { subject, from, to } = params;
    vec![
        Question {
            name: "decisions per day",
            sql: "SELECT date, decision, count(*) AS n FROM access_events \
                  WHERE kind = 'decision' GROUP BY date, decision ORDER BY date, decision"
                .to_owned(),
        },
        Question {
            name: "top denied workloads",
            sql: "SELECT workload, count(*) AS denials FROM access_events \
                  WHERE decision = 'deny' AND workload IS NOT NULL \
                  GROUP BY workload ORDER BY denials DESC, workload LIMIT 20"
                .to_owned(),
        },
        Question {
            name: "one subject's accesses in a week",
            sql: format!(
                "SELECT seq, time, workload, target, action, resource, decision, reason_code \
                 FROM access_events WHERE subject = '{subject}' \
                 AND time >= TIMESTAMP '{from}' AND time < TIMESTAMP '{to}' ORDER BY seq"
            ),
        },
        Question {
            name: "distinct targets per workload",
            sql: "SELECT workload, count(DISTINCT target) AS targets, count(*) AS requests \
                  FROM access_events WHERE workload IS NOT NULL \
                  GROUP BY workload ORDER BY workload"
                .to_owned(),
        },
        Question {
            name: "credential TTL distribution",
            sql: "SELECT credential_provider, credential_ttl_s, count(*) AS issued \
                  FROM access_events WHERE credential_ttl_s IS NOT NULL \
                  GROUP BY credential_provider, credential_ttl_s \
                  ORDER BY credential_provider, credential_ttl_s"
                .to_owned(),
        },
        Question {
            name: "high-severity grants used (join with `rules`)",
            sql: "SELECT r.rule, r.workload, r.target, r.severity, count(*) AS uses \
                  FROM access_events e JOIN rules r \
                  ON r.bundle_hash = e.bundle_hash AND r.rule = e.rule \
                  WHERE e.decision = 'allow' AND r.severity IN ('high', 'critical') \
                  GROUP BY r.rule, r.workload, r.target, r.severity \
                  ORDER BY uses DESC, r.rule LIMIT 20"
                .to_owned(),
        },
    ]
}

/// A result as comparable values: rows of JSON values, times as microseconds.
pub type Rows = Vec<Vec<Value>>;

/// One engine's answer to one question.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The timed runs, in seconds.
    pub seconds: Vec<f64>,
    pub rows: Rows,
}

/// Both engines' answers to every question.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub duckdb_version: String,
    pub duckdb_threads: String,
    /// Per question: Portcullis' answer, then DuckDB's.
    pub answers: Vec<(Answer, Answer)>,
}

/// Asks every question of both engines, taking turns run by run (`warmup` untimed rounds,
/// then `runs` timed ones), so that both meet the same conditions on a machine whose load
/// changes; the rows are those of the last run.
pub fn compare(
    python: &Path,
    data_dir: &Path,
    rules: &Path,
    work_dir: &Path,
    questions: &[Question],
    warmup: usize,
    runs: usize,
) -> Result<Comparison> {
    let runtime = runtime()?;
    let mut duck = DuckDb::start(python, data_dir, rules, work_dir)?;
    let mut answers = Vec::with_capacity(questions.len());
    for question in questions {
        eprintln!("[query] {}", question.name);
        let ours_once = || -> Result<(f64, Vec<RecordBatch>)> {
            let started = Instant::now();
            let batches = runtime
                .block_on(query_with_limits(
                    data_dir,
                    &question.sql,
                    QueryLimits::default(),
                ))
                .map_err(|error| anyhow!("Portcullis failed on `{}`: {error}", question.name))?;
            Ok((started.elapsed().as_secs_f64(), batches))
        };
        for _ in 0..warmup {
            ours_once()?;
            duck.run(&question.sql, false)?;
        }
        let mut ours = Answer::default();
        let mut theirs = Answer::default();
        let runs = runs.max(1);
        for run in 0..runs {
            let last = run + 1 == runs;
            let (seconds, batches) = ours_once()?;
            ours.seconds.push(seconds);
            if last {
                ours.rows = rows_of(&batches)?;
            }
            let (seconds, rows) = duck.run(&question.sql, last)?;
            theirs.seconds.push(seconds);
            theirs.rows = rows.unwrap_or_default();
        }
        answers.push((ours, theirs));
    }
    Ok(Comparison {
        duckdb_version: duck.version.clone(),
        duckdb_threads: duck.threads.clone(),
        answers,
    })
}

/// The median time of a query that only reads the policy state: what every Portcullis query
/// pays before it reads an event (listing the segments, decoding the archived bundles).
pub fn fixed_cost(data_dir: &Path, runs: usize) -> Result<f64> {
    let runtime = runtime()?;
    let mut seconds = Vec::with_capacity(runs);
    // Run 0 warms up, untimed.
    for run in 0..=runs.max(1) {
        let started = Instant::now();
        runtime
            .block_on(query_with_limits(
                data_dir,
                "SELECT count(*) FROM rules",
                QueryLimits::default(),
            ))
            .map_err(|error| anyhow!("Portcullis failed on the policy state: {error}"))?;
        if run > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
    }
    Ok(crate::system::median(&mut seconds))
}

/// The runtime that awaits `query_with_limits`, which runs each query on a runtime and threads
/// of its own (as it does for the command and the server).
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")
}

/// Writes the `rules` table, as Portcullis answers `SELECT * FROM rules`, to a Parquet file
/// for DuckDB. Returns its rows.
pub fn export_rules(data_dir: &Path, out: &Path) -> Result<usize> {
    let batches = runtime()?
        .block_on(query_with_limits(
            data_dir,
            "SELECT * FROM rules",
            QueryLimits::default(),
        ))
        .map_err(|error| anyhow!("cannot read the rules table: {error}"))?;
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        bail!("the rules table is empty: the bundles were not archived");
    };
    let file = File::create(out).with_context(|| format!("cannot create `{}`", out.display()))?;
    let mut writer = ArrowWriter::try_new(file, schema, None).context("cannot write the rules")?;
    for batch in &batches {
        writer.write(batch).context("cannot write the rules")?;
    }
    writer.close().context("cannot write the rules")?;
    Ok(batches.iter().map(RecordBatch::num_rows).sum())
}

/// The DuckDB runner, a python child process that answers one query per line.
struct DuckDb {
    child: Child,
    /// `None` once closed, which ends the runner.
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
    version: String,
    threads: String,
}

impl DuckDb {
    /// Starts the runner over the store's segments and the exported rules file; `work_dir`
    /// receives the script.
    fn start(python: &Path, data_dir: &Path, rules: &Path, work_dir: &Path) -> Result<DuckDb> {
        let script = work_dir.join("duckdb_runner.py");
        std::fs::write(&script, DUCKDB_RUNNER)
            .with_context(|| format!("cannot write `{}`", script.display()))?;
        let mut child = Command::new(python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run `{}`", python.display()))?;
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the DuckDB runner has no pipes");
        };
        let glob = data_dir.join(EVENTS_DIR).join("*").join("*.parquet");
        let mut duck = DuckDb {
            child,
            input: Some(input),
            output: BufReader::new(output),
            version: String::new(),
            threads: String::new(),
        };
        let hello = duck.ask(&json!({
            "events_glob": glob.to_string_lossy(),
            "rules": rules.to_string_lossy(),
        }))?;
        let text = |value: Option<&Value>| match value {
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        duck.version = text(hello.get("version"));
        duck.threads = text(hello.get("threads"));
        Ok(duck)
    }

    /// Runs `sql` once; its time, and its rows when asked for.
    fn run(&mut self, sql: &str, rows: bool) -> Result<(f64, Option<Rows>)> {
        let reply = self.ask(&json!({"sql": sql, "rows": rows}))?;
        let seconds = reply
            .get("seconds")
            .and_then(Value::as_f64)
            .context("the DuckDB runner's answer has no time")?;
        let rows = reply.get("rows").and_then(Value::as_array).map(|rows| {
            rows.iter()
                .map(|row| row.as_array().cloned().unwrap_or_default())
                .collect()
        });
        Ok((seconds, rows))
    }

    fn ask(&mut self, message: &Value) -> Result<Value> {
        let input = self.input.as_mut().context("the DuckDB runner is closed")?;
        writeln!(input, "{message}")
            .and_then(|()| input.flush())
            .context("cannot write to the DuckDB runner")?;
        let mut line = String::new();
        let read = self
            .output
            .read_line(&mut line)
            .context("cannot read from the DuckDB runner")?;
        if read == 0 {
            bail!(
                "the DuckDB runner stopped (its error is above); is duckdb installed in the \
                 python given? scripts/test sets up `.venv`"
            );
        }
        serde_json::from_str(&line).context("the DuckDB runner's answer is not JSON")
    }
}

impl Drop for DuckDb {
    fn drop(&mut self) {
        // Closing its input ends the runner's loop; waiting leaves no process behind.
        drop(self.input.take());
        if let Err(error) = self.child.wait() {
            eprintln!("warning: the DuckDB runner did not end cleanly: {error}");
        }
    }
}

/// Where the venv's python is: `--python`, else `PORTCULLIS_TEST_PYTHON`, else the
/// workspace's `.venv` that scripts/test creates.
pub fn find_python(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_owned();
    }
    if let Some(path) = std::env::var_os("PORTCULLIS_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// The batches' rows as comparable values.
pub fn rows_of(batches: &[RecordBatch]) -> Result<Rows> {
    let mut rows = Vec::new();
    for batch in batches {
        let columns = batch
            .columns()
            .iter()
            .map(comparable)
            .collect::<Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            rows.push(columns.iter().map(|column| value(column, row)).collect());
        }
    }
    Ok(rows)
}

/// A column cast to one of the few types [`value`] reads: integers to `Int64`, floats to
/// `Float64`, times to `Int64` microseconds, text and everything else to `Utf8`.
fn comparable(column: &ArrayRef) -> Result<ArrayRef> {
    let target = match column.data_type() {
        DataType::Boolean => return Ok(column.clone()),
        data_type if data_type.is_integer() => DataType::Int64,
        data_type if data_type.is_floating() => DataType::Float64,
        DataType::Timestamp(_, zone) => {
            let micros = DataType::Timestamp(TimeUnit::Microsecond, zone.clone());
            let column = cast(column, &micros).context("cannot read a time column")?;
            return cast(&column, &DataType::Int64).context("cannot read a time column");
        }
        _ => DataType::Utf8,
    };
    cast(column, &target).with_context(|| format!("cannot read a {} column", column.data_type()))
}

fn value(column: &ArrayRef, row: usize) -> Value {
    if column.is_null(row) {
        return Value::Null;
    }
    let any = column.as_any();
    if let Some(ints) = any.downcast_ref::<Int64Array>() {
        return Value::from(ints.value(row));
    }
    if let Some(floats) = any.downcast_ref::<Float64Array>() {
        return Value::from(floats.value(row));
    }
    if let Some(flags) = any.downcast_ref::<BooleanArray>() {
        return Value::from(flags.value(row));
    }
    if let Some(texts) = any.downcast_ref::<StringArray>() {
        return Value::from(texts.value(row));
    }
    Value::Null
}

/// Why two answers differ: the first row that does not match, or the row counts.
pub fn difference(portcullis: &Rows, duckdb: &Rows) -> Option<String> {
    if portcullis.len() != duckdb.len() {
        return Some(format!(
            "Portcullis returned {} rows, DuckDB {}",
            portcullis.len(),
            duckdb.len()
        ));
    }
    portcullis
        .iter()
        .zip(duckdb)
        .enumerate()
        .find(|(_, (ours, theirs))| !same_row(ours, theirs))
        .map(|(idx, (ours, theirs))| {
            format!(
                "row {idx} differs: Portcullis {}, DuckDB {}",
                Value::from(ours.clone()),
                Value::from(theirs.clone())
            )
        })
}

fn same_row(ours: &[Value], theirs: &[Value]) -> bool {
    ours.len() == theirs.len() && ours.iter().zip(theirs).all(|(a, b)| same_value(a, b))
}

/// Equal values; numbers equal as integers, or as floats within a relative 1e-9 (the engines
/// may add floating-point values in different orders).
fn same_value(ours: &Value, theirs: &Value) -> bool {
    match (ours, theirs) {
        (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => {
                let (a, b) = (
                    a.as_f64().unwrap_or(f64::NAN),
                    b.as_f64().unwrap_or(f64::NAN),
                );
                (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
            }
        },
        _ => ours == theirs,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn rows_become_comparable_values() {
        let schema = Schema::new(vec![
            Field::new("n", DataType::UInt64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("name", DataType::Utf8View, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(arrow::array::UInt64Array::from(vec![Some(3), None])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1_000_001), Some(5)])
                        .with_timezone("UTC"),
                ),
                Arc::new(arrow::array::StringViewArray::from(vec![
                    Some("a"),
                    Some("b"),
                ])),
            ],
        )
        .unwrap();
        let rows = rows_of(&[batch]).unwrap();
        assert_eq!(rows[0], vec![json!(3), json!(1_000_001), json!("a")]);
        assert_eq!(rows[1], vec![Value::Null, json!(5), json!("b")]);
    }

    #[test]
    fn differences_are_found_and_named() {
        let ours = vec![vec![json!("x"), json!(2)], vec![json!("y"), json!(0.5)]];
        let mut theirs = ours.clone();
        assert_eq!(difference(&ours, &theirs), None);
        theirs[1][1] = json!(0.500_000_000_000_1);
        assert_eq!(difference(&ours, &theirs), None);
        theirs[0][1] = json!(3);
        let found = difference(&ours, &theirs).unwrap();
        assert!(found.starts_with("row 0 differs"), "{found}");
        theirs.pop();
        assert!(difference(&ours, &theirs).unwrap().contains("1"));
    }
}
