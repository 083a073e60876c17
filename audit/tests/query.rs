//! SQL over the store: values and columns, refusals, empty stores, output formats.

#![cfg(feature = "query")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

mod common;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType};
use common::{decision, open};
use portcullis_audit::{
    ConditionOutcome, Decision, EventKind, NewEvent, OutputFormat, QueryError, Recorded,
    format_batches, query,
};

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// The single count a `SELECT count(*) …` query returns.
async fn count(dir: &std::path::Path, sql: &str) -> i64 {
    let batches = query(dir, sql).await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// The first column of what `sql` returns, a column of integers (`seq`).
async fn seqs_of(dir: &std::path::Path, sql: &str) -> Vec<i64> {
    let batches = query(dir, sql).await.unwrap();
    batches
        .iter()
        .flat_map(|batch| {
            batch
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Records an allow, a deny with conditions and a policy change, and seals them.
fn store_with_three_events(dir: &std::path::Path) -> Vec<Recorded> {
    let log = open(dir);
    let mut denied = decision("ci_deployer", Decision::Deny);
    denied.conditions = vec![ConditionOutcome {
        name: "business_hours".into(),
        result: false,
    }];
    denied.source_ip = Some("192.0.2.7".parse().unwrap());
    let change = NewEvent {
        kind: EventKind::PolicyChange,
        bundle_hash: Some("ab12".into()),
        ..NewEvent::default()
    };
    let recorded = vec![
        log.record(decision("orders_api", Decision::Allow)).unwrap(),
        log.record(denied).unwrap(),
        log.record(change).unwrap(),
    ];
    log.close().unwrap();
    recorded
}

#[tokio::test]
async fn query_returns_recorded_events_with_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = store_with_three_events(dir.path());

    let sql = "SELECT seq, event_id, time, date, node, kind, decision, workload, port, \
               conditions, source_ip FROM access_events ORDER BY seq";
    let batches = query(dir.path(), sql).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 3);

    let seq = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!(seq.values().to_vec(), vec![1, 2, 3]);
    let event_id = batch.column(1).as_string::<i32>();
    let time = batch.column(2).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        batch.schema().field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    for (row, event) in recorded.iter().enumerate() {
        assert_eq!(event_id.value(row), event.event_id.to_string());
        assert_eq!(time.value(row), event.time.timestamp_micros());
    }
    // The partition column is a DATE, read from the directory's `YYYY-MM-DD`.
    assert_eq!(batch.schema().field(3).data_type(), &DataType::Date32);
    let date = arrow::compute::cast(batch.column(3), &DataType::Utf8).unwrap();
    assert_eq!(
        date.as_string::<i32>().value(0),
        recorded[0].time.format("%Y-%m-%d").to_string()
    );
    assert_eq!(batch.column(4).as_string::<i32>().value(2), "test");

    let kind = batch.column(5).as_string::<i32>();
    assert_eq!(
        (kind.value(0), kind.value(2)),
        ("decision", "policy_change")
    );
    let decision = batch.column(6).as_string::<i32>();
    assert_eq!((decision.value(0), decision.value(1)), ("allow", "deny"));
    assert!(decision.is_null(2));
    let workload = batch.column(7).as_string::<i32>();
    assert_eq!(
        (workload.value(0), workload.value(1)),
        ("orders_api", "ci_deployer")
    );
    assert_eq!(batch.column(8).as_primitive::<Int32Type>().value(0), 5432);
    let conditions = batch.column(9).as_string::<i32>();
    assert_eq!(
        conditions.value(1),
        r#"[{"name":"business_hours","result":false}]"#
    );
    assert_eq!(batch.column(10).as_string::<i32>().value(1), "192.0.2.7");
}

#[tokio::test]
async fn filters_and_aggregates_work() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = store_with_three_events(dir.path());
    let sql = "SELECT decision, count(*) AS n FROM access_events \
               WHERE kind = 'decision' GROUP BY decision ORDER BY decision";
    let batches = query(dir.path(), sql).await.unwrap();
    let text = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(text, "decision,n\nallow,1\ndeny,1\n");

    let date = recorded[0].time.format("%Y-%m-%d");
    let sql = "SELECT count(*) FROM access_events WHERE date";
    assert_eq!(count(dir.path(), &format!("{sql} >= '{date}'")).await, 3);
    assert_eq!(count(dir.path(), &format!("{sql} < '2000-01-01'")).await, 0);
    // A date compares and subtracts as a date.
    let day_before = format!("{sql} = DATE '{date}' - INTERVAL '1' DAY");
    assert_eq!(count(dir.path(), &day_before).await, 0);
    let same_day = format!("{sql} - INTERVAL '1' DAY < DATE '{date}'");
    assert_eq!(count(dir.path(), &same_day).await, 3);
}

#[tokio::test]
async fn empty_store_gives_an_empty_result() {
    let missing = tempfile::tempdir().unwrap();
    let batches = query(missing.path(), "SELECT * FROM access_events")
        .await
        .unwrap();
    assert_eq!(rows(&batches), 0);

    let opened = tempfile::tempdir().unwrap();
    open(opened.path()).close().unwrap();
    let batches = query(opened.path(), "SELECT count(*) FROM access_events")
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 0);
}

