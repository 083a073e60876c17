//! `/events`: the access log, filtered by time range, workload, target, decision, reason and
//! kind, newest first, paged by `seq`; `/events/{seq}`: one event in full.
//!
//! Paging is by key, never by `OFFSET`: a page asks for the events before (or after) a `seq`,
//! which Parquet statistics prune to the row groups that hold them, so the hundredth page of
//! ten million events costs what the first does. A page is read in two steps: the `seq`s that
//! match (one narrow column and the filtered ones), then the shown columns of just that range.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use crate::layout::{self, Page, Section};
use crate::pages::{badge, or_dash};
use crate::params::Params;
use crate::store::{Cell, Table, at};
use crate::{Dashboard, PageError, format, sql};

/// Events per page unless `limit` says otherwise, and the most it may say.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

const PARAMS: [&str; 10] = [
    "from", "to", "workload", "target", "decision", "reason", "kind", "limit", "before", "after",
];

const KINDS: [&str; 5] = [
    "decision",
    "credential_issued",
    "attestation_failed",
    "policy_change",
    "connection_closed",
];

/// The columns of the list, in order.
const LIST_COLUMNS: &str =
    "seq, time, kind, decision, workload, target, action, resource, reason_code, rule";

/// The filters of a request, checked.
#[derive(Debug, Default)]
struct Filters {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    workload: Option<String>,
    target: Option<String>,
    decision: Option<&'static str>,
    reason: Option<String>,
    kind: Option<&'static str>,
    limit: i64,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug)]
enum Cursor {
    Newest,
    Before(i64),
    After(i64),
}

impl Filters {
    fn read(params: &Params) -> Result<(Filters, Cursor), PageError> {
        let filters = Filters {
            from: params.time("from")?,
            to: params.time("to")?,
            workload: params.text("workload")?.map(str::to_owned),
            target: params.text("target")?.map(str::to_owned),
            decision: params.choice("decision", &["allow", "deny"])?,
            reason: params.text("reason")?.map(str::to_owned),
            kind: params.choice("kind", &KINDS)?,
            limit: params
                .number("limit", 1..=MAX_PAGE)?
                .unwrap_or(DEFAULT_PAGE),
        };
        if let (Some(from), Some(to)) = (filters.from, filters.to)
            && from >= to
        {
            return Err(PageError::BadRequest(
                "`from` must be earlier than `to`".to_owned(),
            ));
        }
        let cursor = match (
            params.number("before", 1..=i64::MAX)?,
            params.number("after", 0..=i64::MAX)?,
        ) {
            (Some(_), Some(_)) => {
                return Err(PageError::BadRequest(
                    "give `before` or `after`, not both".to_owned(),
                ));
            }
            (Some(seq), None) => Cursor::Before(seq),
            (None, Some(seq)) => Cursor::After(seq),
            (None, None) => Cursor::Newest,
        };
        Ok((filters, cursor))
    }

    /// The conditions, every value quoted or printed from its parsed type.
    fn conditions(&self) -> Vec<String> {
        let mut conditions = sql::time_range(self.from, self.to);
        if let Some(workload) = &self.workload {
            conditions.push(format!("workload = {}", sql::text(workload)));
        }
        if let Some(target) = &self.target {
            conditions.push(format!("target = {}", sql::text(target)));
        }
        if let Some(decision) = self.decision {
            conditions.push(format!("decision = {}", sql::text(decision)));
        }
        if let Some(kind) = self.kind {
            conditions.push(format!("kind = {}", sql::text(kind)));
        }
        if let Some(reason) = &self.reason {
            // A reason code exactly, or words of the sentence; `strpos` takes the text as it
            // is, where `LIKE` would read `%` and `_` in it as wildcards.
            let reason = sql::text(reason);
            conditions.push(format!(
                "(reason_code = {reason} OR strpos(reason, {reason}) > 0)"
            ));
        }
        conditions
    }

