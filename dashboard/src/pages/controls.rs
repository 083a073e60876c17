//! `/controls`: every control of the latest compliance report with its status, per framework;
//! `/controls/{framework}/{id}`: one control — what it requires, why it has its status, the
//! SQL that gathered its evidence, the rows behind a failure, the remediation, and its status
//! in the reports before.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use maud::{Markup, html};

use crate::compliance::{ControlResult, Framework, Report, Status};
use crate::layout::{self, Page, Section};
use crate::pages::badge;
use crate::params::Params;
use crate::{Dashboard, PageError, format};

/// Reports whose statuses a control's history shows.
const HISTORY_REPORTS: usize = 60;

pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    let params = Params::parse(raw.as_deref(), &["framework", "status"])?;
    let frameworks: Vec<&'static str> = Framework::ALL.iter().map(|f| f.as_str()).collect();
    let only = params
        .choice("framework", &frameworks)?
        .and_then(|name| name.parse::<Framework>().ok());
    let status = params.choice("status", &["pass", "fail", "not_applicable", "error"])?;
    let report = dashboard.latest_report().await?;
    let body = html! {
        h1 { "Controls" }
        @match &report {
            None => p.problem { (dashboard.no_report()) },
            Some(report) => {
                p.muted {
                    "From the report of " (format::time(report.evaluated_at)) ", over events from "
                    (format::time(report.window_start)) " to " (format::time(report.window_end)) "."
                }
                @for framework in Framework::ALL.into_iter().filter(|f| only.is_none_or(|o| o == *f)) {
                    (framework_table(report, framework, status))
                }
            }
        }
    };
    Ok(layout::page("Controls", Some(Section::Controls), body))
}

fn framework_table(report: &Report, framework: Framework, status: Option<&str>) -> Markup {
    let results = report
        .results
        .iter()
        .filter(|result| result.framework == framework)
        .filter(|result| status.is_none_or(|status| result.status.as_str() == status));
    html! {
        h2 { (framework.title()) }
        div.scroll { table {
            thead { tr { th { "Control" } th { "Title" } th { "Status" } th { "Severity" } th.num { "Failing rows" } th.wide-only { "Why" } } }
            tbody {
                @for result in results {
                    tr {
                        td { a href=(control_link(result)) { (result.id) } }
                        td.wrap { (result.title) }
                        td { (status_badge(result.status)) }
                        td { (result.severity.as_str()) }
                        td.num { (format::count(result.failing_rows)) }
                        td.wrap.wide-only { (prose(&result.reason)) }
                    }
                }
            }
        } }
    }
}

/// A catalog's sentence, with its `backquoted` names as code, as the catalog files write them.
/// Every part is escaped like any other text.
fn prose(text: &str) -> Markup {
    html! {
        @for (index, part) in text.split('`').enumerate() {
            @if index % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

fn control_link(result: &ControlResult) -> String {
    format!(
        "/controls/{}/{}",
        result.framework.as_str(),
        format::segment(&result.id)
    )
}

fn status_badge(status: Status) -> Markup {
    let text = match status {
        Status::NotApplicable => "not applicable",
        other => other.as_str(),
    };
    badge(status.as_str(), text)
}

pub(crate) async fn control(
    State(dashboard): State<Arc<Dashboard>>,
    Path((framework, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    Params::parse(raw.as_deref(), &[])?;
    let Ok(framework) = framework.parse::<Framework>() else {
        return Err(PageError::NotFound(format!(
            "there is no framework `{}`; the frameworks are {}",
            framework.chars().take(40).collect::<String>(),
            Framework::ALL.map(|f| f.as_str()).join(", ")
        )));
    };
    let report = dashboard.latest_report().await?;
    let result = report.as_ref().and_then(|report| {
        report
            .results
            .iter()
            .find(|result| result.framework == framework && result.id == id)
    });
    let Some(result) = result else {
        if report.is_none() {
            return Err(PageError::NotFound(dashboard.no_report()));
        }
        return Err(PageError::NotFound(format!(
            "the latest compliance report has no control `{}` in {}",
            id.chars().take(40).collect::<String>(),
            framework.title()
        )));
    };
    // A damaged history costs the page its history, not the control's result.
    let history: Result<Vec<(String, &'static str)>, PageError> =
        dashboard.history(HISTORY_REPORTS).await.map(|history| {
            history
                .iter()
                .rev()
                .map(|summary| {
                    let status = summary
                        .status_of(framework, &id)
                        .map_or("none", Status::as_str);
                    (format::time(summary.evaluated_at), status)
                })
                .collect()
        });
    if let Err(error) = &history {
        tracing::warn!(%error, "dashboard_compliance_history_unreadable");
    }
    let title = format!("{} {}", framework.title(), result.id);
    let body = html! {
        h1 { (title) ": " (result.title) }
        (summary(result))
        h2 { "Evidence query" }
        pre { code { (result.evidence_sql) } }
        (failing(result))
        h2 { "Remediation" }
        p { (prose(&result.remediation)) }
        h2 { "History" }
        @match &history {
            Ok(history) => (chart_history(history, result)),
            Err(error) => p.problem {
                "The history of evaluations cannot be read: " (error.to_string()) ". Move the \
                 file aside to start a new history; the newest report is kept apart and is \
                 shown above."
            },
        }
    };
    Ok(layout::page(&title, Some(Section::Controls), body))
}

fn summary(result: &ControlResult) -> Markup {
    html! {
        dl.fields {
            dt { "Status" } dd { (status_badge(result.status)) " " (prose(&result.reason)) }
            dt { "Requires" } dd { (prose(&result.requirement)) }
            dt { "Passes when" } dd { (prose(&result.passes_when)) }
            dt { "Severity" } dd { (result.severity.as_str()) }
            dt { "Evidence rows" } dd { (format::count(result.evidence_rows)) }
            dt { "Failing rows" } dd { (format::count(result.failing_rows)) }
        }
    }
}

fn failing(result: &ControlResult) -> Markup {
    html! {
        @if !result.failing.is_empty() {
            h2 { "Rows behind the failure" }
            @if result.failing_rows > result.failing.len() as u64 {
                p.muted {
                    "The first " (result.failing.len()) " of " (format::count(result.failing_rows))
                    "; the evidence query above finds them all (`portcullis audit query`)."
                }
            }
            div.scroll { table {
                thead { tr { @for column in &result.columns { th { (column) } } } }
                tbody {
                    @for row in &result.failing {
                        tr { @for value in row { td.wrap { (value) } } }
                    }
                }
            } }
        }
    }
}

fn chart_history(history: &[(String, &'static str)], result: &ControlResult) -> Markup {
    let what = format!(
        "status of {} in the last {} reports, oldest first",
        result.id,
        history.len()
    );
    html! {
        (crate::chart::status_strip(history, &what))
        details {
            summary { "Each report" }
            div.scroll { table {
                thead { tr { th { "Evaluated (UTC)" } th { "Status" } } }
                tbody {
                    @for (when, status) in history.iter().rev() {
                        tr { td { (when) } td { (badge(status, status)) } }
                    }
                }
            } }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn backquoted_names_are_code_and_everything_is_escaped() {
        assert_eq!(
            super::prose("a `permit` rule <b>, `x<y>`").into_string(),
            "a <code>permit</code> rule &lt;b&gt;, <code>x&lt;y&gt;</code>"
        );
        assert_eq!(
            super::prose("no `close").into_string(),
            "no <code>close</code>"
        );
    }
}
