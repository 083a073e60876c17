//! The dashboard's pages over the history store: each page's server time, from the request
//! entering the router to the last byte of its body, with no network between.
//!
//! In: the store, the runs per page. Out: per page its median and 99th-percentile time and
//! the size of its HTML.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use portcullis_audit::query::{QueryLimits, query_with_limits};
use portcullis_dashboard::{Dashboard, router};
use tower_service::Service as _;

use crate::query::rows_of;

/// One page's times.
#[derive(Debug, Clone)]
pub struct PageLine {
    pub path: String,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub bytes: usize,
}

/// The pages timed: the overview and the inventory over the whole history, the access log's
/// newest page, a page from the middle of the log, a filtered page, and one event.
pub fn pages(data_dir: &Path, days: u32) -> Result<Vec<String>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let sql = "SELECT max(seq) AS high, \
               (SELECT workload FROM access_events WHERE decision = 'deny' \
                  AND workload IS NOT NULL LIMIT 1) AS denied \
               FROM access_events";
    let batches = runtime.block_on(query_with_limits(data_dir, sql, QueryLimits::default()))?;
    let rows = rows_of(&batches)?;
    let Some(row) = rows.first() else {
        bail!("the store holds no event");
    };
    let high = row.first().and_then(serde_json::Value::as_u64).unwrap_or(1);
    let denied = row
        .get(1)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let middle = (high / 2).max(1);
    // The history ends some days before today; the window covers it whole.
    let window = format!("{}d", days + 40);
    Ok(vec![
        format!("/?window={window}"),
        "/events".to_owned(),
        format!("/events?before={middle}"),
        format!("/events?decision=deny&workload={denied}"),
        format!("/events/{middle}"),
        format!("/inventory?window={window}"),
        "/controls".to_owned(),
        "/controls/nist-800-53/AC-6".to_owned(),
    ])
}

/// One compliance evaluation of every built-in control, as the server runs it on its schedule.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub seconds: f64,
    pub controls: usize,
    pub window_days: i64,
    pub errors: usize,
}

/// Evaluates every control over a window that covers the whole history, and keeps the report
/// where the dashboard reads it.
pub fn evaluate_compliance(data_dir: &Path) -> Result<Evaluation> {
    use portcullis_audit::compliance::{self, Catalog, EvaluateOptions, Status};
    let runtime = tokio::runtime::Runtime::new()?;
    let window_days = 400;
    let options = EvaluateOptions {
        window: chrono::Duration::days(window_days),
        ..EvaluateOptions::default()
    };
    eprintln!("[pages] evaluating compliance");
    let started = Instant::now();
    let report = runtime.block_on(compliance::evaluate(data_dir, Catalog::builtin(), &options))?;
    let seconds = started.elapsed().as_secs_f64();
    let errors: Vec<_> = report
        .results
        .iter()
        .filter(|result| result.status == Status::Error)
        .map(|result| format!("{} {}: {}", result.framework, result.id, result.reason))
        .collect();
    for error in &errors {
        eprintln!("[pages] {error}");
    }
    compliance::history::append(data_dir, &report)?;
    Ok(Evaluation {
        seconds,
        controls: report.results.len(),
        window_days,
        errors: errors.len(),
    })
}

/// The evaluation's line.
pub fn report_evaluation(evaluation: &Evaluation) {
    println!(
        "## Compliance evaluation
"
    );
    println!(
        "Every built-in control ({}) over a {}-day window, the integrity check included: {:.1} s \
         ({} could not be judged).\n",
        evaluation.controls, evaluation.window_days, evaluation.seconds, evaluation.errors
    );
}

/// Times each of `paths`, `warmup` untimed runs and then `runs` timed ones.
pub fn time_pages(
    data_dir: &Path,
    paths: &[String],
    warmup: usize,
    runs: usize,
) -> Result<Vec<PageLine>> {
    let runtime = tokio::runtime::Runtime::new()?;
    let dashboard = Dashboard::new(data_dir.to_path_buf(), QueryLimits::default());
    let app = router(dashboard);
    let mut lines = Vec::new();
    for path in paths {
        eprintln!("[pages] {path}");
        let mut times = Vec::with_capacity(runs);
        let mut bytes = 0;
        for run in 0..warmup + runs {
            let started = Instant::now();
            bytes = runtime.block_on(get(app.clone(), path))?;
            if run >= warmup {
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        lines.push(PageLine {
            path: path.clone(),
            median_ms: percentile(&times, 0.5),
            p99_ms: percentile(&times, 0.99),
            bytes,
        });
    }
    Ok(lines)
}

/// `GET path` of the router; the size of the page.
async fn get(mut app: axum::Router, path: &str) -> Result<usize> {
    let request = Request::get(path).body(Body::empty())?;
    std::future::poll_fn(|cx| {
        <axum::Router as tower_service::Service<Request<Body>>>::poll_ready(&mut app, cx)
    })
    .await?;
    let response = app.call(request).await?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("cannot read the page")?
        .to_bytes();
    if !status.is_success() {
        bail!(
            "`{path}` answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body.len())
}

/// The value at `share` of sorted `times` (nearest rank).
fn percentile(times: &[f64], share: f64) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    let rank = (share * times.len() as f64).ceil() as usize;
    times[rank.clamp(1, times.len()) - 1]
}

/// The markdown table of `lines`.
pub fn report(lines: &[PageLine], runs: usize) {
    println!("## Dashboard pages\n");
    println!("Server time of each page, {runs} runs after a warm-up, in process (no network).\n");
    println!("| page | median ms | p99 ms | HTML bytes |");
    println!("| --- | ---: | ---: | ---: |");
    for line in lines {
        println!(
            "| `{}` | {:.1} | {:.1} | {} |",
            line.path, line.median_ms, line.p99_ms, line.bytes
        );
    }
    println!();
}