    /// The query string of these filters with `cursor`.
    fn link(&self, cursor: Cursor) -> String {
        let (before, after) = match cursor {
            Cursor::Newest => (None, None),
            Cursor::Before(seq) => (Some(seq.to_string()), None),
            Cursor::After(seq) => (None, Some(seq.to_string())),
        };
        format::link(
            "/events",
            &[
                ("from", self.from.map(format::link_time)),
                ("to", self.to.map(format::link_time)),
                ("workload", self.workload.clone()),
                ("target", self.target.clone()),
                ("decision", self.decision.map(str::to_owned)),
                ("reason", self.reason.clone()),
                ("kind", self.kind.map(str::to_owned)),
                (
                    "limit",
                    (self.limit != DEFAULT_PAGE).then(|| self.limit.to_string()),
                ),
                ("before", before),
                ("after", after),
            ],
        )
    }
}

/// One page of events, newest first, and whether there are more on either side.
struct Listing {
    events: Table,
    newer: bool,
    older: bool,
}

pub(crate) async fn list(
    State(dashboard): State<Arc<Dashboard>>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    let params = Params::parse(raw.as_deref(), &PARAMS)?;
    let (filters, cursor) = Filters::read(&params)?;
    let _turn = dashboard.turn().await?;
    let listing = read_page(&dashboard, &filters, cursor).await?;
    let body = html! {
        h1 { "Access log" }
        (filter_form(&filters))
        (pager(&filters, &listing))
        @if listing.events.rows.is_empty() {
            p.muted { "No event matches." }
        } @else {
            (event_table(&listing.events))
        }
        (pager(&filters, &listing))
    };
    Ok(layout::page("Access log", Some(Section::AccessLog), body))
}

async fn read_page(
    dashboard: &Dashboard,
    filters: &Filters,
    cursor: Cursor,
) -> Result<Listing, PageError> {
    let wanted = usize::try_from(filters.limit).unwrap_or(usize::MAX);
    let found = matching_seqs(dashboard, filters, cursor, wanted).await?;
    let more = found.len() > wanted;
    let shown = found.get(..wanted).unwrap_or(&found);
    let (newer, older) = match cursor {
        Cursor::Newest => (false, more),
        Cursor::Before(_) => (true, more),
        Cursor::After(_) => (more, true),
    };
    let (Some(low), Some(high)) = (shown.iter().min(), shown.iter().max()) else {
        // Past either end: the way back is to the newest events.
        return Ok(Listing {
            events: Table::default(),
            newer: !matches!(cursor, Cursor::Newest),
            older: false,
        });
    };
    let mut conditions = filters.conditions();
    conditions.push(format!("seq >= {low}"));
    conditions.push(format!("seq <= {high}"));
    let events = dashboard
        .query(&format!(
            "SELECT {LIST_COLUMNS} FROM access_events {} ORDER BY seq DESC",
            sql::where_all(&conditions)
        ))
        .await?;
    Ok(Listing {
        events,
        newer,
        older,
    })
}

/// The first window of `seq`s a page looks in, and how much each next one grows: a page of the
/// unfiltered log is found in the first; a rare filter's after a few, having read each event
/// at most once.
const FIRST_WINDOW: i64 = 8_192;
const WINDOW_GROWTH: i64 = 16;

