//! Compliance controls as data, judged by SQL over the access log and the policy state.
//!
//! A control is an entry of a catalog file (`audit/controls/*.toml`, built in): its framework
//! and identifier, what it requires, one evidence query and what makes it pass. Evaluating a
//! control runs its query with [`crate::query`] over `access_events`, the policy-state tables
//! and `audit_integrity` (the outcome of [`crate::verify`] for this evaluation, one row). Each
//! row of the answer is one piece of evidence with a boolean `ok`:
//!
//! - no row: **not applicable** — there is nothing to judge, and the catalog says why;
//! - a row whose `ok` is false or null: **fail**, and those rows are the findings;
//! - otherwise: **pass**.
//!
//! A query that cannot run is an **error**, never a pass. Results are kept by [`history`] and
//! exported as OSCAL assessment results by [`oscal`].

pub mod history;
pub mod oscal;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{
    Array, AsArray, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::query::{QueryError, QueryLimits, query_with_tables};
use crate::verify;

/// The built-in catalog files, in the order their controls are listed.
const BUILTIN_FILES: [(&str, &str); 2] = [
    ("controls/soc2.toml", include_str!("../controls/soc2.toml")),
    (
        "controls/nist-800-53.toml",
        include_str!("../controls/nist-800-53.toml"),
    ),
];

/// The table of this evaluation's integrity check, beside the store's own tables.
pub const INTEGRITY_TABLE: &str = "audit_integrity";

/// The failing rows a result keeps; `failing_rows` counts them all.
pub const MAX_FAILING_ROWS: usize = 100;

/// A text of a failing row kept at most, in bytes; longer ones are cut there.
const MAX_CELL_BYTES: usize = 512;

/// A framework whose controls are built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Framework {
    #[serde(rename = "soc2")]
    Soc2,
    #[serde(rename = "nist-800-53")]
    Nist80053,
}

impl Framework {
    pub const ALL: [Framework; 2] = [Framework::Soc2, Framework::Nist80053];

    /// The name in catalogs, on the command line and in JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Framework::Soc2 => "soc2",
            Framework::Nist80053 => "nist-800-53",
        }
    }

    /// The name for people.
    pub const fn title(self) -> &'static str {
        match self {
            Framework::Soc2 => "SOC 2",
            Framework::Nist80053 => "NIST SP 800-53 Rev. 5",
        }
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Framework {
    type Err = String;

    fn from_str(text: &str) -> Result<Framework, String> {
        Framework::ALL
            .into_iter()
            .find(|framework| framework.as_str() == text)
            .ok_or_else(|| {
                format!("unknown framework `{text}`; the frameworks are soc2 and nist-800-53")
            })
    }
}

/// What a control's evaluation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    NotApplicable,
    Error,
}

impl Status {
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "not_applicable",
            Status::Error => "error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much a failure of the control matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One control of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub framework: Framework,
    /// As the framework writes it: `CC6.1`, `AC-2`.
    pub id: String,
    pub title: String,
    /// What the control requires, in a sentence.
    pub requirement: String,
    /// What makes it pass, in terms of the evidence.
    pub passes_when: String,
    /// When there is nothing to judge.
    pub not_applicable_when: String,
    pub severity: Severity,
    pub remediation: String,
    /// The evidence query, with `${since}` and `${until}` for the window's bounds.
    pub evidence: String,
}

/// Why a catalog file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("`{file}`: {message}")]
    Parse { file: String, message: String },
    #[error("`{file}`, control `{id}`: {message}")]
    Control {
        file: String,
        id: String,
        message: String,
    },
}

