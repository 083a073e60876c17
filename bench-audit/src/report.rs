//! The report, as markdown on stdout: a header (command, machine, disk), then ingest, verify
//! and query sections, then the goals of issue #5. Headings start at level 3, so that it
//! pastes as it is under a heading of docs/audit-benchmarks.md.

use crate::events::{Mix, Outcome};
use crate::ingest::IngestLine;
use crate::integrity::VerifyLine;
use crate::query::{Answer, Comparison, Question};
use crate::system::{Segments, median};

/// The ingest goal of issue #5, events per second on one core.
pub const INGEST_GOAL: f64 = 200_000.0;
/// The query goal: no question slower than this many times DuckDB.
pub const QUERY_GOAL: f64 = 1.5;
/// Verification is "proportional to the data" when its time per event at the larger size is
/// within this factor of its time per event at the smaller, either way.
pub const PROPORTIONAL_WITHIN: f64 = 1.5;

pub fn header(command: &str, machine: &str, sync_seconds: f64, dir: &str) {
    let build = if cfg!(debug_assertions) {
        "**debug build: the numbers mean nothing, run with `--release`**"
    } else {
        "release build"
    };
    println!("- command: `{command}`");
    println!("- machine: {machine}");
    println!(
        "- {build}; stores under `{dir}`; a 4 KiB write and `fdatasync` there take {} \
         (median of 50), the least a strict-mode group commit waits",
        duration(sync_seconds)
    );
}

pub fn organisation(text: &str) {
    println!("- generated organisation: {text}");
    println!();
}

pub fn mix(mix: &Mix) -> String {
    let parts: Vec<String> = Outcome::ALL
        .iter()
        .zip(mix.counts)
        .filter(|(_, count)| *count > 0)
        .map(|(outcome, count)| {
            // A handful of events (the policy changes) would read as 0.0 %: give the count.
            if count * 10_000 < mix.events {
                format!("{} {}", thousands(count), outcome.label())
            } else {
                format!("{} {}", percent(count, mix.events), outcome.label())
            }
        })
        .collect();
    let claims = mix.claims_bytes.checked_div(mix.events).unwrap_or(0);
    format!(
        "{}; `claims` text {} bytes on average",
        parts.join(", "),
        thousands(claims)
    )
}

pub fn ingest(lines: &[IngestLine], generated: &Mix) {
    println!("### Ingest\n");
    println!(
        "Events generated in memory before the clock starts: {}. Time runs from the first \
         `record` to the return of `close`, which seals every event into a chained Parquet \
         segment.\n",
        mix(generated)
    );
    println!(
        "| how | events | seconds | events/s | CPU seconds (recording, sealing) | events per \
         CPU-second | Parquet bytes/event | WAL peak | segments |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for line in lines {
        let seconds =
            |cpu: Option<f64>| cpu.map_or_else(|| "–".to_owned(), |cpu| format!("{cpu:.2}"));
        let cpu = format!(
            "{} ({}, {})",
            seconds(line.cpu_seconds),
            seconds(line.recording_cpu),
            seconds(line.sealing_cpu)
        );
        let per_cpu = line
            .per_cpu_second()
            .map_or_else(|| "–".to_owned(), |rate| thousands(rate as u64));
        let mut label = line.label.clone();
        if line.rounds > 1 {
            label.push_str(&format!(", in {} rounds", line.rounds));
        }
        if line.stopped_early {
            label.push_str(" (stopped by the time budget)");
        }
        println!(
            "| {label} | {} | {:.2} | {} | {cpu} | {per_cpu} | {} | {} | {} |",
            thousands(line.events),
            line.seconds,
            thousands(line.per_second() as u64),
            bytes_per_event(line.segments, line.events),
            bytes(line.wal_peak),
            thousands(line.segments.files),
        );
    }
    println!();
}

pub fn verify(lines: &[VerifyLine]) {
    println!("### Verify\n");
    println!(
        "`portcullis_audit::verify::verify` (what `portcullis audit verify` runs) on closed \
         stores, against the store's own public key; the segments were just written, so they \
         are read from the page cache.\n"
    );
    println!("| store | events | segments | Parquet | seconds | MB/s | events/s | µs per event |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for line in lines {
        println!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {} | {:.3} |",
            line.store,
            thousands(line.events),
            thousands(line.segments),
            bytes(line.bytes),
            line.seconds,
            line.bytes_per_second() / 1e6,
            thousands(line.events_per_second() as u64),
            line.micros_per_event()
        );
    }
    println!();
}

/// What the history store holds, before the query table.
pub fn history(text: &str) {
    println!("### Query\n");
    println!("{text}\n");
}

/// One question's outcome, for the query table and the goals.
#[derive(Debug, Clone)]
pub struct QueryLine {
    pub name: String,
    pub rows: usize,
    pub portcullis: f64,
    pub duckdb: f64,
    /// Why the answers differ, when they do.
    pub mismatch: Option<String>,
}

impl QueryLine {
    pub fn new(
        question: &Question,
        ours: &Answer,
        theirs: &Answer,
        mismatch: Option<String>,
    ) -> Self {
        QueryLine {
            name: question.name.to_owned(),
            rows: ours.rows.len(),
            portcullis: median(&mut ours.seconds.clone()),
            duckdb: median(&mut theirs.seconds.clone()),
            mismatch,
        }
    }

