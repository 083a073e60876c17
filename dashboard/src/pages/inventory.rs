//! `/inventory`: the bundle in effect (`bundles.current`), its workloads, targets, credentials
//! and rules with their use in a window (`?window=30d`), and the grants — `permit` rules —
//! that allowed nothing in it.
//!
//! Two queries: the policy state of the current bundle as one union of text rows, and the
//! events of the window grouped by kind, decision, workload, target and rule, which the page
//! adds up per workload, target, rule and credential (a credential's use is the
//! `credential_issued` events of the rules that name it).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::layout::{self, Page, Section};
use crate::pages::{badge, or_dash};
use crate::params::{Params, Window};
use crate::store::{Cell, Table, at};
use crate::{Dashboard, PageError, format, sql};

const DEFAULT_WINDOW: Window = Window::days(30);

/// Rows a table shows at most: a policy set of ten thousand rules would make a page of
/// megabytes. The rest are a query away.
const MAX_TABLE_ROWS: usize = 500;

/// The policy state of the bundle in effect as rows of text: section, name, and up to five
/// details, whose meaning depends on the section.
const POLICY_STATE: &str = "\
SELECT 'bundle' AS section, b.bundle_hash AS name, CAST(b.signing_key_id AS VARCHAR) AS d1, \
       CAST(b.signed_at AS VARCHAR) AS d2, CAST(b.size_bytes AS VARCHAR) AS d3, \
       CAST(NULL AS VARCHAR) AS d4, CAST(NULL AS VARCHAR) AS d5 \
  FROM bundles b WHERE b.current \
UNION ALL SELECT 'workload', w.workload, w.trust_provider_kinds, CAST(NULL AS VARCHAR), \
       CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR) \
  FROM workloads w JOIN bundles b ON b.bundle_hash = w.bundle_hash WHERE b.current \
UNION ALL SELECT 'target', t.target, t.protocol, t.host, CAST(t.port AS VARCHAR), t.database, \
       t.path_prefix \
  FROM targets t JOIN bundles b ON b.bundle_hash = t.bundle_hash WHERE b.current \
UNION ALL SELECT 'credential', c.credential, c.kind, CAST(c.ttl_s AS VARCHAR), \
       CAST(c.static_secret AS VARCHAR), c.source, CAST(NULL AS VARCHAR) \
  FROM credentials c JOIN bundles b ON b.bundle_hash = c.bundle_hash WHERE b.current \
UNION ALL SELECT 'rule', r.rule, r.effect, r.workload, r.target, r.credential, \
       CAST(r.has_when AS VARCHAR) \
  FROM rules r JOIN bundles b ON b.bundle_hash = r.bundle_hash WHERE b.current";

/// How often something was used in the window.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    hits: u64,
    allowed: u64,
    denied: u64,
    last: Option<DateTime<Utc>>,
}

impl Usage {
    fn add(&mut self, decision: Option<&str>, count: u64, last: Option<DateTime<Utc>>) {
        self.hits += count;
        match decision {
            Some("allow") => self.allowed += count,
            Some("deny") => self.denied += count,
            _ => {}
        }
        self.last = self.last.max(last);
    }
}

/// Use per name, for each kind of thing.
#[derive(Debug, Default)]
struct Uses {
    workloads: HashMap<String, Usage>,
    targets: HashMap<String, Usage>,
    rules: HashMap<String, Usage>,
    /// `credential_issued` events per rule.
    issued_by_rule: HashMap<String, Usage>,
}

