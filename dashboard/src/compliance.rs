//! Stand-in for `portcullis_audit::compliance` until it lands on main: the same names and
//! shapes, with a history that holds no report. Replaced by a re-export at the merge.

#![allow(dead_code, reason = "a stand-in: only what the pages read is used")]

use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framework {
    Soc2,
    Nist80053,
}

impl Framework {
    pub const ALL: [Framework; 2] = [Framework::Soc2, Framework::Nist80053];

    pub fn as_str(self) -> &'static str {
        match self {
            Framework::Soc2 => "soc2",
            Framework::Nist80053 => "nist-800-53",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Framework::Soc2 => "SOC 2",
            Framework::Nist80053 => "NIST SP 800-53 Rev. 5",
        }
    }
}

impl std::str::FromStr for Framework {
    type Err = String;

    fn from_str(text: &str) -> Result<Framework, String> {
        Framework::ALL
            .into_iter()
            .find(|framework| framework.as_str() == text)
            .ok_or_else(|| format!("unknown framework `{text}`"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    NotApplicable,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "not_applicable",
            Status::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Debug)]
pub struct ControlResult {
    pub framework: Framework,
    pub id: String,
    pub title: String,
    pub requirement: String,
    pub passes_when: String,
    pub status: Status,
    pub reason: String,
    pub evidence_rows: u64,
    pub failing_rows: u64,
    pub columns: Vec<String>,
    pub failing: Vec<Vec<String>>,
    pub severity: Severity,
    pub remediation: String,
    pub evidence_sql: String,
}

#[derive(Clone, Debug)]
pub struct Integrity {
    pub ok: bool,
    pub summary: String,
    pub segments: u64,
    pub events: u64,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub id: String,
    pub evaluated_at: DateTime<Utc>,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub integrity: Integrity,
    pub results: Vec<ControlResult>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub pass: u64,
    pub fail: u64,
    pub not_applicable: u64,
    pub error: u64,
}

impl Report {
    pub fn tally(&self, framework: Framework) -> Tally {
        let mut tally = Tally::default();
        for result in self.results.iter().filter(|r| r.framework == framework) {
            match result.status {
                Status::Pass => tally.pass += 1,
                Status::Fail => tally.fail += 1,
                Status::NotApplicable => tally.not_applicable += 1,
                Status::Error => tally.error += 1,
            }
        }
        tally
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComplianceError(String);

pub mod history {
    use std::path::Path;

    use super::{ComplianceError, Report};

    pub fn latest(_data_dir: &Path) -> Result<Option<Report>, ComplianceError> {
        Ok(None)
    }

    pub fn list(_data_dir: &Path, _limit: usize) -> Result<Vec<Report>, ComplianceError> {
        Ok(Vec::new())
    }
}
