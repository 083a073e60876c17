//! Compliance results over time, in the data directory:
//!
//! - `DATA/compliance/latest.json`: the newest report whole (failing rows included), replaced
//!   atomically (written aside, synced, renamed);
//! - `DATA/compliance/history.jsonl`: one line per evaluation with its statuses only, appended
//!   and synced; past [`MAX_HISTORY_LINES`] lines it is rewritten with the newest
//!   [`KEEP_HISTORY_LINES`].
//!
//! The server writes both after each evaluation; the dashboard and `portcullis compliance`
//! read them. A torn last line (a crash during an append) is left out when reading, and
//! logged; a damaged line before it is an error that names the line.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ComplianceError, Framework, Report, Status, Tally};

/// The directory of the results, in the data directory.
pub const COMPLIANCE_DIR: &str = "compliance";
const LATEST_FILE: &str = "latest.json";
const HISTORY_FILE: &str = "history.jsonl";

/// Lines the history holds before it is cut back; with an evaluation an hour, over a year.
pub const MAX_HISTORY_LINES: usize = 10_000;
/// Lines kept when the history is cut back.
pub const KEEP_HISTORY_LINES: usize = 8_760;

/// The largest `latest.json` read, in bytes (a report keeps at most 100 failing rows of
/// 512-byte cells per control).
const MAX_LATEST_BYTES: u64 = 256 * 1024 * 1024;

/// One evaluation in the history: when, over what window, and each control's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub evaluated_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub integrity_ok: bool,
    pub statuses: Vec<ControlStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    pub framework: Framework,
    pub id: String,
    pub status: Status,
    pub failing_rows: u64,
}

impl Summary {
    pub fn of(report: &Report) -> Summary {
        Summary {
            id: report.id.clone(),
            evaluated_at: report.evaluated_at,
            window_start: report.window_start,
            window_end: report.window_end,
            integrity_ok: report.integrity.ok,
            statuses: report
                .results
                .iter()
                .map(|result| ControlStatus {
                    framework: result.framework,
                    id: result.id.clone(),
                    status: result.status,
                    failing_rows: result.failing_rows,
                })
                .collect(),
        }
    }

    pub fn tally(&self, framework: Framework) -> Tally {
        let mut tally = Tally::default();
        for status in self.statuses.iter().filter(|s| s.framework == framework) {
            tally.add(status.status);
        }
        tally
    }

    /// The status of one control in this evaluation, if it was judged.
    pub fn status_of(&self, framework: Framework, id: &str) -> Option<Status> {
        self.statuses
            .iter()
            .find(|s| s.framework == framework && s.id == id)
            .map(|s| s.status)
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ComplianceError {
    let path = path.to_owned();
    move |source| ComplianceError::Io {
        action,
        path,
        source,
    }
}

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(COMPLIANCE_DIR)
}

/// Keeps `report` as the newest and adds it to the history.
pub fn append(data_dir: &Path, report: &Report) -> Result<(), ComplianceError> {
    let dir = dir(data_dir);
    fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let whole =
        serde_json::to_vec(report).map_err(|error| ComplianceError::Encode(error.to_string()))?;
    replace_file(&dir.join(LATEST_FILE), &whole)?;
    let mut line = serde_json::to_vec(&Summary::of(report))
        .map_err(|error| ComplianceError::Encode(error.to_string()))?;
    line.push(b'\n');
    let path = dir.join(HISTORY_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io("open", &path))?;
    drop_torn_line(&path, &file)?;
    file.write_all(&line).map_err(io("append to", &path))?;
    file.sync_data().map_err(io("sync", &path))?;
    drop(file);
    cut_back(&path)
}

/// Cuts an append that a crash left without its line end, so that the next line starts on a
/// line of its own.
fn drop_torn_line(path: &Path, file: &File) -> Result<(), ComplianceError> {
    let text = fs::read(path).map_err(io("read", path))?;
    if text.is_empty() || text.ends_with(b"\n") {
        return Ok(());
    }
    let keep = text
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |at| at + 1);
    tracing::warn!(
        path = %path.display(),
        bytes = text.len() - keep,
        "compliance_history_torn_line_dropped"
    );
    file.set_len(keep as u64).map_err(io("truncate", path))
}

/// Rewrites the history with its newest lines once it has grown past its bound.
fn cut_back(path: &Path) -> Result<(), ComplianceError> {
    let text = fs::read_to_string(path).map_err(io("read", path))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= MAX_HISTORY_LINES {
        return Ok(());
    }
    let mut kept = lines[lines.len() - KEEP_HISTORY_LINES..].join("\n");
    kept.push('\n');
    replace_file(path, kept.as_bytes())
}

/// Writes `bytes` aside, syncs them, and renames them over `path`.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ComplianceError> {
    let aside = path.with_extension("tmp");
    let mut file = File::create(&aside).map_err(io("create", &aside))?;
    file.write_all(bytes).map_err(io("write", &aside))?;
    file.sync_all().map_err(io("sync", &aside))?;
    drop(file);
    fs::rename(&aside, path).map_err(io("rename into", path))?;
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io("sync", parent))?;
    }
    Ok(())
}

/// serde's message without its own "at line 1 column 8", which counts within one line of the
/// history rather than in the file; the column is kept.
fn without_position(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    format!("{message} (at column {})", error.column())
}

/// The newest report, if any evaluation was kept.
pub fn latest(data_dir: &Path) -> Result<Option<Report>, ComplianceError> {
    let path = dir(data_dir).join(LATEST_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io("open", &path)(error)),
    };
    let size = file.metadata().map_err(io("read", &path))?.len();
    if size > MAX_LATEST_BYTES {
        return Err(ComplianceError::Damaged {
            path,
            line: 1,
            message: format!("it is {size} bytes, more than a report can be"),
        });
    }
    let report = serde_json::from_reader(std::io::BufReader::new(file)).map_err(|error| {
        ComplianceError::Damaged {
            path: path.clone(),
            line: error.line(),
            message: error.to_string(),
        }
    })?;
    Ok(Some(report))
}

/// The newest `limit` evaluations of the history, newest first.
pub fn list(data_dir: &Path, limit: usize) -> Result<Vec<Summary>, ComplianceError> {
    let path = dir(data_dir).join(HISTORY_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io("read", &path)(error)),
    };
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let last = lines.len();
    let mut summaries = Vec::new();
    for (index, line) in lines.iter().enumerate().rev() {
        if summaries.len() == limit {
            break;
        }
        match serde_json::from_str::<Summary>(line) {
            Ok(summary) => summaries.push(summary),
            // An append that a crash cut short: it never finished, so it never counted.
            Err(_) if index + 1 == last && !text.ends_with('\n') => {
                tracing::warn!(
                    path = %path.display(),
                    line = index + 1,
                    "compliance_history_torn_line_left_out"
                );
            }
            Err(error) => {
                return Err(ComplianceError::Damaged {
                    path,
                    line: index + 1,
                    message: without_position(&error),
                });
            }
        }
    }
    Ok(summaries)
}