pub(crate) async fn page(
    State(dashboard): State<Arc<Dashboard>>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    let params = Params::parse(raw.as_deref(), &["window"])?;
    let window = params.window("window")?.unwrap_or(DEFAULT_WINDOW);
    let _turn = dashboard.turn().await?;
    let state = dashboard.query(POLICY_STATE).await?;
    let uses = read_uses(&dashboard, Utc::now() - window.duration()).await?;
    let rows = |section: &str| -> Vec<&Vec<Cell>> {
        state
            .rows
            .iter()
            .filter(|row| at(row, 0).text() == Some(section))
            .collect()
    };
    let body = html! {
        h1 { "Policy inventory" }
        (window_form(window))
        @match rows("bundle").first() {
            None => p.problem { "No bundle is in effect: the store has not archived one yet." },
            Some(bundle) => (bundle_card(bundle)),
        }
        h2 #unused { "Grants no one used in the last " (window.describe()) }
        (unused_grants(&rows("rule"), &uses))
        h2 { "Workloads" }
        (workloads(capped(&rows("workload")), &uses, window))
        (cut_note(rows("workload").len(), "workloads"))
        h2 { "Targets" }
        (targets(capped(&rows("target")), &uses, window))
        (cut_note(rows("target").len(), "targets"))
        h2 { "Credentials" }
        (credentials(capped(&rows("credential")), &rows("rule"), &uses))
        (cut_note(rows("credential").len(), "credentials"))
        h2 { "Rules" }
        (rules(capped(&rows("rule")), &uses))
        (cut_note(rows("rule").len(), "rules"))
    };
    Ok(layout::page(
        "Policy inventory",
        Some(Section::Inventory),
        body,
    ))
}

async fn read_uses(dashboard: &Dashboard, from: DateTime<Utc>) -> Result<Uses, PageError> {
    let mut conditions = vec!["kind IN ('decision', 'credential_issued')".to_owned()];
    conditions.extend(sql::time_range(Some(from), None));
    let filter = sql::where_all(&conditions);
    // One grouping per kind of name: grouped by all three at once, a store of ten million
    // events has as many groups as workload-target-rule triples, far more than names.
    let by = |column: &str| {
        format!(
            "SELECT '{column}' AS dimension, kind, decision, {column} AS name, count(*) AS n, \
             max(time) AS last FROM access_events {filter} GROUP BY kind, decision, {column}"
        )
    };
    let query = [by("workload"), by("target"), by("rule")].join(" UNION ALL ");
    let table = dashboard.query(&query).await?;
    Ok(add_up(&table))
}

fn add_up(table: &Table) -> Uses {
    let mut uses = Uses::default();
    for row in &table.rows {
        let decision = at(row, 2).text();
        let Some(name) = at(row, 3).text() else {
            continue;
        };
        let count = at(row, 4).count();
        let last = at(row, 5).time();
        let issued = at(row, 1).text() == Some("credential_issued");
        let into = match at(row, 0).text() {
            Some("rule") if issued => &mut uses.issued_by_rule,
            _ if issued => continue,
            Some("workload") => &mut uses.workloads,
            Some("target") => &mut uses.targets,
            Some("rule") => &mut uses.rules,
            _ => continue,
        };
        into.entry(name.to_owned())
            .or_default()
            .add(decision, count, last);
    }
    uses
}

fn capped<'a, 'b>(rows: &'a [&'b Vec<Cell>]) -> &'a [&'b Vec<Cell>] {
    rows.get(..MAX_TABLE_ROWS).unwrap_or(rows)
}

/// Says that a table shows only its first [`MAX_TABLE_ROWS`] of `total`, when it does.
fn cut_note(total: usize, what: &str) -> Markup {
    html! {
        @if total > MAX_TABLE_ROWS {
            p.muted {
                "The first " (MAX_TABLE_ROWS) " of " (format::count(total as u64)) " " (what)
                "; `portcullis audit query` over the `" (what) "` table lists them all."
            }
        }
    }
}

fn window_form(window: Window) -> Markup {
    html! {
        form.filters method="get" action="/inventory" {
            label {
                "Window (hours or days: 24h, 30d, 90d)"
                input type="text" name="window" value=(window.as_param()) maxlength="8"
                    pattern="[0-9]{1,5}[hd]" required;
            }
            button type="submit" { "Show" }
        }
    }
}