#[tokio::test]
async fn queries_run_while_the_store_is_open_and_see_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.record(decision("orders_api", Decision::Allow)).unwrap();
    log.seal().unwrap();
    log.record(decision("orders_api", Decision::Deny)).unwrap();

    let batches = query(dir.path(), "SELECT * FROM access_events")
        .await
        .unwrap();
    // The sealed event from its segment, the newer one from the write-ahead log.
    assert_eq!(rows(&batches), 2);
    log.close().unwrap();
    let batches = query(dir.path(), "SELECT * FROM access_events")
        .await
        .unwrap();
    assert_eq!(rows(&batches), 2);
}

#[tokio::test]
async fn statements_other_than_one_query_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_three_events(dir.path());
    let cases = [
        ("DROP TABLE access_events", "got `DROP TABLE`"),
        (
            "INSERT INTO access_events (seq) VALUES (1)",
            "got `INSERT INTO`",
        ),
        ("DELETE FROM access_events", "got `DELETE FROM`"),
        (
            "CREATE TABLE t AS SELECT * FROM access_events",
            "got `CREATE TABLE`",
        ),
        ("COPY access_events TO '/tmp/out.csv'", "got `COPY`"),
        ("SET datafusion.execution.batch_size = 1", "got `SET`"),
        ("SELECT 1; SELECT 2", "got 2 statements"),
        ("", "got no statement"),
    ];
    for (sql, expected) in cases {
        let err = query(dir.path(), sql).await.unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("only a single SELECT query is allowed"),
            "{sql}: {message}"
        );
        assert!(message.ends_with(expected), "{sql}: {message}");
    }
    let batches = query(dir.path(), "SELECT count(*) FROM access_events")
        .await
        .unwrap();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), 3);
}

#[tokio::test]
async fn sql_errors_carry_datafusion_s_message() {
    let dir = tempfile::tempdir().unwrap();
    let err = query(dir.path(), "SELECT no_such_column FROM access_events")
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::DataFusion(_)), "{err}");
    assert!(err.to_string().contains("no_such_column"), "{err}");

    // A statement that does not parse says so once, in the parser's words.
    let err = query(dir.path(), "SELEC 1").await.unwrap_err();
    assert!(matches!(err, QueryError::Syntax(_)), "{err}");
    assert!(
        err.to_string().starts_with("the query does not parse"),
        "{err}"
    );
    assert_eq!(err.to_string().matches("SELEC").count(), 1, "{err}");
}

#[tokio::test]
async fn json_output_is_one_object_per_row_with_rfc3339_times() {
    let dir = tempfile::tempdir().unwrap();
    let recorded = store_with_three_events(dir.path());
    let sql = "SELECT seq, time, decision FROM access_events ORDER BY seq";
    let batches = query(dir.path(), sql).await.unwrap();
    let text = format_batches(&batches, OutputFormat::Json).unwrap();

    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (line, event) in lines.iter().zip(&recorded) {
        assert_eq!(line["seq"], event.seq);
        let time = line["time"].as_str().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(time).unwrap();
        assert_eq!(
            parsed.timestamp_micros(),
            event.time.timestamp_micros(),
            "{time}"
        );
    }
    assert_eq!(lines[0]["decision"], "allow");
    assert!(
        lines[2]["decision"].is_null(),
        "nulls are explicit: {}",
        lines[2]
    );
}

#[tokio::test]
async fn table_output_has_headers_and_values() {
    let dir = tempfile::tempdir().unwrap();
    store_with_three_events(dir.path());
    let sql = "SELECT workload, decision FROM access_events WHERE seq = 1";
    let batches = query(dir.path(), sql).await.unwrap();
    let text = format_batches(&batches, OutputFormat::Table).unwrap();
    let expected = "\
+------------+----------+
| workload   | decision |
+------------+----------+
| orders_api | allow    |
+------------+----------+";
    assert_eq!(text, expected);
}

