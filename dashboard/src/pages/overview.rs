//! `/`: posture per framework and the integrity of the audit chain (from the latest
//! compliance report), decisions and denials over time, and who is denied and why.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use maud::{Markup, html};

use crate::chart::{self, Bucket};
use crate::compliance::{Framework, Report};
use crate::layout::{self, Page, Section};
use crate::pages::badge;
use crate::params::{Params, Window};
use crate::store::{Table, at};
use crate::{Dashboard, PageError, format, sql};

const DEFAULT_WINDOW: Window = Window::days(7);

/// Windows up to this long are drawn by the hour; longer ones by the day.
const HOURLY_UP_TO: Duration = Duration::days(7);

/// How many workloads and reasons the lists show.
const TOP: usize = 10;

pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    let params = Params::parse(raw.as_deref(), &["window"])?;
    let window = params.window("window")?.unwrap_or(DEFAULT_WINDOW);
    let _turn = dashboard.turn().await?;
    let now = Utc::now();
    let from = now - window.duration();
    let report = dashboard.latest_report().await?;
    let series = decisions_over_time(&dashboard, from, now, window).await?;
    let top = top_denials(&dashboard, from).await?;
    let body = html! {
        h1 { "Overview" }
        div.cards {
            @for framework in Framework::ALL {
                (posture(report.as_ref(), framework))
            }
            (integrity(report.as_ref(), &dashboard))
        }
        h2 { "Decisions in the last " (window.describe()) }
        (window_form(window))
        (decisions_card(&series, window))
        div.cards {
            (top_card("Most denied workloads", "workload", &top, window))
            (top_card("Commonest deny reasons", "reason", &top, window))
        }
    };
    Ok(layout::page("Overview", Some(Section::Overview), body))
}

fn posture(report: Option<&Report>, framework: Framework) -> Markup {
    let link = format::link(
        "/controls",
        &[("framework", Some(framework.as_str().into()))],
    );
    html! {
        section.card {
            h2 { a href=(link) { (framework.title()) } }
            @match report {
                None => p.muted { "No compliance report yet." },
                Some(report) => {
                    @let tally = report.tally(framework);
                    @let judged = tally.pass + tally.fail;
                    p.big { (tally.pass) " / " (judged) " passing" }
                    div.tally {
                        (badge("pass", &format!("{} pass", tally.pass)))
                        (badge("fail", &format!("{} fail", tally.fail)))
                        (badge("not_applicable", &format!("{} not applicable", tally.not_applicable)))
                        @if tally.error > 0 {
                            (badge("error", &format!("{} error", tally.error)))
                        }
                    }
                    p.muted { "Evaluated " (format::time(report.evaluated_at)) }
                }
            }
        }
    }
}

fn integrity(report: Option<&Report>, dashboard: &Dashboard) -> Markup {
    html! {
        section.card {
            h2 { "Audit chain integrity" }
            @match report {
                None => p.muted { (dashboard.no_report()) },
                Some(report) => {
                    p {
                        @if report.integrity.ok { (badge("ok", "verified")) }
                        @else { (badge("broken", "does not verify")) }
                    }
                    p { (report.integrity.summary) }
                    p.muted { "Checked " (format::time(report.evaluated_at)) " UTC" }
                }
            }
        }
    }
}

fn window_form(window: Window) -> Markup {
    html! {
        form.filters method="get" action="/" {
            label {
                "Window (hours or days: 24h, 7d, 90d)"
                input type="text" name="window" value=(window.as_param()) maxlength="8"
                    pattern="[0-9]{1,5}[hd]" required;
            }
            button type="submit" { "Show" }
        }
    }
}