fn bundle_card(bundle: &[Cell]) -> Markup {
    html! {
        dl.fields {
            dt { "Bundle in effect" }
            dd { code { "sha256:" (at(bundle, 1).text().unwrap_or_default()) } }
            dt { "Signed" }
            dd {
                @match at(bundle, 2).text() {
                    Some(key) => { "by key " code { (key) } @if let Some(at) = at(bundle, 3).text() { " at " (at) } },
                    None => span.muted { "unsigned" },
                }
            }
            dt { "Size" }
            dd { (or_dash(at(bundle, 4).text())) " bytes" }
        }
    }
}

fn usage_cells(usage: Option<&Usage>) -> Markup {
    let usage = usage.copied().unwrap_or_default();
    html! {
        td.num { (format::count(usage.hits)) }
        td.num { (format::count(usage.allowed)) }
        td.num { (format::count(usage.denied)) }
        td { (or_dash(usage.last.map(format::time).as_deref())) }
    }
}

fn usage_heads() -> Markup {
    html! {
        th.num { "Decisions" } th.num { "Allowed" } th.num { "Denied" } th { "Last use" }
    }
}

fn events_link(name: &str, filter: &str, window: Window) -> Markup {
    let from = format::link_time(Utc::now() - window.duration());
    let href = format::link(
        "/events",
        &[(filter, Some(name.to_owned())), ("from", Some(from))],
    );
    html! { a href=(href) { (name) } }
}

fn workloads(rows: &[&Vec<Cell>], uses: &Uses, window: Window) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Workload" } th { "Trust providers" } (usage_heads()) } }
            tbody {
                @for row in rows {
                    @let name = at(row, 1).text().unwrap_or_default();
                    tr {
                        td.wrap { (events_link(name, "workload", window)) }
                        td { (or_dash(at(row, 2).text())) }
                        (usage_cells(uses.workloads.get(name)))
                    }
                }
            }
        } }
    }
}

fn targets(rows: &[&Vec<Cell>], uses: &Uses, window: Window) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Target" } th { "Protocol" } th { "Address" } th { "Database or path" } (usage_heads()) } }
            tbody {
                @for row in rows {
                    @let name = at(row, 1).text().unwrap_or_default();
                    tr {
                        td.wrap { (events_link(name, "target", window)) }
                        td { (or_dash(at(row, 2).text())) }
                        td.wrap {
                            (at(row, 3).text().unwrap_or_default())
                            @if let Some(port) = at(row, 4).text() { ":" (port) }
                        }
                        td.wrap { (or_dash(at(row, 5).text().or(at(row, 6).text()))) }
                        (usage_cells(uses.targets.get(name)))
                    }
                }
            }
        } }
    }
}

fn credentials(rows: &[&Vec<Cell>], rules: &[&Vec<Cell>], uses: &Uses) -> Markup {
    let issued = |credential: &str| {
        let mut total = Usage::default();
        for rule in rules
            .iter()
            .filter(|rule| at(rule, 5).text() == Some(credential))
        {
            let name = at(rule, 1).text().unwrap_or_default();
            if let Some(usage) = uses.issued_by_rule.get(name) {
                total.add(None, usage.hits, usage.last);
            }
        }
        total
    };
    html! {
        div.scroll { table {
            thead { tr { th { "Credential" } th { "Kind" } th { "TTL" } th { "Source" } th.num { "Issued" } th { "Last issued" } } }
            tbody {
                @for row in rows {
                    @let name = at(row, 1).text().unwrap_or_default();
                    @let usage = issued(name);
                    tr {
                        td.wrap { (name) }
                        td {
                            (or_dash(at(row, 2).text()))
                            @if at(row, 4).text() == Some("true") { " " (badge("fail", "static secret")) }
                        }
                        td { (ttl(at(row, 3).text())) }
                        td.wrap { (or_dash(at(row, 5).text())) }
                        td.num { (format::count(usage.hits)) }
                        td { (or_dash(usage.last.map(format::time).as_deref())) }
                    }
                }
            }
        } }
    }
}