#[tokio::test]
async fn a_table_shows_a_null_apart_from_an_empty_text() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT CAST(NULL AS VARCHAR) AS missing, '' AS empty, CAST(NULL AS BIGINT) AS n";
    let batches = query(dir.path(), sql).await.unwrap();
    let text = format_batches(&batches, OutputFormat::Table).unwrap();
    let row = text.lines().nth(3).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells, ["", "NULL", "", "NULL", ""], "{text}");
    // CSV cannot tell them apart; JSON does.
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(csv, "missing,empty,n\n,,\n");
    let json = format_batches(&batches, OutputFormat::Json).unwrap();
    assert_eq!(json, "{\"missing\":null,\"empty\":\"\",\"n\":null}\n");
}

#[tokio::test]
async fn order_by_seq_spans_several_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = common::open_with(dir.path(), 2);
    for _ in 0..5 {
        log.record(NewEvent::default()).unwrap();
    }
    log.close().unwrap();

    for (order, expected) in [("ASC", vec![1, 2, 3, 4, 5]), ("DESC", vec![5, 4, 3, 2, 1])] {
        let sql = format!("SELECT seq FROM access_events ORDER BY seq {order}");
        assert_eq!(seqs_of(dir.path(), &sql).await, expected);
    }
}

/// The physical plan of `sql`, as `EXPLAIN` prints it.
async fn physical_plan(dir: &std::path::Path, sql: &str) -> String {
    let batches = query(dir, &format!("EXPLAIN {sql}")).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let (kinds, plans) = (
        batch.column(0).as_string::<i32>(),
        batch.column(1).as_string::<i32>(),
    );
    (0..batch.num_rows())
        .find(|&row| kinds.value(row) == "physical_plan")
        .map(|row| plans.value(row).to_owned())
        .unwrap()
}

/// Ten segments of three events; every fifth event is of a rare workload.
fn ten_segments_of_three(dir: &std::path::Path) {
    let log = common::open_with(dir, 3);
    for seq in 1..=30 {
        let workload = if seq % 5 == 0 { "rare" } else { "common" };
        log.record(decision(workload, Decision::Allow)).unwrap();
    }
    log.close().unwrap();
    assert_eq!(common::segment_files(dir).len(), 10);
}

#[tokio::test]
async fn segments_are_dealt_to_the_partitions_in_turn_and_still_merge_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    ten_segments_of_three(dir.path());

    let plan = physical_plan(dir.path(), "SELECT seq FROM access_events ORDER BY seq").await;
    // The first `seq` of each segment each partition reads, from `file_groups={N groups:
    // [[…/seg-FIRST-LAST.parquet, …], […]]}`.
    let groups = plan
        .split("file_groups={")
        .nth(1)
        .unwrap()
        .split("]]}")
        .next()
        .unwrap();
    let firsts: Vec<Vec<u64>> = groups
        .split("], [")
        .map(|group| {
            group
                .split("/seg-")
                .skip(1)
                .map(|name| name.split('-').next().unwrap().parse().unwrap())
                .collect()
        })
        .collect();
    // Consecutive segments go to different partitions, in turn, each partition in seq order.
    // DataFusion makes one partition per core, and no more than there are segments.
    let partitions = firsts.len();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(partitions, cores.min(10), "{plan}");
    for (index, first) in (1..=28).step_by(3).enumerate() {
        assert!(firsts[index % partitions].contains(&first), "{plan}");
    }
    for group in &firsts {
        assert!(group.is_sorted(), "{plan}");
    }
    // And DataFusion, having checked the files' statistics, merges them without a sort.
    assert!(plan.contains("SortPreservingMergeExec"), "{plan}");
    assert!(
        !plan.contains("SortExec:"),
        "the segments' order was lost: {plan}"
    );

    // Each partition's rows come in `seq` order, also when a filter leaves few and a limit
    // stops early.
    let sql = "SELECT seq FROM access_events WHERE workload = 'rare' ORDER BY seq LIMIT 3";
    assert_eq!(seqs_of(dir.path(), sql).await, [5, 10, 15]);
}