fn decisions_card(series: &[Bucket], window: Window) -> Markup {
    let decisions: u64 = series.iter().map(|b| b.decisions).sum();
    let denials: u64 = series.iter().map(|b| b.denials).sum();
    let what = format!(
        "{} decisions and {} denials in the last {}, by {}",
        format::count(decisions),
        format::count(denials),
        window.describe(),
        if hourly(window) { "hour" } else { "day" }
    );
    html! {
        section.card {
            p {
                span.big { (format::count(decisions)) } " decisions, "
                span.big { (format::count(denials)) } " denied"
            }
            (chart::decisions(series, &what))
            details {
                summary { "The numbers" }
                div.scroll {
                    table {
                        thead { tr { th { "From (UTC)" } th.num { "Decisions" } th.num { "Denied" } } }
                        tbody {
                            @for bucket in series.iter().filter(|b| b.decisions > 0) {
                                tr {
                                    td { (bucket.label) }
                                    td.num { (format::count(bucket.decisions)) }
                                    td.num { (format::count(bucket.denials)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn top_card(title: &str, what: &str, top: &Table, window: Window) -> Markup {
    let rows: Vec<&Vec<_>> = top
        .rows
        .iter()
        .filter(|row| at(row, 0).text() == Some(what))
        .collect();
    let from = format::link_time(Utc::now() - window.duration());
    html! {
        section.card {
            h2 { (title) }
            @if rows.is_empty() {
                p.muted { "No denials in this window." }
            } @else {
                table {
                    thead { tr { th { (what) } th.num { "Denials" } } }
                    tbody {
                        @for row in rows {
                            tr {
                                td.wrap {
                                    @match at(row, 1).text() {
                                        Some(name) => a href=(format::link("/events", &[
                                            ("decision", Some("deny".into())),
                                            (what, Some(name.to_owned())),
                                            ("from", Some(from.clone())),
                                        ])) { (name) },
                                        None => span.muted { "(none: not attested)" },
                                    }
                                }
                                td.num { (format::count(at(row, 2).count())) }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn hourly(window: Window) -> bool {
    window.duration() <= HOURLY_UP_TO
}

async fn decisions_over_time(
    dashboard: &Dashboard,
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    window: Window,
) -> Result<Vec<Bucket>, PageError> {
    let (unit, step) = if hourly(window) {
        ("hour", Duration::hours(1))
    } else {
        ("day", Duration::days(1))
    };
    // Decisions and refused evidence; a credential issued repeats its decision's allow.
    let mut conditions = vec!["kind IN ('decision', 'attestation_failed')".to_owned()];
    conditions.extend(sql::time_range(Some(from), None));
    let query = format!(
        "SELECT date_trunc('{unit}', time) AS bucket, count(*) AS decisions, \
         sum(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END) AS denials \
         FROM access_events {} GROUP BY 1",
        sql::where_all(&conditions)
    );
    let table = dashboard.query(&query).await?;
    let counts: HashMap<DateTime<Utc>, (u64, u64)> = table
        .rows
        .iter()
        .filter_map(|row| Some((at(row, 0).time()?, (at(row, 1).count(), at(row, 2).count()))))
        .collect();
    let first = from.duration_trunc(step).unwrap_or(from);
    let mut buckets = Vec::new();
    let mut start = first;
    while start <= now {
        let (decisions, denials) = counts.get(&start).copied().unwrap_or((0, 0));
        let label = if hourly(window) {
            start.format("%m-%d %H:00").to_string()
        } else {
            start.format("%Y-%m-%d").to_string()
        };
        buckets.push(Bucket {
            label,
            decisions,
            denials,
        });
        start += step;
    }
    Ok(buckets)
}

/// The most denied workloads and the commonest deny reasons, in one query: rows of (`workload`
/// or `reason`, the name, the count). One scan grouped three ways (`GROUPING SETS`) for this
/// and the chart was measured slower than the scans apart (1.4 s against 1.0 s, a debug build
/// over a million events), so they stay apart.
async fn top_denials(dashboard: &Dashboard, from: DateTime<Utc>) -> Result<Table, PageError> {
    let mut conditions = vec!["decision = 'deny'".to_owned()];
    conditions.extend(sql::time_range(Some(from), None));
    let filter = sql::where_all(&conditions);
    let query = format!(
        "SELECT * FROM (SELECT 'workload' AS what, workload AS name, count(*) AS n \
           FROM access_events {filter} GROUP BY workload ORDER BY n DESC, name LIMIT {TOP}) \
         UNION ALL \
         SELECT * FROM (SELECT 'reason' AS what, reason_code AS name, count(*) AS n \
           FROM access_events {filter} GROUP BY reason_code ORDER BY n DESC, name LIMIT {TOP})"
    );
    let mut table = dashboard.query(&query).await?;
    table.rows.sort_by(|a, b| {
        at(b, 2)
            .count()
            .cmp(&at(a, 2).count())
            .then_with(|| at(a, 1).text().cmp(&at(b, 1).text()))
    });
    Ok(table)
}
