//! A report as an OSCAL assessment-results document (NIST OSCAL 1.1, JSON).
//!
//! One `result` per framework, over the evaluation's window. Each control is one
//! `observation` (how its evidence was gathered and what it counted) and one `finding` whose
//! target is the control's objective (`ac-2_obj`, `cc6.1_obj`): `satisfied` when it passed,
//! `not-satisfied` when it failed. OSCAL has no state for "not applicable" or "could not be
//! judged": such a finding carries no status, and says which it is in its description and in
//! the property `assessment-status` of Portcullis' namespace ([`NAMESPACE`]).
//!
//! Control ids are written as OSCAL catalogs write them: lowercase (`ac-2`, `cc6.1`). Times
//! are whole seconds in UTC. The document's `import-ap` points at a back-matter resource that
//! names the built-in catalog, the plan these results follow.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ControlResult, Framework, Report, Status};

/// The namespace of Portcullis' own OSCAL properties.
pub const NAMESPACE: &str = "https://portcullis.dev/ns/oscal";

/// The OSCAL version the document is written to.
pub const OSCAL_VERSION: &str = "1.1.2";

/// The assessment-results document of `report`, for those of `frameworks` it has results of
/// (all it has when empty).
pub fn assessment_results(report: &Report, frameworks: &[Framework]) -> Value {
    let frameworks: Vec<Framework> = report
        .frameworks()
        .into_iter()
        .filter(|framework| frameworks.is_empty() || frameworks.contains(framework))
        .collect();
    let plan = Uuid::new_v4().to_string();
    let results: Vec<Value> = frameworks
        .iter()
        .map(|framework| framework_result(report, *framework))
        .collect();
    json!({
        "assessment-results": {
            "uuid": Uuid::new_v4().to_string(),
            "metadata": {
                "title": "Portcullis compliance assessment results",
                "last-modified": time(report.evaluated_at),
                "version": report.id,
                "oscal-version": OSCAL_VERSION,
                "props": [prop("evaluation-id", &report.id)],
            },
            "import-ap": {
                "href": format!("#{plan}"),
                "remarks": "The plan is Portcullis' built-in control catalog: each control's \
                            evidence query, run over the access log and the policy state.",
            },
            "results": results,
            "back-matter": {
                "resources": [{
                    "uuid": plan,
                    "title": "Portcullis built-in control catalog",
                    "description": "SOC 2 and NIST SP 800-53 Rev. 5 controls judged by SQL over \
                                    Portcullis' access log and policy state \
                                    (audit/controls/*.toml).",
                }],
            },
        }
    })
}

fn framework_result(report: &Report, framework: Framework) -> Value {
    let results: Vec<&ControlResult> = report
        .results
        .iter()
        .filter(|result| result.framework == framework)
        .collect();
    let tally = report.tally(framework);
    let mut observations = Vec::new();
    let mut findings = Vec::new();
    for result in &results {
        let observation = Uuid::new_v4().to_string();
        observations.push(json!({
            "uuid": observation,
            "title": format!("Evidence for {}", result.id),
            "description": format!(
                "{} evidence rows, {} of them failing. {}",
                result.evidence_rows, result.failing_rows, result.requirement
            ),
            "methods": ["TEST"],
            "types": ["control-objective"],
            "collected": time(report.evaluated_at),
            "relevant-evidence": [{
                "description": "The rows of the control's evidence query over the access log \
                                and the policy state; the query is in this observation's \
                                remarks.",
            }],
            "remarks": result.evidence_sql,
        }));
        let mut target = json!({
            "type": "objective-id",
            "target-id": format!("{}_obj", control_id(result)),
        });
        match result.status {
            Status::Pass => {
                target["status"] = json!({"state": "satisfied", "reason": "pass"});
            }
            Status::Fail => {
                target["status"] = json!({"state": "not-satisfied", "reason": "fail"});
            }
            Status::NotApplicable | Status::Error => {}
        }
        findings.push(json!({
            "uuid": Uuid::new_v4().to_string(),
            "title": format!("{} {}", result.id, result.title),
            "description": result.reason,
            "props": [
                prop("assessment-status", status_token(result.status)),
                prop("severity", result.severity.as_str()),
            ],
            "target": target,
            "related-observations": [{"observation-uuid": observation}],
            "remarks": result.remediation,
        }));
    }
    let selected: Vec<Value> = results
        .iter()
        .map(|result| json!({"control-id": control_id(result)}))
        .collect();
    json!({
        "uuid": Uuid::new_v4().to_string(),
        "title": format!("{} controls evaluated by Portcullis", framework.title()),
        "description": format!(
            "{} controls: {} pass, {} fail, {} not applicable, {} could not be judged. Audit \
             chain: {}",
            tally.total(), tally.pass, tally.fail, tally.not_applicable, tally.error,
            report.integrity.summary
        ),
        "start": time(report.window_start),
        "end": time(report.window_end),
        "reviewed-controls": {
            "control-selections": [{"include-controls": selected}],
        },
        "observations": observations,
        "findings": findings,
    })
}

/// The control's id as OSCAL catalogs write it.
fn control_id(result: &ControlResult) -> String {
    result.id.to_ascii_lowercase()
}

fn status_token(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NotApplicable => "not-applicable",
        Status::Error => "error",
    }
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "ns": NAMESPACE, "value": value})
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}