fn ttl(seconds: Option<&str>) -> Markup {
    match seconds.and_then(|s| s.parse::<u64>().ok()) {
        None => html! { span.muted { "never expires" } },
        Some(seconds) if seconds.is_multiple_of(3600) && seconds > 0 => {
            html! { (seconds / 3600) " h" }
        }
        Some(seconds) if seconds.is_multiple_of(60) && seconds > 0 => {
            html! { (seconds / 60) " min" }
        }
        Some(seconds) => html! { (seconds) " s" },
    }
}

fn rules(rows: &[&Vec<Cell>], uses: &Uses) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th { "Rule" } th { "Effect" } th { "Workload" } th { "Target" } th { "Credential" } th { "Condition" } (usage_heads()) } }
            tbody {
                @for row in rows {
                    @let name = at(row, 1).text().unwrap_or_default();
                    tr {
                        td.wrap { code { (name) } }
                        td { (or_dash(at(row, 2).text())) }
                        td.wrap { (or_dash(at(row, 3).text())) }
                        td.wrap { (or_dash(at(row, 4).text())) }
                        td.wrap { (or_dash(at(row, 5).text())) }
                        td { @if at(row, 6).text() == Some("true") { "when …" } @else { span.muted { "none" } } }
                        (usage_cells(uses.rules.get(name)))
                    }
                }
            }
        } }
    }
}

fn unused_grants(rules: &[&Vec<Cell>], uses: &Uses) -> Markup {
    let unused: Vec<&Vec<Cell>> = rules
        .iter()
        .copied()
        .filter(|row| at(row, 2).text() == Some("permit"))
        .filter(|row| {
            let name = at(row, 1).text().unwrap_or_default();
            uses.rules.get(name).is_none_or(|usage| usage.allowed == 0)
        })
        .collect();
    html! {
        @if unused.is_empty() {
            p { (badge("pass", "none")) " Every permit rule allowed something in this window." }
        } @else {
            p.muted {
                (unused.len()) " permit rules allowed nothing: each is access no one needed; \
                 remove it or narrow it (least privilege)."
            }
            div.scroll { table {
                thead { tr { th { "Rule" } th { "Workload" } th { "Target" } th { "Credential" } } }
                tbody {
                    @for row in capped(&unused) {
                        tr {
                            td.wrap { code { (at(row, 1).text().unwrap_or_default()) } }
                            td.wrap { (or_dash(at(row, 3).text())) }
                            td.wrap { (or_dash(at(row, 4).text())) }
                            td.wrap { (or_dash(at(row, 5).text())) }
                        }
                    }
                }
            } }
            (cut_note(unused.len(), "rules"))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    #[test]
    fn uses_add_up_per_name_with_issuances_apart() {
        let rows = [
            ("workload", "decision", "allow", "ci", 3, 10),
            ("workload", "decision", "deny", "ci", 2, 20),
            ("workload", "credential_issued", "allow", "ci", 1, 30),
            ("target", "decision", "allow", "api", 3, 10),
            ("rule", "decision", "allow", "r1", 3, 10),
            ("rule", "credential_issued", "allow", "r1", 1, 30),
        ];
        type Row = (
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            i64,
            i64,
        );
        let text = |pick: fn(&Row) -> &'static str| {
            Arc::new(StringArray::from(rows.iter().map(pick).collect::<Vec<_>>())) as _
        };
        let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Schema::new(vec![
            Field::new("dimension", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("decision", DataType::Utf8, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
            Field::new("last", time, true),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                text(|row| row.0),
                text(|row| row.1),
                text(|row| row.2),
                text(|row| row.3),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.4).collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        rows.iter().map(|r| r.5 * 1_000_000).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
            ],
        )
        .unwrap();
        let uses = add_up(&Table::from_batches(&[batch]));
        let ci = uses.workloads["ci"];
        assert_eq!((ci.hits, ci.allowed, ci.denied), (5, 3, 2));
        assert_eq!(ci.last.unwrap().timestamp(), 20);
        assert_eq!(uses.targets["api"].hits, 3);
        assert_eq!(uses.rules["r1"].allowed, 3);
        assert_eq!(uses.issued_by_rule["r1"].hits, 1);
        assert_eq!(uses.issued_by_rule.len(), 1);
    }
}