/// The controls known to an evaluation.
#[derive(Debug, Clone)]
pub struct Catalog {
    controls: Vec<Control>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    framework: String,
    #[serde(default)]
    control: Vec<ControlEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlEntry {
    id: String,
    title: String,
    requirement: String,
    passes_when: String,
    not_applicable_when: String,
    severity: Severity,
    remediation: String,
    evidence: Option<String>,
    /// `FRAMEWORK:ID` of a control whose evidence this one shares.
    evidence_of: Option<String>,
}

impl Catalog {
    /// The catalog built into this build: SOC 2 and NIST SP 800-53 Rev. 5.
    pub fn builtin() -> &'static Catalog {
        static BUILTIN: LazyLock<Catalog> = LazyLock::new(|| {
            #[expect(
                clippy::expect_used,
                reason = "the built-in files are fixed at build time, and a test loads them"
            )]
            Catalog::parse(&BUILTIN_FILES).expect("the built-in control catalog loads")
        });
        &BUILTIN
    }

    /// Reads catalog files, each `(name, text)`; the name is used in errors only.
    pub fn parse(files: &[(&str, &str)]) -> Result<Catalog, CatalogError> {
        let mut controls = Vec::new();
        // Controls that name another's evidence, resolved once every file is read.
        let mut borrowed: Vec<(String, usize, String)> = Vec::new();
        let mut seen = HashSet::new();
        for (file, text) in files {
            let parsed: CatalogFile =
                toml::from_str(text).map_err(|error| CatalogError::Parse {
                    file: (*file).to_owned(),
                    message: error.to_string().trim_end().to_owned(),
                })?;
            let framework: Framework =
                parsed
                    .framework
                    .parse()
                    .map_err(|message| CatalogError::Parse {
                        file: (*file).to_owned(),
                        message,
                    })?;
            for entry in parsed.control {
                let refuse = |message: String| CatalogError::Control {
                    file: (*file).to_owned(),
                    id: entry.id.clone(),
                    message,
                };
                check_texts(&entry).map_err(refuse)?;
                if !seen.insert((framework, entry.id.clone())) {
                    return Err(refuse(format!(
                        "`{}` is defined twice in {}",
                        entry.id,
                        framework.title()
                    )));
                }
                let evidence = match (&entry.evidence, &entry.evidence_of) {
                    (Some(sql), None) => {
                        check_evidence(sql).map_err(refuse)?;
                        sql.trim().to_owned()
                    }
                    (None, Some(other)) => {
                        borrowed.push(((*file).to_owned(), controls.len(), other.clone()));
                        String::new()
                    }
                    _ => {
                        return Err(refuse(
                            "give exactly one of `evidence` (a query) and `evidence_of` (another \
                             control's `FRAMEWORK:ID`)"
                                .to_owned(),
                        ));
                    }
                };
                controls.push(Control {
                    framework,
                    id: entry.id,
                    title: entry.title,
                    requirement: entry.requirement,
                    passes_when: entry.passes_when,
                    not_applicable_when: entry.not_applicable_when,
                    severity: entry.severity,
                    remediation: entry.remediation,
                    evidence,
                });
            }
        }
        for (file, index, other) in borrowed {
            let refuse = |message: String| CatalogError::Control {
                file: file.clone(),
                id: controls[index].id.clone(),
                message,
            };
            let (framework, id) = other.split_once(':').ok_or_else(|| {
                refuse(format!(
                    "`evidence_of = \"{other}\"` must be `FRAMEWORK:ID`, as `soc2:CC6.3`"
                ))
            })?;
            let framework: Framework = framework.parse().map_err(refuse)?;
            let source = controls
                .iter()
                .find(|control| control.framework == framework && control.id == id);
            match source {
                Some(source) if !source.evidence.is_empty() => {
                    controls[index].evidence = source.evidence.clone();
                }
                Some(_) => {
                    return Err(refuse(format!(
                        "`evidence_of = \"{other}\"` names a control that borrows its evidence \
                         too; name the one with the query"
                    )));
                }
                None => {
                    return Err(refuse(format!(
                        "`evidence_of = \"{other}\"` names no control of the catalog"
                    )));
                }
            }
        }
        Ok(Catalog { controls })
    }

    pub fn controls(&self) -> &[Control] {
        &self.controls
    }

    pub fn get(&self, framework: Framework, id: &str) -> Option<&Control> {
        self.controls
            .iter()
            .find(|control| control.framework == framework && control.id == id)
    }
}