#[tokio::test]
async fn rule_annotations_are_columns_and_older_segments_read_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let mut annotated = decision("billing_release", Decision::Allow);
    annotated.rule_description = Some("release tags deploy".into());
    annotated.rule_severity = Some("high".into());
    log.record(annotated).unwrap();
    log.record(decision("docs", Decision::Deny)).unwrap();
    log.close().unwrap();

    // A segment written before the two columns existed: the same schema without them.
    let time = chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap();
    let old = common::stored_event(100, time, decision("legacy", Decision::Allow));
    let batch = portcullis_audit::schema::events_to_batch(&[old]).unwrap();
    let n_old_columns = batch.num_columns() - 2;
    let batch = batch
        .project(&(0..n_old_columns).collect::<Vec<_>>())
        .unwrap();
    let partition = dir.path().join("events/date=2023-11-14");
    std::fs::create_dir_all(&partition).unwrap();
    let file = std::fs::File::create(
        partition.join("seg-00000000000000000100-00000000000000000100.parquet"),
    )
    .unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();

    let sql = "SELECT workload, rule_description, rule_severity FROM access_events ORDER BY seq";
    let batches = query(dir.path(), sql).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(batch.num_rows(), 3);
    let workload = batch.column(0).as_string::<i32>();
    let description = batch.column(1).as_string::<i32>();
    let severity = batch.column(2).as_string::<i32>();
    assert_eq!(workload.value(0), "billing_release");
    assert_eq!(description.value(0), "release tags deploy");
    assert_eq!(severity.value(0), "high");
    assert!(
        description.is_null(1) && severity.is_null(1),
        "no rule annotations"
    );
    assert_eq!(workload.value(2), "legacy");
    assert!(
        description.is_null(2) && severity.is_null(2),
        "an older segment"
    );
}

#[tokio::test]
async fn queries_include_the_events_still_in_the_log_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for workload in ["a", "b", "c"] {
        log.record(decision(workload, Decision::Allow)).unwrap();
    }
    // Nothing sealed yet: every event comes from the write-ahead log.
    let sql = "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM access_events";
    let counts = |batches: Vec<RecordBatch>| -> Vec<i64> {
        (0..4)
            .map(|c| match batches[0].column(c).data_type() {
                DataType::Int64 => batches[0].column(c).as_primitive::<Int64Type>().value(0),
                _ => panic!("unexpected type"),
            })
            .collect()
    };
    assert_eq!(counts(query(dir.path(), sql).await.unwrap()), [3, 3, 1, 3]);
    let by_date = "SELECT date, workload, time FROM access_events WHERE workload = 'b'";
    let batches = query(dir.path(), by_date).await.unwrap();
    assert_eq!(rows(&batches), 1);
    // The log's events get the date their segment's directory will name, as a DATE too.
    let dates = arrow::compute::cast(batches[0].column(0), &DataType::Utf8).unwrap();
    let micros = batches[0]
        .column(2)
        .as_primitive::<TimestampMicrosecondType>();
    let time = chrono::DateTime::from_timestamp_micros(micros.value(0)).unwrap();
    assert_eq!(
        dates.as_string::<i32>().value(0),
        time.format("%Y-%m-%d").to_string()
    );

    // Sealed, and more recorded: the segments answer for the first three, the log for the rest.
    log.seal().unwrap();
    for workload in ["d", "e"] {
        log.record(decision(workload, Decision::Deny)).unwrap();
    }
    assert_eq!(counts(query(dir.path(), sql).await.unwrap()), [5, 5, 1, 5]);
    let denied = "SELECT count(*) FROM access_events WHERE decision = 'deny'";
    assert_eq!(count(dir.path(), denied).await, 2);
    log.close().unwrap();
    assert_eq!(counts(query(dir.path(), sql).await.unwrap()), [5, 5, 1, 5]);
}

/// An aggregation whose filter goes inside it (`query/filter_in_aggregate.rs`) still hands
/// the filter's condition to the Parquet scan, which skips the segments it rules out.
#[tokio::test]
async fn an_aggregation_over_a_filter_still_prunes_segments() {
    let dir = tempfile::tempdir().unwrap();
    ten_segments_of_three(dir.path());
    let sql = "SELECT workload, count(*) AS n FROM access_events WHERE seq > 24 \
               GROUP BY workload ORDER BY workload";
    let plan = physical_plan(dir.path(), sql).await;
    assert!(plan.contains("ThinningExec"), "{plan}");
    let scan = plan
        .lines()
        .find(|line| line.contains("DataSourceExec"))
        .unwrap();
    assert!(scan.contains("predicate=seq@"), "{plan}");

    let analyzed = query(dir.path(), &format!("EXPLAIN ANALYZE {sql}"))
        .await
        .unwrap();
    let analyzed = arrow::util::pretty::pretty_format_batches(&analyzed)
        .unwrap()
        .to_string();
    // Of the ten segments (three events each), the statistics leave the last two.
    assert!(
        analyzed.contains("files_ranges_pruned_statistics=10 total → 2 matched"),
        "{analyzed}"
    );

    let batches = query(dir.path(), sql).await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(text.contains("| common   | 4 |"), "{text}");
    assert!(text.contains("| rare     | 2 |"), "{text}");
}
