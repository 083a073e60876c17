//! `portcullis compliance report`: the built-in controls judged against a store, printed as a
//! table, as JSON or as an OSCAL assessment-results document.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use portcullis_audit::compliance::{
    Catalog, ControlResult, EvaluateOptions, Framework, Report, Status, evaluate, history, oscal,
};

use portcullis_audit::query::escape_hidden;

use crate::audit_integrity::check_store_dir;
use crate::config;

/// The exit status when a control fails or could not be judged.
pub const FINDINGS: u8 = 3;

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Judge only this framework's controls, `soc2` or `nist-800-53` (default: both).
    #[arg(long, value_parser = parse_framework)]
    framework: Option<Framework>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// The window of events judged, up to now: `30d`, `12h`.
    #[arg(long, default_value = "30d", value_parser = parse_window, allow_hyphen_values = true)]
    window: chrono::Duration,
    /// Also keep the report in the data directory (`compliance/`), as the server's own
    /// evaluations are: the dashboard shows it at once.
    #[arg(long)]
    keep: bool,
    /// The audit data directory (default: the configuration's, else `portcullis-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the data directory and the query limits (time and memory) from this
    /// configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    /// A summary per framework, then each failing control with its rows and remediation.
    Table,
    /// The report as one JSON object.
    Json,
    /// An OSCAL assessment-results document (JSON).
    Oscal,
}

fn parse_framework(text: &str) -> Result<Framework, String> {
    text.parse()
}

/// `30d`, `12h` or `45m`, more than zero and at most ten years.
pub fn parse_window(text: &str) -> Result<chrono::Duration, String> {
    let bad =
        || format!("`{text}` is not a window; write a number and a unit: `30d`, `12h`, `45m`");
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    let number = chars.as_str();
    // `+5d` and `-1d` parse as numbers, but are no window.
    if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(bad());
    }
    let number: i64 = number.parse().map_err(|_| bad())?;
    let window = match unit {
        'd' => chrono::Duration::try_days(number),
        'h' => chrono::Duration::try_hours(number),
        'm' => chrono::Duration::try_minutes(number),
        _ => None,
    }
    .ok_or_else(bad)?;
    if window <= chrono::Duration::zero() || window > chrono::Duration::days(3653) {
        return Err(format!(
            "the window `{text}` must be longer than zero and at most 3653d"
        ));
    }
    Ok(window)
}

/// Runs the report; `Ok(true)` when every control passed or is not applicable.
pub fn report(args: &ReportArgs) -> Result<bool> {
    let config = args
        .config
        .as_ref()
        .map(|path| config::Config::load(path))
        .transpose()?;
    let data_dir = match (&args.data_dir, &config) {
        (Some(dir), _) => dir.clone(),
        (None, Some(config)) => config.data_dir(None),
        (None, None) => PathBuf::from(config::DEFAULT_DATA_DIR),
    };
    check_store_dir(&data_dir)?;
    let mut options = EvaluateOptions {
        window: args.window,
        frameworks: args.framework.into_iter().collect(),
        ..EvaluateOptions::default()
    };
    if let Some(config) = &config {
        let limits = config.audit.query_limits();
        options.limits.memory_bytes = limits.memory_bytes;
        options.limits.timeout = limits.timeout;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(evaluate(&data_dir, Catalog::builtin(), &options))
        .with_context(|| format!("cannot evaluate the controls on `{}`", data_dir.display()))?;
    if args.keep {
        history::append(&data_dir, &report)
            .with_context(|| format!("cannot keep the report in `{}`", data_dir.display()))?;
    }
    let text = match args.format {
        ReportFormat::Table => table(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)? + "\n",
        ReportFormat::Oscal => {
            let frameworks: Vec<Framework> = args.framework.into_iter().collect();
            serde_json::to_string_pretty(&oscal::assessment_results(&report, &frameworks))? + "\n"
        }
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(report
        .results
        .iter()
        .all(|result| matches!(result.status, Status::Pass | Status::NotApplicable)))
}

/// The failing rows a table shows of each control; JSON has them all (up to 100).
const TABLE_ROWS: usize = 10;

fn table(report: &Report) -> String {
    let mut text = format!(
        "Compliance of the events from {} to {} (evaluated {})\nAudit chain: {}\n",
        report.window_start.format("%Y-%m-%d %H:%M UTC"),
        report.window_end.format("%Y-%m-%d %H:%M UTC"),
        report.evaluated_at.format("%Y-%m-%d %H:%M:%S UTC"),
        printable(&report.integrity.summary),
    );
    for framework in report.frameworks() {
        let tally = report.tally(framework);
        text.push_str(&format!(
            "\n{}: {} pass, {} fail, {} not applicable, {} error\n",
            framework.title(),
            tally.pass,
            tally.fail,
            tally.not_applicable,
            tally.error
        ));
        text.push_str(&format!(
            "  {:<8} {:<15} {:>8} {:>8}  {}\n",
            "CONTROL", "STATUS", "EVIDENCE", "FAILING", "TITLE"
        ));
        for result in report.results.iter().filter(|r| r.framework == framework) {
            text.push_str(&format!(
                "  {:<8} {:<15} {:>8} {:>8}  {}\n",
                result.id,
                result.status.as_str(),
                result.evidence_rows,
                result.failing_rows,
                result.title
            ));
        }
    }
    let findings: Vec<&ControlResult> = report
        .results
        .iter()
        .filter(|r| matches!(r.status, Status::Fail | Status::Error))
        .collect();
    for result in findings {
        text.push_str(&format!(
            "\n{} {} {} ({}, {}): {}\n",
            result.framework.title(),
            result.id,
            result.title,
            result.status.as_str(),
            result.severity.as_str(),
            printable(&result.reason)
        ));
        if !result.failing.is_empty() {
            text.push_str(&format!("  {}\n", result.columns.join(" | ")));
            for row in result.failing.iter().take(TABLE_ROWS) {
                let cells: Vec<String> = row.iter().map(|cell| printable(cell)).collect();
                text.push_str(&format!("  {}\n", cells.join(" | ")));
            }
            let more = result.failing_rows.saturating_sub(TABLE_ROWS as u64);
            if more > 0 {
                text.push_str(&format!(
                    "  … and {more} more (`--format json` lists up to 100)\n"
                ));
            }
        }
        text.push_str(&format!("  remediation: {}\n", result.remediation));
    }
    text
}

/// Events carry text from any caller: a terminal must not act on its control characters, nor
/// show text reordered by bidirectional overrides (`gnp\u{202e}.exe` as `exe.png`) or made to
/// look like other text by invisible characters. Escaped as `audit query`'s table escapes them.
fn printable(text: &str) -> String {
    escape_hidden(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_a_number_and_a_unit() {
        assert_eq!(parse_window("30d"), Ok(chrono::Duration::days(30)));
        assert_eq!(parse_window("12h"), Ok(chrono::Duration::hours(12)));
        assert_eq!(parse_window("45m"), Ok(chrono::Duration::minutes(45)));
        for bad in ["", "d", "30", "30w", "-1d", "+5d", "1.5d", "30é", "é"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_window("0d").unwrap_err(),
            "the window `0d` must be longer than zero and at most 3653d"
        );
        assert!(parse_window("99999999999999d").is_err());
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("a\u{1b}[31mb\n"), "a\\u001b[31mb\\n");
        assert_eq!(printable("gnp\u{202e}.exe"), "gnp\\u202e.exe");
        // The text `\u202e` is not the character.
        assert_eq!(printable("gnp\\u202e.exe"), "gnp\\\\u202e.exe");
    }
}