fn check_texts(entry: &ControlEntry) -> Result<(), String> {
    let texts = [
        ("id", &entry.id),
        ("title", &entry.title),
        ("requirement", &entry.requirement),
        ("passes_when", &entry.passes_when),
        ("not_applicable_when", &entry.not_applicable_when),
        ("remediation", &entry.remediation),
    ];
    for (name, text) in texts {
        if text.trim().is_empty() {
            return Err(format!("`{name}` is empty"));
        }
    }
    for (name, text) in &texts[..2] {
        if text.contains('\n') {
            return Err(format!("`{name}` must be one line"));
        }
    }
    let id_ok = entry
        .id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    if !id_ok {
        return Err("`id` may hold letters, digits, `.`, `-` and `_` only".to_owned());
    }
    Ok(())
}

/// The placeholders an evidence query may use.
const PLACEHOLDERS: [&str; 2] = ["${since}", "${until}"];

/// Refuses an evidence query that is not one read-only query, or that uses a placeholder this
/// build does not fill.
fn check_evidence(sql: &str) -> Result<(), String> {
    let mut rest = sql;
    while let Some(start) = rest.find("${") {
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |end| start + end + 1);
        let placeholder = &rest[start..end];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "the evidence query uses `{placeholder}`; the placeholders are `${{since}}` and \
                 `${{until}}`"
            ));
        }
        rest = &rest[end..];
    }
    let now = Utc::now();
    crate::query::check_single_query(&fill(sql, now, now))
        .map_err(|error| format!("the evidence query is refused: {error}"))
}

/// The query with the window's bounds in place of its placeholders.
fn fill(sql: &str, since: DateTime<Utc>, until: DateTime<Utc>) -> String {
    sql.replace("${since}", &timestamp_literal(since))
        .replace("${until}", &timestamp_literal(until))
}

fn timestamp_literal(time: DateTime<Utc>) -> String {
    format!(
        "CAST('{}' AS TIMESTAMP)",
        time.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// What one evaluation covers.
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Events from `as_of - window` up to `as_of` are judged.
    pub window: chrono::Duration,
    pub as_of: DateTime<Utc>,
    /// The frameworks to judge; empty is all.
    pub frameworks: Vec<Framework>,
    /// Limits of each evidence query.
    pub limits: QueryLimits,
}

/// The window when none is given: thirty days.
pub const DEFAULT_WINDOW_DAYS: i64 = 30;

impl Default for EvaluateOptions {
    fn default() -> EvaluateOptions {
        EvaluateOptions {
            window: chrono::Duration::days(DEFAULT_WINDOW_DAYS),
            as_of: Utc::now(),
            frameworks: Vec::new(),
            limits: QueryLimits {
                timeout: Duration::from_secs(120),
                max_result_bytes: Some(256 * 1024 * 1024),
                ..QueryLimits::default()
            },
        }
    }
}

/// The outcome of the store's integrity check, as of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integrity {
    pub ok: bool,
    /// What was confirmed, or the first failure.
    pub summary: String,
    pub segments: u64,
    pub events: u64,
    pub checkpoints: u64,
    /// The cutoff of the newest retention removal: the segments dated before it are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_before: Option<chrono::NaiveDate>,
}

/// One control's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResult {
    pub framework: Framework,
    pub id: String,
    pub title: String,
    pub requirement: String,
    pub passes_when: String,
    pub status: Status,
    /// Why it passed, failed, is not applicable or could not be judged.
    pub reason: String,
    /// Rows the evidence query returned.
    pub evidence_rows: u64,
    /// Of those, the rows that are not ok.
    pub failing_rows: u64,
    /// The evidence's columns but `ok`.
    pub columns: Vec<String>,
    /// The first failing rows (at most [`MAX_FAILING_ROWS`]), as text, in `columns` order; a
    /// null is empty.
    pub failing: Vec<Vec<String>>,
    pub severity: Severity,
    pub remediation: String,
    /// The query as run, with the window's bounds in place.
    pub evidence_sql: String,
}