    pub fn ratio(&self) -> f64 {
        if self.duckdb > 0.0 {
            self.portcullis / self.duckdb
        } else {
            f64::INFINITY
        }
    }
}

pub fn queries(lines: &[QueryLine], questions: &[Question], compared: &Comparison, runs: usize) {
    println!(
        "Each question: one untimed run, then {runs} timed runs per engine, the engines taking \
         turns run by run; the median. Portcullis: `query_with_limits` with the default limits, \
         a new session per query as the command and the server make; DuckDB {} ({} threads) in \
         the project's venv, `execute` + `fetch_arrow_table` timed in python. The answers of \
         the last run are compared value by value.\n",
        compared.duckdb_version, compared.duckdb_threads
    );
    println!(
        "| question | rows | Portcullis | DuckDB | Portcullis ÷ DuckDB | within {QUERY_GOAL}× | \
         same answer |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | --- | --- |");
    for line in lines {
        let within = if line.ratio() <= QUERY_GOAL {
            "yes"
        } else {
            "**no**"
        };
        let same = match &line.mismatch {
            None => "yes".to_owned(),
            Some(why) => format!("**no**: {why}"),
        };
        println!(
            "| {} | {} | {} | {} | {} | {within} | {same} |",
            line.name,
            thousands(line.rows as u64),
            duration(line.portcullis),
            duration(line.duckdb),
            ratio(line.ratio())
        );
    }
    println!();
    println!("The questions:\n");
    for (idx, question) in questions.iter().enumerate() {
        println!("{}. {}: `{}`", idx + 1, question.name, question.sql);
    }
    println!();
}

/// The verdict on each goal.
#[derive(Debug, Clone)]
pub struct Goals {
    pub ingest: Option<IngestLine>,
    pub verify: Option<(VerifyLine, VerifyLine)>,
    pub queries: Vec<QueryLine>,
}

pub fn goals(goals: &Goals) {
    // A run that measured none of them (the dashboard's pages) has no table to print.
    if goals.ingest.is_none() && goals.verify.is_none() && goals.queries.is_empty() {
        return;
    }
    println!("### Goals of issue #5\n");
    println!("| goal | measured | met |");
    println!("| --- | --- | --- |");
    if let Some(line) = &goals.ingest {
        let wall = line.per_second();
        let per_cpu = line.per_cpu_second().unwrap_or(0.0);
        // On one core: the rate must hold in wall time and fit in one CPU-second per second.
        let met = wall.min(per_cpu) >= INGEST_GOAL;
        println!(
            "| ingest ≥ {} events/s on one core, default durability | {} events/s; {} per \
             CPU-second ({}) | {} |",
            thousands(INGEST_GOAL as u64),
            thousands(wall as u64),
            thousands(per_cpu as u64),
            line.label,
            yes_no(met)
        );
    }
    if let Some((small, large)) = &goals.verify {
        let factor = large.micros_per_event() / small.micros_per_event().max(f64::MIN_POSITIVE);
        let met = (1.0 / PROPORTIONAL_WITHIN..=PROPORTIONAL_WITHIN).contains(&factor);
        println!(
            "| verify in time proportional to the data | {:.3} µs per event at {} events, \
             {:.3} at {} ({factor:.2}×) | {} |",
            small.micros_per_event(),
            thousands(small.events),
            large.micros_per_event(),
            thousands(large.events),
            yes_no(met)
        );
    }
    if let Some(worst) = goals
        .queries
        .iter()
        .max_by(|a, b| a.ratio().total_cmp(&b.ratio()))
    {
        let met = goals.queries.iter().all(|line| line.ratio() <= QUERY_GOAL);
        println!(
            "| no query slower than {QUERY_GOAL}× DuckDB | slowest relative to DuckDB: {} at {} \
             | {} |",
            worst.name,
            ratio(worst.ratio()),
            yes_no(met)
        );
    }
    println!();
}

/// A ratio with two decimals, or three when two would round it onto the goal and hide on
/// which side of it the ratio is.
fn ratio(value: f64) -> String {
    let short = format!("{value:.2}");
    if short == format!("{QUERY_GOAL:.2}") && value != QUERY_GOAL {
        format!("{value:.3}×")
    } else {
        format!("{short}×")
    }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

fn bytes_per_event(segments: Segments, events: u64) -> String {
    if events == 0 {
        return "–".to_owned();
    }
    format!("{:.1}", segments.bytes as f64 / events as f64)
}

fn percent(count: u64, total: u64) -> String {
    if total == 0 {
        return "0 %".to_owned();
    }
    format!("{:.1} %", count as f64 * 100.0 / total as f64)
}

/// A duration in the unit that suits it.
pub fn duration(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

/// Bytes in binary units.
pub fn bytes(count: u64) -> String {
    let value = count as f64;
    if value >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", value / (1024.0 * 1024.0 * 1024.0))
    } else if value >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", value / (1024.0 * 1024.0))
    } else if value >= 1024.0 {
        format!("{:.1} KiB", value / 1024.0)
    } else {
        format!("{count} B")
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(0.0123), "12.3 ms");
        assert_eq!(duration(2.5), "2.50 s");
        assert_eq!(duration(0.000_05), "50 µs");
        assert_eq!(ratio(2.345), "2.35×");
        assert_eq!(ratio(1.5017), "1.502×");
        assert_eq!(ratio(1.5), "1.50×");
    }
}