/// The `seq`s of up to `wanted + 1` matching events from `cursor` on, in the page's order.
///
/// Asked of the whole store, "the 51 highest `seq`s below B" reads every row group below B:
/// no statistic says where the highest ones are. So the search looks in a window of `seq`s
/// next to the cursor, which statistics prune to the few row groups that hold it, and widens
/// the window only while it finds too few. The newest events start below the highest sealed
/// `seq` (read from the segments' names) and include everything above it, which is the
/// write-ahead log.
async fn matching_seqs(
    dashboard: &Dashboard,
    filters: &Filters,
    cursor: Cursor,
    wanted: usize,
) -> Result<Vec<i64>, PageError> {
    let sealed = dashboard.highest_sealed_seq().await;
    let below = |seq: i64, width: i64| Some(seq.saturating_sub(width)).filter(|low| *low > 1);
    let above = |seq: i64, width: i64| Some(seq.saturating_add(width)).filter(|h| *h <= sealed);
    // The window is `low..high`; `None` leaves that side open.
    let (descending, mut low, mut high) = match cursor {
        Cursor::Newest => (true, below(sealed, FIRST_WINDOW), None),
        Cursor::Before(seq) => (true, below(seq, FIRST_WINDOW), Some(seq)),
        Cursor::After(seq) => {
            let next = seq.saturating_add(1);
            (false, Some(next), above(next, FIRST_WINDOW))
        }
    };
    let order = if descending { "DESC" } else { "ASC" };
    let mut width = FIRST_WINDOW;
    let mut found = Vec::new();
    loop {
        let mut conditions = filters.conditions();
        conditions.extend(low.map(|low| format!("seq >= {low}")));
        conditions.extend(high.map(|high| format!("seq < {high}")));
        let seqs = dashboard
            .query(&format!(
                "SELECT seq FROM access_events {} ORDER BY seq {order} LIMIT {}",
                sql::where_all(&conditions),
                wanted + 1 - found.len()
            ))
            .await?;
        found.extend(seqs.rows.iter().filter_map(|row| at(row, 0).int()));
        let last_window = if descending {
            low.is_none()
        } else {
            high.is_none()
        };
        if found.len() > wanted || last_window {
            return Ok(found);
        }
        width = width.saturating_mul(WINDOW_GROWTH);
        if descending {
            (high, low) = (low, low.and_then(|low| below(low, width)));
        } else {
            (low, high) = (high, high.and_then(|high| above(high, width)));
        }
    }
}

fn filter_form(filters: &Filters) -> Markup {
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    html! {
        form.filters method="get" action="/events" {
            label { "From (UTC)"
                input type="datetime-local" name="from" step="0.001"
                    value=(filters.from.map(format::field_time).unwrap_or_default());
            }
            label { "To (UTC)"
                input type="datetime-local" name="to" step="0.001"
                    value=(filters.to.map(format::field_time).unwrap_or_default());
            }
            label { "Workload"
                input type="text" name="workload" maxlength="200" value=(text(&filters.workload));
            }
            label { "Target"
                input type="text" name="target" maxlength="200" value=(text(&filters.target));
            }
            label { "Decision"
                select name="decision" {
                    (option("", "any", filters.decision))
                    (option("allow", "allow", filters.decision))
                    (option("deny", "deny", filters.decision))
                }
            }
            label { "Reason (code or words)"
                input type="text" name="reason" maxlength="200" value=(text(&filters.reason));
            }
            label { "Kind"
                select name="kind" {
                    (option("", "any", filters.kind))
                    @for kind in KINDS { (option(kind, kind, filters.kind)) }
                }
            }
            label { "Per page"
                input type="number" name="limit" min="1" max=(MAX_PAGE) value=(filters.limit);
            }
            button type="submit" { "Filter" }
        }
    }
}

fn option(value: &str, label: &str, chosen: Option<&str>) -> Markup {
    let selected = chosen.unwrap_or_default() == value;
    html! { option value=(value) selected[selected] { (label) } }
}

fn pager(filters: &Filters, listing: &Listing) -> Markup {
    let rows = &listing.events.rows;
    let first = rows.first().and_then(|row| at(row, 0).int());
    let last = rows.last().and_then(|row| at(row, 0).int());
    html! {
        nav.pager aria-label="Pages" {
            span {
                @if listing.newer {
                    @if let Some(first) = first {
                        a href=(filters.link(Cursor::After(first))) { "← Newer" }
                    } @else {
                        a href=(filters.link(Cursor::Newest)) { "← Newest" }
                    }
                }
            }
            span {
                @if listing.older {
                    @if let Some(last) = last {
                        a href=(filters.link(Cursor::Before(last))) { "Older →" }
                    }
                }
            }
        }
    }
}