/// Counts of results by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
    pub not_applicable: u64,
    pub error: u64,
}

impl Tally {
    fn add(&mut self, status: Status) {
        match status {
            Status::Pass => self.pass += 1,
            Status::Fail => self.fail += 1,
            Status::NotApplicable => self.not_applicable += 1,
            Status::Error => self.error += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.pass + self.fail + self.not_applicable + self.error
    }
}

/// The results of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// A UUID of this evaluation.
    pub id: String,
    pub evaluated_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub integrity: Integrity,
    pub results: Vec<ControlResult>,
}

impl Report {
    pub fn tally(&self, framework: Framework) -> Tally {
        let mut tally = Tally::default();
        for result in self.results.iter().filter(|r| r.framework == framework) {
            tally.add(result.status);
        }
        tally
    }

    /// The frameworks with results, in catalog order.
    pub fn frameworks(&self) -> Vec<Framework> {
        Framework::ALL
            .into_iter()
            .filter(|framework| self.results.iter().any(|r| r.framework == *framework))
            .collect()
    }
}

/// Why an evaluation or its history failed as a whole (a control whose query fails is a result
/// with [`Status::Error`], not this).
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    #[error("the evaluation window must be longer than zero")]
    EmptyWindow,
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` line {line} is not a compliance report: {message}")]
    Damaged {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot encode the report: {0}")]
    Encode(String),
    #[error("the integrity check did not finish: {0}")]
    Integrity(String),
}

/// Judges every control of `catalog` in `options.frameworks` against the store in `data_dir`.
pub async fn evaluate(
    data_dir: &Path,
    catalog: &Catalog,
    options: &EvaluateOptions,
) -> Result<Report, ComplianceError> {
    if options.window <= chrono::Duration::zero() {
        return Err(ComplianceError::EmptyWindow);
    }
    let until = options.as_of;
    let since = until - options.window;
    let integrity = check_integrity(data_dir).await?;
    let integrity_table = integrity_batch(&integrity)?;
    let mut results = Vec::new();
    for control in catalog.controls() {
        if !options.frameworks.is_empty() && !options.frameworks.contains(&control.framework) {
            continue;
        }
        let sql = fill(&control.evidence, since, until);
        let extra = vec![(INTEGRITY_TABLE.to_owned(), integrity_table.clone())];
        let answer = query_with_tables(data_dir, &sql, options.limits, extra).await;
        results.push(judge(control, sql, answer));
    }
    Ok(Report {
        id: uuid::Uuid::new_v4().to_string(),
        evaluated_at: Utc::now(),
        window_start: since,
        window_end: until,
        integrity,
        results,
    })
}

/// Runs `portcullis audit verify`'s check on a blocking thread.
async fn check_integrity(data_dir: &Path) -> Result<Integrity, ComplianceError> {
    let data_dir = data_dir.to_owned();
    let checked = tokio::task::spawn_blocking(move || verify::verify(&data_dir, None, &mut |_| {}))
        .await
        .map_err(|error| ComplianceError::Integrity(error.to_string()))?;
    Ok(match checked {
        Ok(report) => Integrity {
            ok: true,
            summary: format!(
                "verified: {} with {}, chained in {} and signed by {} (key {})",
                counted(report.segments, "segment"),
                counted(report.events, "event"),
                counted(report.entries, "manifest entry"),
                counted(report.checkpoints, "checkpoint"),
                report.key_id
            ),
            segments: report.segments,
            events: report.events,
            checkpoints: report.checkpoints,
            removed_before: report.removed.map(|removed| removed.last_before),
        },
        Err(error) => Integrity {
            ok: false,
            summary: error.to_string(),
            segments: 0,
            events: 0,
            checkpoints: 0,
            removed_before: None,
        },
    })
}

/// `1 segment`, `2 segments`, `1 manifest entry`, `3 manifest entries`.
fn counted(count: u64, noun: &str) -> String {
    match (count, noun.strip_suffix('y')) {
        (1, _) => format!("1 {noun}"),
        (_, Some(stem)) => format!("{count} {stem}ies"),
        (_, None) => format!("{count} {noun}s"),
    }
}

fn integrity_batch(integrity: &Integrity) -> Result<RecordBatch, ComplianceError> {
    let schema = Schema::new(vec![
        Field::new("ok", DataType::Boolean, false),
        Field::new("segments", DataType::Int64, false),
        Field::new("events", DataType::Int64, false),
        Field::new("checkpoints", DataType::Int64, false),
        Field::new("failure", DataType::Utf8, true),
        Field::new("removed_before", DataType::Date32, true),
    ]);
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let failure = (!integrity.ok).then(|| integrity.summary.clone());
    let removed_before = integrity
        .removed_before
        .map(arrow::datatypes::Date32Type::from_naive_date);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(BooleanArray::from(vec![integrity.ok])),
            Arc::new(Int64Array::from(vec![count(integrity.segments)])),
            Arc::new(Int64Array::from(vec![count(integrity.events)])),
            Arc::new(Int64Array::from(vec![count(integrity.checkpoints)])),
            Arc::new(StringArray::from(vec![failure])),
            Arc::new(Date32Array::from(vec![removed_before])),
        ],
    )
    .map_err(|error| ComplianceError::Integrity(error.to_string()))
}

/// The result of `control` from its evidence.
fn judge(
    control: &Control,
    sql: String,
    answer: Result<Vec<RecordBatch>, QueryError>,
) -> ControlResult {
    let mut result = ControlResult {
        framework: control.framework,
        id: control.id.clone(),
        title: control.title.clone(),
        requirement: control.requirement.clone(),
        passes_when: control.passes_when.clone(),
        status: Status::Error,
        reason: String::new(),
        evidence_rows: 0,
        failing_rows: 0,
        columns: Vec::new(),
        failing: Vec::new(),
        severity: control.severity,
        remediation: control.remediation.clone(),
        evidence_sql: sql,
    };
    let batches = match answer {
        Ok(batches) => batches,
        Err(error) => {
            result.reason = format!("the evidence query failed: {error}");
            return result;
        }
    };
    match read_evidence(&batches, &mut result) {
        Ok(()) => {}
        Err(problem) => {
            result.reason = problem;
            return result;
        }
    }
    (result.status, result.reason) = if result.evidence_rows == 0 {
        (
            Status::NotApplicable,
            format!("not applicable: {}", control.not_applicable_when),
        )
    } else if result.failing_rows > 0 {
        (
            Status::Fail,
            format!(
                "{} of {} evidence rows fail; it passes when {}",
                result.failing_rows, result.evidence_rows, control.passes_when
            ),
        )
    } else {
        (
            Status::Pass,
            format!(
                "all {} evidence rows hold: {}",
                result.evidence_rows, control.passes_when
            ),
        )
    };
    result
}

/// Counts the evidence and keeps the first failing rows.
fn read_evidence(batches: &[RecordBatch], result: &mut ControlResult) -> Result<(), String> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let schema = first.schema();
    let Ok(ok_index) = schema.index_of("ok") else {
        return Err(
            "the evidence query has no `ok` column, so nothing says which rows pass".into(),
        );
    };
    if schema.field(ok_index).data_type() != &DataType::Boolean {
        return Err(format!(
            "the evidence query's `ok` column is {}, not a boolean",
            schema.field(ok_index).data_type()
        ));
    }
    result.columns = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != ok_index)
        .map(|(_, field)| field.name().clone())
        .collect();
    let options = FormatOptions::default().with_null("");
    for batch in batches {
        let ok = batch.column(ok_index).as_boolean();
        let formatters = batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != ok_index)
            .map(|(_, column)| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("cannot show the evidence: {error}"))?;
        for row in 0..batch.num_rows() {
            result.evidence_rows += 1;
            if ok.is_valid(row) && ok.value(row) {
                continue;
            }
            result.failing_rows += 1;
            if result.failing.len() < MAX_FAILING_ROWS {
                result.failing.push(
                    formatters
                        .iter()
                        .map(|formatter| cut(formatter.value(row).to_string()))
                        .collect(),
                );
            }
        }
    }
    Ok(())
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_CELL_BYTES {
        let mut end = MAX_CELL_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let left = text.len() - end;
        text.truncate(end);
        text.push_str(&format!("… ({left} bytes more)"));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_builtin_catalog_holds_the_controls_the_frameworks_need() {
        let catalog = Catalog::builtin();
        for id in [
            "CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC6.7", "CC7.2", "CC8.1",
        ] {
            assert!(catalog.get(Framework::Soc2, id).is_some(), "{id}");
        }
        for id in [
            "AC-2", "AC-3", "AC-6", "AU-2", "AU-3", "AU-9", "AU-12", "IA-2", "IA-5", "IA-9",
            "SC-8", "CM-3",
        ] {
            assert!(catalog.get(Framework::Nist80053, id).is_some(), "{id}");
        }
        // A borrowed query is the lender's.
        assert_eq!(
            catalog.get(Framework::Nist80053, "AC-6").unwrap().evidence,
            catalog.get(Framework::Soc2, "CC6.3").unwrap().evidence
        );
    }

    const ONE: &str = r#"
framework = "soc2"
[[control]]
id = "X.1"
title = "t"
requirement = "r"
passes_when = "p"
not_applicable_when = "n"
severity = "low"
remediation = "m"
evidence = "SELECT true AS ok"
"#;

    fn refused(text: &str) -> String {
        Catalog::parse(&[("c.toml", text)]).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_catalog_entry_is_refused_with_its_file_control_and_problem() {
        assert!(Catalog::parse(&[("c.toml", ONE)]).is_ok());
        let twice = format!("{ONE}{}", ONE.replace("framework = \"soc2\"", ""));
        assert_eq!(
            refused(&twice),
            "`c.toml`, control `X.1`: `X.1` is defined twice in SOC 2"
        );
        let error = refused(&ONE.replace("SELECT true AS ok", "DELETE FROM access_events"));
        let refused_query = "`c.toml`, control `X.1`: the evidence query is refused: only a \
                             single SELECT query is allowed";
        assert!(error.starts_with(refused_query), "{error}");
        let error = refused(&ONE.replace("SELECT true AS ok", "SELECT ${from} AS ok"));
        assert!(
            error.contains("uses `${from}`; the placeholders are"),
            "{error}"
        );
        let error = refused(&ONE.replace("evidence = ", "evidence_of = \"soc2:X.1\"\nx = "));
        assert!(error.contains("unknown field `x`"), "{error}");
        let error = refused(&ONE.replace(
            "evidence = \"SELECT true AS ok\"",
            "evidence_of = \"soc2:Y\"",
        ));
        assert_eq!(
            error,
            "`c.toml`, control `X.1`: `evidence_of = \"soc2:Y\"` names no control of the catalog"
        );
        let error = refused(&ONE.replace("framework = \"soc2\"", "framework = \"iso\""));
        assert!(error.contains("unknown framework `iso`"), "{error}");
        let error = refused(&ONE.replace("title = \"t\"", "title = \" \""));
        assert_eq!(error, "`c.toml`, control `X.1`: `title` is empty");
        let error = refused(&ONE.replace("severity = \"low\"", "severity = \"dire\""));
        assert!(error.starts_with("`c.toml`: "), "{error}");
    }

    #[test]
    fn a_placeholder_becomes_a_timestamp_literal() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            fill("time >= ${since} AND time < ${until}", at, at),
            "time >= CAST('2026-03-01T10:00:00.500000Z' AS TIMESTAMP) AND time < \
             CAST('2026-03-01T10:00:00.500000Z' AS TIMESTAMP)"
        );
    }
}
