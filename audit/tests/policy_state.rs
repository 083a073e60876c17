//! The policy-state tables: the bundles the server ran, queried beside the events; and the
//! limits every query runs under.

#![cfg(feature = "query")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests unwrap and panic on a wrong variant"
)]

use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use portcullis_audit::bundles::{archive_bundle, current_bundle, set_current_bundle};
use portcullis_audit::query::{QueryLimits, query_with_limits};
use portcullis_audit::{
    OutputFormat, QueryError, format_batches, format_batches_for_terminal, query,
};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{SourceFile, compile};

/// Compiles `source` and keeps its bundle in the store at `dir`; gives its hash.
fn archive(dir: &Path, source: &str) -> String {
    let set = compile(&[SourceFile::new("policy.gate", source)]).unwrap();
    let bundle = Bundle::from_policy_set(&set).unwrap();
    let hash = bundle.hash_hex();
    archive_bundle(dir, &hash, &bundle.to_bytes()).unwrap();
    hash
}

const FIRST: &str = "\
workload ci { github { repository == \"acme/api\" } }
target api { https { host = \"api.example\" } }
target db { postgres { host = \"db.example\" database = \"orders\" } }
credential api_token { jwt { audience = \"api\" ttl = 10m } }
credential legacy { static { env = \"LEGACY_DB_PASSWORD\" } }
@severity(\"high\")
permit ci_calls_api { workload ci target api credential api_token }
permit ci_reads_db { workload ci target db credential legacy when request.action == \"SELECT\" }
forbid no_forks { workload any github when client.github.repository_owner != \"acme\" }
";

const SECOND: &str = "\
workload ci { github { repository == \"acme/api\" } }
target api { https { host = \"api.example\" path_prefix = \"/v2/\" } }
permit ci_calls_api { workload ci target api }
";

fn text_column(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|batch| {
            let array = batch.column(column).as_string::<i32>();
            (0..array.len())
                .map(|row| array.value(row).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn the_tables_describe_every_archived_bundle_and_mark_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let first = archive(dir.path(), FIRST);
    let second = archive(dir.path(), SECOND);
    // Archiving the same bundle again changes nothing.
    assert_eq!(archive(dir.path(), FIRST), first);
    set_current_bundle(dir.path(), &second).unwrap();
    assert_eq!(current_bundle(dir.path()).as_deref(), Some(second.as_str()));

    let current_rules = "SELECT r.rule FROM rules r JOIN bundles b USING (bundle_hash) \
                         WHERE b.current ORDER BY r.rule";
    let batches = query(dir.path(), current_rules).await.unwrap();
    assert_eq!(text_column(&batches, 0), ["ci_calls_api"]);

    let first_rules = format!(
        "SELECT rule, effect, workload, target, credential, has_when, severity FROM rules \
         WHERE bundle_hash = '{first}' ORDER BY rule"
    );
    let batches = query(dir.path(), &first_rules).await.unwrap();
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(
        csv,
        "rule,effect,workload,target,credential,has_when,severity\n\
         ci_calls_api,permit,ci,api,api_token,false,high\n\
         ci_reads_db,permit,ci,db,legacy,true,\n\
         no_forks,forbid,any github,any,,true,\n"
    );

    // A static secret is flagged, and only where it comes from is shown.
    let credentials = format!(
        "SELECT credential, kind, ttl_s, static_secret, source FROM credentials \
         WHERE bundle_hash = '{first}' ORDER BY credential"
    );
    let batches = query(dir.path(), &credentials).await.unwrap();
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(
        csv,
        "credential,kind,ttl_s,static_secret,source\n\
         api_token,jwt,600,false,audience api\n\
         legacy,static,,true,env LEGACY_DB_PASSWORD\n"
    );

    let targets = "SELECT t.target, t.protocol, t.port, t.path_prefix FROM targets t \
                   JOIN bundles b USING (bundle_hash) WHERE b.current";
    let batches = query(dir.path(), targets).await.unwrap();
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(
        csv,
        "target,protocol,port,path_prefix\napi,https,443,/v2/\n"
    );

    let counts = "SELECT rules FROM bundles ORDER BY rules";
    let batches = query(dir.path(), counts).await.unwrap();
    let counts = batches[0].column(0).as_primitive::<UInt64Type>();
    assert_eq!(counts.values().to_vec(), [1, 3]);
}

#[tokio::test]
async fn the_bundles_table_gives_each_signed_bundle_its_key_and_signing_time() {
    let dir = tempfile::tempdir().unwrap();
    let unsigned = archive(dir.path(), SECOND);
    let set = compile(&[SourceFile::new("policy.gate", FIRST)]).unwrap();
    let key = portcullis_lang::bundle::SigningKey::from_bytes(&[9; 32]);
    // 2026-12-05T06:00:00Z.
    let signed = Bundle::from_policy_set(&set)
        .unwrap()
        .sign_at(&key, 1_796_450_400);
    let signed_hash = signed.hash_hex();
    archive_bundle(dir.path(), &signed_hash, &signed.to_bytes()).unwrap();
    let key_id = signed.signature().unwrap().key_id();

    let sql = format!(
        "SELECT bundle_hash = '{signed_hash}' AS signed, signing_key_id, signed_at FROM bundles \
         ORDER BY signed"
    );
    let batches = query(dir.path(), &sql).await.unwrap();
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(
        csv,
        format!("signed,signing_key_id,signed_at\nfalse,,\ntrue,{key_id},2026-12-05T06:00:00Z\n"),
        "unsigned: {unsigned}"
    );
}

#[tokio::test]
async fn the_tables_follow_the_archive_from_one_query_to_the_next() {
    // Each query's tables are built from the archive as it is when the query starts, though
    // a process keeps the last tables it built for the next query.
    let dir = tempfile::tempdir().unwrap();
    let bundles = "SELECT bundle_hash, current FROM bundles ORDER BY bundle_hash";
    let first = archive(dir.path(), FIRST);
    set_current_bundle(dir.path(), &first).unwrap();
    let batches = query(dir.path(), bundles).await.unwrap();
    assert_eq!(text_column(&batches, 0), [first.as_str()]);

    let second = archive(dir.path(), SECOND);
    let batches = query(dir.path(), bundles).await.unwrap();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(text_column(&batches, 0), both);
    let current = "SELECT bundle_hash FROM bundles WHERE current";
    let batches = query(dir.path(), current).await.unwrap();
    assert_eq!(text_column(&batches, 0), [first.as_str()]);

    set_current_bundle(dir.path(), &second).unwrap();
    let batches = query(dir.path(), current).await.unwrap();
    assert_eq!(text_column(&batches, 0), [second.as_str()]);

    // Another store in the same process has its own tables.
    let other = tempfile::tempdir().unwrap();
    let batches = query(other.path(), bundles).await.unwrap();
    assert!(text_column(&batches, 0).is_empty());

    // A bundle damaged after it was read is noticed by the next query.
    let path = dir.path().join("bundles").join(format!("{second}.bundle"));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    let error = query(dir.path(), bundles).await.unwrap_err();
    assert!(
        error.to_string().contains(&format!("{second}.bundle")),
        "{error}"
    );
}

#[tokio::test]
async fn a_store_without_bundles_has_empty_tables() {
    let dir = tempfile::tempdir().unwrap();
    for table in ["bundles", "workloads", "targets", "credentials", "rules"] {
        let batches = query(dir.path(), &format!("SELECT * FROM {table}"))
            .await
            .unwrap();
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, 0, "{table}");
    }
    // No rows still names the columns.
    let batches = query(dir.path(), "SELECT rule, effect FROM rules")
        .await
        .unwrap();
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(csv, "rule,effect\n");
}

#[tokio::test]
async fn a_damaged_archived_bundle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hash = archive(dir.path(), SECOND);
    let path = dir.path().join("bundles").join(format!("{hash}.bundle"));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let error = query(dir.path(), "SELECT * FROM rules").await.unwrap_err();
    assert!(matches!(error, QueryError::PolicyState(_)), "{error}");
    assert!(
        error.to_string().contains(&format!("{hash}.bundle")),
        "{error}"
    );
}

#[tokio::test]
async fn a_query_past_its_memory_limit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QueryLimits {
        memory_bytes: 64 * 1024,
        ..QueryLimits::default()
    };
    let sql = "SELECT value FROM generate_series(1, 2000000) ORDER BY value DESC LIMIT 3";
    // Sorting two million rows needs far more than 64 KiB; the pool refuses it.
    let without_limit = query(dir.path(), sql).await.unwrap();
    assert_eq!(without_limit[0].num_rows(), 3);
    let error = query_with_limits(dir.path(), sql, limits).await;
    let sql = "SELECT array_agg(value) FROM generate_series(1, 2000000)";
    let error = match error {
        Err(error) => error,
        Ok(_) => query_with_limits(dir.path(), sql, limits)
            .await
            .unwrap_err(),
    };
    // Said in Portcullis' terms: the limit, and the setting that raises it, not DataFusion's.
    assert!(
        matches!(
            error,
            QueryError::MemoryLimit {
                limit_bytes: 65_536,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("audit.query_memory_mb"), "{message}");
    assert!(!message.contains("datafusion."), "{message}");
    // One line: not DataFusion's list of its operators, nor the line that heads it.
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!message.contains("top memory consumers"), "{message}");
    assert!(message.contains("Failed to allocate"), "{message}");
}

#[tokio::test]
async fn a_damaged_segment_is_an_error_that_says_how_to_find_it() {
    use portcullis_audit::{AuditLog, AuditOptions, EventKind, NewEvent};

    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(dir.path(), AuditOptions::new("node-1")).unwrap();
    for n in 0..500 {
        let event = NewEvent {
            kind: EventKind::Decision,
            subject: Some(format!("subject-{n}")),
            claims: Some(format!("{{\"run\":\"{n:0>400}\"}}")),
            ..NewEvent::default()
        };
        log.record(event).unwrap();
    }
    log.close().unwrap();
    let segment = walk_files(&dir.path().join("events"))
        .into_iter()
        .find(|path| path.extension().is_some_and(|ext| ext == "parquet"))
        .unwrap();
    // Zero the middle of the file: the pages there no longer decode.
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle - 2000..middle + 2000].fill(0);
    std::fs::write(&segment, bytes).unwrap();

    let error = query(
        dir.path(),
        "SELECT max(claims), max(subject), count(*) FROM access_events",
    )
    .await
    .unwrap_err();
    assert!(matches!(error, QueryError::Segment { .. }), "{error:?}");
    assert!(
        error.to_string().contains("portcullis audit verify"),
        "{error}"
    );
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test]
async fn a_query_past_its_time_limit_stops() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QueryLimits {
        timeout: Duration::from_millis(50),
        ..QueryLimits::default()
    };
    let sql = "SELECT count(*) FROM generate_series(1, 20000) a, generate_series(1, 20000) b \
               WHERE a.value * b.value % 7 = 3";
    let error = query_with_limits(dir.path(), sql, limits)
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::TimedOut { .. }), "{error}");
    assert!(error.to_string().contains("0.05 s"), "{error}");
}

#[tokio::test]
async fn a_deeply_nested_expression_is_answered_not_a_crash() {
    // Two hundred `OR`s recurse deeper in planning than a worker thread's stack holds.
    let dir = tempfile::tempdir().unwrap();
    let terms: Vec<String> = (0..200).map(|i| format!("value = {i}")).collect();
    let sql = format!(
        "SELECT count(*) FROM generate_series(1, 10) WHERE {}",
        terms.join(" OR ")
    );
    let batches = query(dir.path(), &sql).await.unwrap();
    assert_eq!(batches[0].num_rows(), 1);
}

#[tokio::test]
async fn nesting_is_parsed_to_the_expression_limit_and_refused_past_it_with_the_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let nested = |open: &str, close: &str, depth: usize| {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    };
    // Sixty levels of parentheses, function calls and `NOT`s: beyond the parser's default of
    // fifty, well within the expression limit, so answered.
    for sql in [
        format!("SELECT {} AS x", nested("(", ")", 60)),
        format!("SELECT {} AS x", nested("abs(", ")", 60)),
        format!("SELECT 1 AS x WHERE {} true", "NOT ".repeat(60)),
    ] {
        let batches = query(dir.path(), &sql)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(batches[0].num_rows(), 1, "{sql}");
    }
    // Past the parser's limit: refused as a syntax error that names the limit and the way
    // out, not the parser's bare words.
    let error = query(
        dir.path(),
        &format!("SELECT {} AS x", nested("(", ")", 300)),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, QueryError::Syntax(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("more than 256 levels deep"), "{message}");
    assert!(message.contains("IN (…)"), "{message}");
    // A parse error found by the planner's own parse reads like any other.
    let error = query(dir.path(), "SELECT 1 WHERE").await.unwrap_err();
    assert!(matches!(error, QueryError::Syntax(_)), "{error}");
    assert!(!error.to_string().contains("ParserError("), "{error}");
}

#[tokio::test]
async fn an_expression_too_deep_to_plan_in_time_is_refused_before_planning() {
    // Planning time grows with the square of the depth, and the time limit cannot stop it:
    // five thousand `+`s took over a minute. Refused at once, with the way out.
    let dir = tempfile::tempdir().unwrap();
    let ones = vec!["1"; 5000].join(" + ");
    let started = std::time::Instant::now();
    let error = query(dir.path(), &format!("SELECT {ones} AS x"))
        .await
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(matches!(error, QueryError::TooComplex { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("nesting is 5000"), "{message}");
    assert!(message.contains("limit is 256"), "{message}");
    assert!(message.contains("IN (…)"), "{message}");

    let ors: Vec<String> = (0..2000).map(|i| format!("value = {i}")).collect();
    let sql = format!(
        "EXPLAIN SELECT count(*) FROM generate_series(1, 10) WHERE {}",
        ors.join(" OR ")
    );
    let error = query(dir.path(), &sql).await.unwrap_err();
    assert!(matches!(error, QueryError::TooComplex { .. }), "{error}");

    // The same test as one list is a single shallow expression.
    let list: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    let sql = format!(
        "SELECT count(*) AS n FROM generate_series(1, 10) WHERE value IN ({})",
        list.join(", ")
    );
    let batches = query(dir.path(), &sql).await.unwrap();
    assert_eq!(batches[0].num_rows(), 1);

    let items = vec!["1"; 20_001].join(", ");
    let error = query(dir.path(), &format!("SELECT 1 WHERE 1 IN ({items})"))
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("the number of expressions is 200"),
        "{message}"
    );
    assert!(message.contains("the limit is 20000"), "{message}");
    assert!(message.contains("split the question"), "{message}");
    assert!(!message.contains("IN (…)"), "{message}");
}

#[tokio::test]
async fn a_table_cuts_long_texts_and_csv_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT repeat('x', 3000000) AS s, 'short' AS t";
    let batches = query(dir.path(), sql).await.unwrap();
    let started = std::time::Instant::now();
    let table = format_batches(&batches, OutputFormat::Table).unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let cell = format!(
        "{}… (2998976 more bytes; --format csv or json shows all)",
        "x".repeat(1024)
    );
    assert!(table.contains(&cell), "{}", &table[..200.min(table.len())]);
    assert!(table.contains("short"));
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert!(csv.contains(&"x".repeat(3_000_000)));
}

#[tokio::test]
async fn a_table_shows_control_characters_escaped() {
    // Text from any caller reaches the store (an action, a resource); a terminal must not act
    // on it when an auditor prints a table.
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT concat('GET', chr(27), '[31m') AS action, \
               concat('/y', chr(10), '| forged | row |', chr(13), chr(7)) AS resource";
    let batches = query(dir.path(), sql).await.unwrap();
    let table = format_batches(&batches, OutputFormat::Table).unwrap();
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "{table:?}"
    );
    assert_eq!(table.lines().count(), 5, "one row, no forged line: {table}");
    assert!(table.contains("GET\\u001b[31m"), "{table}");
    assert!(table.contains("/y\\n| forged | row |\\r\\u0007"), "{table}");
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert!(csv.contains('\u{1b}'), "CSV keeps the value whole");
    // Unless it goes to a terminal, which would act on it.
    let shown = format_batches_for_terminal(&batches, OutputFormat::Csv).unwrap();
    assert!(
        !shown.chars().any(|c| c.is_control() && c != '\n'),
        "{shown:?}"
    );
    assert_eq!(
        shown,
        "action,resource\nGET\\u001b[31m,/y\\n| forged | row |\\r\\u0007\n"
    );
}

#[tokio::test]
async fn a_table_tells_apart_texts_that_would_look_alike() {
    // A NUL and the text `\u0000`; a byte order mark, a zero-width space or a soft hyphen in
    // front of a name; a right-to-left override that shows `ipa/sredro` as `orders/api`.
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT concat('orders', chr(0)) AS a, 'orders\\u0000' AS b, \
               concat(chr(65279), 'orders') AS c, concat(chr(8203), 'orders', chr(173)) AS d, \
               concat(chr(8238), 'ipa/sredro') AS e";
    let batches = query(dir.path(), sql).await.unwrap();
    let table = format_batches(&batches, OutputFormat::Table).unwrap();
    let row = table.lines().nth(3).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(
        cells,
        [
            "",
            "orders\\u0000",
            "orders\\\\u0000",
            "\\ufefforders",
            "\\u200borders\\u00ad",
            "\\u202eipa/sredro",
            ""
        ],
        "{table}"
    );
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert!(
        csv.contains("\u{202e}ipa/sredro"),
        "CSV keeps the value whole"
    );
}

#[tokio::test]
async fn an_aggregation_past_its_memory_spills_and_past_its_spill_limit_stops() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QueryLimits {
        memory_bytes: 2 << 20,
        ..QueryLimits::default()
    };
    let sql = "SELECT count(DISTINCT x) FROM \
               (SELECT value % 100000000 AS x FROM generate_series(1, 2000000))";
    let error = query_with_limits(dir.path(), sql, limits)
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, QueryError::MemoryLimit { .. })
            && message.contains("spilled to temporary files, up to their limit of 8 MiB")
            && !message.contains("datafusion."),
        "{message}"
    );
}

#[tokio::test]
async fn results_are_cut_after_the_row_cap_and_refused_past_the_byte_cap() {
    let dir = tempfile::tempdir().unwrap();
    let limits = QueryLimits {
        max_rows: Some(100),
        ..QueryLimits::default()
    };
    let sql = "SELECT value FROM generate_series(1, 1000000)";
    let batches = query_with_limits(dir.path(), sql, limits).await.unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 101, "one more than the cap, so the caller can tell");
    // An explanation under the same cap: the plan, not an error about where a limit went.
    for explain in ["EXPLAIN", "EXPLAIN ANALYZE"] {
        let sql = format!("{explain} SELECT count(*) FROM generate_series(1, 1000)");
        let batches = query_with_limits(dir.path(), &sql, limits).await.unwrap();
        let text = format_batches(&batches, OutputFormat::Table).unwrap();
        assert!(text.contains("plan"), "{text}");
    }

    let limits = QueryLimits {
        max_result_bytes: Some(1024 * 1024),
        ..QueryLimits::default()
    };
    let sql = "SELECT repeat('x', 10000) AS s FROM generate_series(1, 2000)";
    let error = query_with_limits(dir.path(), sql, limits)
        .await
        .unwrap_err();
    assert!(
        matches!(error, QueryError::ResultTooLarge { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn json_refuses_a_result_with_two_columns_of_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "SELECT a.n, b.n FROM (VALUES (1)) a(n), (VALUES (2)) b(n)";
    let batches = query(dir.path(), sql).await.unwrap();
    // CSV and the table have a header line, where a repeated name is still readable.
    let csv = format_batches(&batches, OutputFormat::Csv).unwrap();
    assert_eq!(csv, "n,n\n1,2\n");
    let error = format_batches(&batches, OutputFormat::Json).unwrap_err();
    assert!(
        matches!(&error, QueryError::SameColumnName { name } if name == "n"),
        "{error:?}"
    );
    assert!(error.to_string().contains("AS"), "{error}");
    let sql = "SELECT a.n, b.n AS m FROM (VALUES (1)) a(n), (VALUES (2)) b(n)";
    let batches = query(dir.path(), sql).await.unwrap();
    let json = format_batches(&batches, OutputFormat::Json).unwrap();
    assert_eq!(json, "{\"n\":1,\"m\":2}\n");
}