fn event_table(events: &Table) -> Markup {
    html! {
        div.scroll {
            table {
                thead {
                    tr {
                        th.num { "seq" } th { "Time (UTC)" } th { "Kind" } th { "Decision" }
                        th { "Workload" } th { "Target" } th { "Action" } th { "Resource" }
                        th { "Reason" } th { "Rule" }
                    }
                }
                tbody {
                    @for row in &events.rows {
                        @let seq = at(row, 0).int().unwrap_or_default();
                        tr {
                            td.num { a href=(format!("/events/{seq}")) { (seq) } }
                            td.nowrap { (or_dash(at(row, 1).show().as_deref())) }
                            td { (or_dash(at(row, 2).text())) }
                            td { (decision(at(row, 3))) }
                            td.wrap { (or_dash(at(row, 4).text())) }
                            td.wrap { (or_dash(at(row, 5).text())) }
                            td.wrap { (or_dash(at(row, 6).text())) }
                            td.wrap { (or_dash(at(row, 7).text())) }
                            td.wrap { (or_dash(at(row, 8).text())) }
                            td.wrap { (or_dash(at(row, 9).text())) }
                        }
                    }
                }
            }
        }
    }
}

fn decision(cell: &Cell) -> Markup {
    match cell.text() {
        Some(decision @ ("allow" | "deny")) => badge(decision, decision),
        other => or_dash(other),
    }
}

/// `/events/{seq}`: every column of the event, claims and conditions as indented JSON.
pub(crate) async fn event(
    State(dashboard): State<Arc<Dashboard>>,
    Path(seq): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Page, PageError> {
    Params::parse(raw.as_deref(), &[])?;
    let seq = match seq.parse::<i64>() {
        Ok(seq) if seq >= 1 => seq,
        _ => {
            return Err(PageError::BadRequest(format!(
                "`{}` is not an event's seq: expected a whole number from 1",
                seq.chars().take(40).collect::<String>()
            )));
        }
    };
    let _turn = dashboard.turn().await?;
    let events = dashboard
        .query(&format!(
            "SELECT * FROM access_events WHERE seq = {seq} ORDER BY node"
        ))
        .await?;
    if events.rows.is_empty() {
        return Err(PageError::NotFound(format!("no event has seq {seq}")));
    }
    let title = format!("Event {seq}");
    let body = html! {
        h1 { (title) }
        @for row in &events.rows {
            (event_fields(&events.columns, row))
        }
        p { a href="/events" { "← Access log" } }
    };
    Ok(layout::page(&title, Some(Section::AccessLog), body))
}

fn event_fields(columns: &[String], row: &[Cell]) -> Markup {
    html! {
        dl.fields {
            @for (idx, column) in columns.iter().enumerate() {
                @let cell = at(row, idx);
                dt { (column) }
                dd { (field_value(column, cell)) }
            }
        }
    }
}

fn field_value(column: &str, cell: &Cell) -> Markup {
    match (column, cell) {
        ("time", Cell::Time(time)) => html! { (format::precise_time(*time)) },
        ("decision", _) => decision(cell),
        ("claims" | "conditions", Cell::Text(text)) => html! { pre { (indented_json(text)) } },
        ("workload" | "target", Cell::Text(name)) => {
            html! { a href=(format::link("/events", &[(column, Some(name.clone()))])) { (name) } }
        }
        ("rule", Cell::Text(rule)) => html! { code { (rule) } },
        _ => or_dash(cell.show().as_deref()),
    }
}

/// JSON text indented for reading, or as it is when it is not JSON.
fn indented_json(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| text.to_owned())
}
