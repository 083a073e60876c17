//! The server's side of the dashboard: the compliance evaluation that feeds its posture,
//! controls and history, run at start and then on a schedule.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use portcullis_audit::compliance::{
    Catalog, EvaluateOptions, Framework, Report, evaluate, history,
};

/// Evaluates every control at start and then every `every`, keeping each report as the newest
/// and in the compliance history; a failed evaluation is logged and the next one runs on
/// schedule. `memory_bytes` is the `[audit]` query memory limit, for each evidence query.
pub async fn evaluate_compliance(data_dir: PathBuf, every: Duration, memory_bytes: usize) {
    let mut ticks = tokio::time::interval(every);
    // A slow evaluation delays the next one rather than bunching them up.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        evaluate_once(&data_dir, memory_bytes).await;
    }
}

async fn evaluate_once(data_dir: &std::path::Path, memory_bytes: usize) {
    let started = Instant::now();
    let mut options = EvaluateOptions::default();
    options.limits.memory_bytes = memory_bytes;
    let report = match evaluate(data_dir, Catalog::builtin(), &options).await {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(%error, "compliance_evaluation_failed");
            return;
        }
    };
    let summary = Outcome::of(&report);
    let kept = {
        let data_dir = data_dir.to_owned();
        tokio::task::spawn_blocking(move || history::append(&data_dir, &report)).await
    };
    let failed = match kept {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(error.to_string()),
        Err(error) => Some(error.to_string()),
    };
    if let Some(error) = failed {
        tracing::error!(%error, "compliance_report_not_kept");
        return;
    }
    tracing::info!(
        soc2_pass = summary.soc2.0,
        soc2_fail = summary.soc2.1,
        nist_pass = summary.nist.0,
        nist_fail = summary.nist.1,
        errors = summary.errors,
        integrity_ok = summary.integrity_ok,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "compliance_evaluated"
    );
}

/// What the log says of a report.
struct Outcome {
    soc2: (u64, u64),
    nist: (u64, u64),
    errors: u64,
    integrity_ok: bool,
}

impl Outcome {
    fn of(report: &Report) -> Outcome {
        let soc2 = report.tally(Framework::Soc2);
        let nist = report.tally(Framework::Nist80053);
        Outcome {
            soc2: (soc2.pass, soc2.fail),
            nist: (nist.pass, nist.fail),
            errors: soc2.error + nist.error,
            integrity_ok: report.integrity.ok,
        }
    }
}
