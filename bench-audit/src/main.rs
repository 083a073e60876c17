//! `portcullis-bench-audit`: records generated access events through the audit store and
//! times them to sealed Parquet, times `verify`, writes a month of history and asks it six
//! questions with Portcullis and with DuckDB, and prints a markdown report
//! (docs/audit-benchmarks.md holds one, with the method). Exits with status 1 when the two
//! engines answer a question differently, naming the question and the first differing row.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::{Duration as Days, NaiveDate};
use clap::Parser;
use portcullis_bench_audit::events::EventGen;
use portcullis_bench_audit::gate::{self, PolicyBundle};
use portcullis_bench_audit::history::{self, HistoryReport, HistorySpec};
use portcullis_bench_audit::ingest::{self, BatchPlan, IngestLine, Timeline};
use portcullis_bench_audit::integrity::{VerifyLine, timed_verify};
use portcullis_bench_audit::model::{Org, Platform, Sizes};
use portcullis_bench_audit::pages;
use portcullis_bench_audit::query::{self, QuestionParams};
use portcullis_bench_audit::report::{self, Goals, QueryLine, bytes, thousands};
use portcullis_bench_audit::rng::Rng;
use portcullis_bench_audit::system::{self, CpuClock};

/// The allocator of the `portcullis` binary, so that the store and the queries are measured
/// as the server and `portcullis audit query` run them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-bench-audit",
    about = "Audit store ingest to sealed Parquet, verify, and SQL against DuckDB on the same \
             files, on generated events"
)]
struct Args {
    /// Events recorded in the ingest store, and in the query store's month of history.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Directory for the generated stores; default: a new directory under /tmp.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the generated stores instead of deleting them.
    #[arg(long)]
    keep: bool,
    /// Events per `record_batch` call in the batched ingest.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Rounds of the batched ingest (each opens, records and closes); `verify` is timed after
    /// the first and the last.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Events generated for each of the shorter ingest lines (one event per `record`, and
    /// batches with a 5 ms flush interval).
    #[arg(long, default_value_t = 200_000)]
    short_events: u64,
    /// Time budget of each line that records one event per call, in seconds.
    #[arg(long, default_value_t = 10.0)]
    short_seconds: f64,
    /// Timed runs of each query per engine (after one untimed run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Workloads of the generated organisation.
    #[arg(long, default_value_t = 4_000)]
    workloads: usize,
    /// Targets of the generated organisation.
    #[arg(long, default_value_t = 400)]
    targets: usize,
    /// Days of history in the query store.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Seed of everything generated.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// The python with duckdb; default: `PORTCULLIS_TEST_PYTHON`, else the workspace's `.venv`.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Measure ingest and verify only.
    #[arg(long)]
    skip_query: bool,
    /// Leave out the ingest lines (and the verification of the ingest store).
    #[arg(long)]
    skip_ingest: bool,
    /// Time the dashboard's pages over the month of history, in place of the six questions
    /// asked of Portcullis and DuckDB.
    #[arg(long)]
    pages: bool,
}

/// The first day of the generated history. Fixed, so that runs on different days ask the same
/// questions of the same data.
const FIRST_DAY: (i32, u32, u32) = (2026, 11, 1);
/// Untimed runs of each query before the timed ones.
const WARMUP_RUNS: usize = 1;

fn main() -> ExitCode {
    let args = Args::parse();
    match check(&args).and_then(|()| bench(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &Args) -> Result<()> {
    if args.events == 0 || args.short_events == 0 {
        bail!("--events and --short-events must be at least 1");
    }
    if !(args.short_seconds.is_finite() && args.short_seconds > 0.0) {
        bail!("--short-seconds must be a positive number of seconds");
    }
    if args.batch == 0 || args.rounds == 0 || args.runs == 0 {
        bail!("--batch, --rounds and --runs must be at least 1");
    }
    if args.workloads < 200 || args.targets < 20 || args.days == 0 {
        bail!("--workloads must be at least 200, --targets at least 20, --days at least 1");
    }
    if args.days > 365 {
        bail!("--days must be at most 365");
    }
    Ok(())
}

fn bench(args: &Args) -> Result<()> {
    let mut scratch = Scratch::new(args.dir.as_deref(), args.keep)?;
    let command = std::iter::once("portcullis-bench-audit".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let sync = system::sync_latency(&scratch.root)?;
    let root = scratch.root.display().to_string();
    report::header(&command, &system::machine(), sync, &root);

    let mut rng = Rng::new(args.seed);
    eprintln!("[setup] generating the organisation and compiling its two policy versions");
    let sizes = Sizes {
        workloads: args.workloads,
        targets: args.targets,
    };
    let org = Org::generate(sizes, &mut rng.fork());
    let bundles = [gate::build(&org, false)?, gate::build(&org, true)?];
    report::organisation(&describe_org(&org, &bundles));

    // Ingest records what the server would today: decisions of the second version.
    let hashes = bundles.clone().map(|bundle| bundle.hash);
    let mut events = EventGen::new(&org, hashes, rng.next_u64());
    events.use_second(true);
    let (lines, mut verified) = if args.skip_ingest {
        (Vec::new(), Vec::new())
    } else {
        ingest_lines(args, &mut scratch, &mut events, CpuClock::new())?
    };
    if !lines.is_empty() {
        report::ingest(&lines, &events.mix);
    }
    let mut goals = Goals {
        ingest: lines.first().cloned(),
        verify: match verified.as_slice() {
            [small, large] => Some((small.clone(), large.clone())),
            _ => None,
        },
        queries: Vec::new(),
    };
    if !args.skip_query {
        let seed = rng.next_u64();
        history_and_queries(
            args,
            &mut scratch,
            &org,
            &bundles,
            seed,
            &mut verified,
            &mut goals,
        )?;
    } else if !verified.is_empty() {
        report::verify(&verified);
    }
    report::goals(&goals);
    // The report is printed first, with the difference in its table; then the run fails.
    for line in &goals.queries {
        if let Some(why) = &line.mismatch {
            bail!(
                "Portcullis and DuckDB answer `{}` differently: {why}",
                line.name
            );
        }
    }
    Ok(())
}

/// Writes the month of history, verifies it, and asks the six questions of both engines.
fn history_and_queries(
    args: &Args,
    scratch: &mut Scratch,
    org: &Org,
    bundles: &[PolicyBundle; 2],
    seed: u64,
    verified: &mut Vec<VerifyLine>,
    goals: &mut Goals,
) -> Result<()> {
    let history_dir = scratch.child("history")?;
    let spec = HistorySpec {
        events: args.events,
        first_day: first_day()?,
        days: args.days,
        switch_day: args.days * 2 / 5,
        seed,
    };
    eprintln!(
        "[history] writing {} events over {} days",
        args.events, args.days
    );
    let written = history::write(&history_dir, org, [&bundles[0], &bundles[1]], spec)?;
    verified.push(timed_verify(&history_dir, "query store (history)")?);
    report::verify(verified);
    if args.pages {
        // The controls' pages show a report: the one this evaluation keeps, timed itself.
        let evaluation = pages::evaluate_compliance(&history_dir)?;
        pages::report_evaluation(&evaluation);
        let paths = pages::pages(&history_dir, args.days)?;
        let lines = pages::time_pages(&history_dir, &paths, WARMUP_RUNS, args.runs)?;
        pages::report(&lines, args.runs);
        return Ok(());
    }
    queries(args, scratch, &history_dir, org, spec, &written, goals)
}

/// The batched ingest at full size (with `verify` after its first and last round), then the
/// shorter lines; each store is deleted after use unless `--keep`.
fn ingest_lines(
    args: &Args,
    scratch: &mut Scratch,
    events: &mut EventGen<'_>,
    clock: CpuClock,
) -> Result<(Vec<IngestLine>, Vec<VerifyLine>)> {
    let dir = scratch.child("ingest")?;
    let month = i64::from(args.days) * 86_400;
    let mut timeline = Timeline::new(chrono::Utc::now().timestamp(), month, args.events);
    let plan = BatchPlan {
        label: format!(
            "`record_batch` of {}, flush_interval 0 (default)",
            args.batch
        ),
        events: args.events,
        batch: args.batch,
        rounds: args.rounds,
        flush_interval: Duration::ZERO,
    };
    let mut verified = Vec::new();
    let rounds = args.rounds;
    let mut after_round = |round: u32, so_far: u64| -> Result<()> {
        if round == 1 && rounds > 1 {
            let store = format!("ingest store after round 1 ({} events)", thousands(so_far));
            verified.push(timed_verify(&dir, &store)?);
        }
        Ok(())
    };
    let mut lines = vec![ingest::batched(
        &dir,
        events,
        &mut timeline,
        &plan,
        clock,
        &mut after_round,
    )?];
    verified.push(timed_verify(&dir, "ingest store, whole")?);
    scratch.done_with(&dir)?;

    let five_ms = Duration::from_millis(5);
    let short = BatchPlan {
        label: format!("`record_batch` of {}, flush_interval 5 ms", args.batch),
        events: args.short_events,
        batch: args.batch,
        rounds: 1,
        flush_interval: five_ms,
    };
    let dir = scratch.child("ingest-batch-5ms")?;
    lines.push(ingest::batched(
        &dir,
        events,
        &mut timeline,
        &short,
        clock,
        &mut |_, _| Ok(()),
    )?);
    scratch.done_with(&dir)?;

    let budget = Duration::from_secs_f64(args.short_seconds);
    for (name, label, flush) in [
        (
            "ingest-one-strict",
            "`record`, one event per call, flush_interval 0 (default)",
            Duration::ZERO,
        ),
        (
            "ingest-one-5ms",
            "`record`, one event per call, flush_interval 5 ms",
            five_ms,
        ),
    ] {
        eprintln!("[ingest] {label}");
        let dir = scratch.child(name)?;
        let pending =
            ingest::generate_batches(events, &mut timeline, args.short_events, usize::MAX);
        let pending = pending.into_iter().flatten().collect();
        lines.push(ingest::one_at_a_time(
            &dir, label, pending, flush, budget, clock,
        )?);
        scratch.done_with(&dir)?;
    }
    Ok((lines, verified))
}

/// The six questions, by Portcullis and by DuckDB; a difference is in `goals.queries`.
fn queries(
    args: &Args,
    scratch: &mut Scratch,
    history_dir: &Path,
    org: &Org,
    spec: HistorySpec,
    written: &HistoryReport,
    goals: &mut Goals,
) -> Result<()> {
    let rules_path = scratch.child("rules.parquet")?;
    let rules = query::export_rules(history_dir, &rules_path)?;
    let params = question_params(org, spec);
    let questions = query::questions(&params);
    let fixed = query::fixed_cost(history_dir, args.runs)?;
    let work = scratch.child("duckdb")?;
    fs::create_dir(&work).with_context(|| format!("cannot create `{}`", work.display()))?;
    let python = query::find_python(args.python.as_deref());
    let compared = query::compare(
        &python,
        history_dir,
        &rules_path,
        &work,
        &questions,
        WARMUP_RUNS,
        args.runs,
    )?;
    for (question, (mine, theirs)) in questions.iter().zip(&compared.answers) {
        let mismatch = query::difference(&mine.rows, &theirs.rows);
        goals
            .queries
            .push(QueryLine::new(question, mine, theirs, mismatch));
    }
    let segments = system::segments(history_dir)?;
    report::history(&describe_history(
        spec, written, segments, &params, rules, fixed,
    ));
    report::queries(&goals.queries, &questions, &compared, args.runs);
    Ok(())
}

/// Question 3 asks about the main subject of a moderately busy workload (the 100th of 4,000
/// by traffic) over the history's third week.
fn question_params(org: &Org, spec: HistorySpec) -> QuestionParams {
    let idx = (org.workloads.len() / 40).min(org.workloads.len().saturating_sub(1));
    let subject = org
        .workloads
        .get(idx)
        .and_then(|workload| workload.subjects.first())
        .cloned()
        .unwrap_or_default();
    let from_day = (spec.days / 3).min(spec.days.saturating_sub(1));
    let from = spec.first_day + Days::days(i64::from(from_day));
    let to = from + Days::days(7);
    QuestionParams {
        subject,
        from: format!("{from} 00:00:00"),
        to: format!("{to} 00:00:00"),
    }
}

fn first_day() -> Result<NaiveDate> {
    let (year, month, day) = FIRST_DAY;
    NaiveDate::from_ymd_opt(year, month, day).context("the first day of the history is invalid")
}

fn describe_org(org: &Org, bundles: &[PolicyBundle; 2]) -> String {
    let platforms = [
        (Platform::Github, "GitHub Actions"),
        (Platform::Kubernetes, "Kubernetes"),
        (Platform::Gitlab, "GitLab"),
        (Platform::Terraform, "HCP Terraform"),
        (Platform::Spiffe, "SPIFFE"),
    ];
    let shares: Vec<String> = platforms
        .iter()
        .map(|(platform, name)| {
            let n = org
                .workloads
                .iter()
                .filter(|w| w.platform == *platform)
                .count();
            format!("{} {name}", thousands(n as u64))
        })
        .collect();
    let subjects: usize = org.workloads.iter().map(|w| w.subjects.len()).sum();
    let [first, second] = bundles;
    format!(
        "{} workloads ({}), {} subjects, {} targets, {} credentials; policy version 1 has {} \
         rules ({} of Gate, bundle {}), version 2 {} rules (bundle {})",
        thousands(org.workloads.len() as u64),
        shares.join(", "),
        thousands(subjects as u64),
        thousands(org.targets.len() as u64),
        thousands(org.credentials.len() as u64),
        thousands(first.rules as u64),
        bytes(first.source_bytes as u64),
        bytes(first.bytes.len() as u64),
        thousands(second.rules as u64),
        bytes(second.bytes.len() as u64),
    )
}

fn describe_history(
    spec: HistorySpec,
    written: &HistoryReport,
    segments: system::Segments,
    params: &QuestionParams,
    rules: usize,
    fixed_cost: f64,
) -> String {
    let last_day = spec.first_day + Days::days(i64::from(spec.days.saturating_sub(1)));
    let switch = spec.first_day + Days::days(i64::from(spec.switch_day));
    let seal_rate = written.events as f64 / written.seal_seconds.max(1e-9);
    [
        format!(
            "- The query store: {} events from {} to {} ({} date partitions; mix: {}).",
            thousands(written.events),
            spec.first_day,
            last_day,
            segments.partitions,
            report::mix(&written.mix),
        ),
        format!(
            "- Written in {:.1} s with the store's segment writer, {} events per seal: {} \
             segments, {} of Parquet, {:.1} bytes per event. Of that time, {:.1} s went to \
             `write_segments` itself, which is sealing alone on one thread: {} events/s.",
            written.seconds,
            thousands(history::SEAL_EVENTS as u64),
            thousands(segments.files),
            bytes(segments.bytes),
            segments.bytes as f64 / written.events.max(1) as f64,
            written.seal_seconds,
            thousands(seal_rate as u64),
        ),
        format!(
            "- Version 2 of the policy took effect on {switch} at 10:00 UTC; the `rules` table \
             holds {} rows (both versions), written to Parquet for DuckDB.",
            thousands(rules as u64),
        ),
        format!(
            "- Question 3 asks for `{}` from {} to {}.",
            params.subject, params.from, params.to
        ),
        format!(
            "- A Portcullis query that reads only the policy state (`SELECT count(*) FROM \
             rules`) takes {}: the part of every Portcullis time below spent listing the \
             segments and decoding the archived bundles.",
            report::duration(fixed_cost),
        ),
    ]
    .join("\n")
}

/// The directories the benchmark writes; each is removed once done with, and all at the end
/// (also on an error), unless `--keep`. Only what this run created is ever removed.
struct Scratch {
    root: PathBuf,
    created_root: bool,
    keep: bool,
    children: Vec<PathBuf>,
}

impl Scratch {
    fn new(dir: Option<&Path>, keep: bool) -> Result<Scratch> {
        let (root, must_be_new) = match dir {
            Some(dir) => (dir.to_owned(), false),
            None => {
                let name = format!("portcullis-bench-audit-{}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        let existed = root.exists();
        if existed && must_be_new {
            bail!("`{}` exists already", root.display());
        }
        fs::create_dir_all(&root).with_context(|| format!("cannot create `{}`", root.display()))?;
        Ok(Scratch {
            root,
            created_root: !existed,
            keep,
            children: Vec::new(),
        })
    }

    /// A path for a new store or file under the root; refused if it exists, so that nothing
    /// this run did not create is ever removed.
    fn child(&mut self, name: &str) -> Result<PathBuf> {
        let path = self.root.join(name);
        if path.exists() {
            bail!(
                "`{}` exists already; remove it or choose another --dir",
                path.display()
            );
        }
        self.children.push(path.clone());
        Ok(path)
    }

    /// Removes a store as soon as it is no longer needed, unless `--keep`.
    fn done_with(&mut self, path: &Path) -> Result<()> {
        if self.keep {
            return Ok(());
        }
        remove(path)?;
        self.children.retain(|child| child != path);
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("[done] the stores are kept under `{}`", self.root.display());
            return;
        }
        for child in &self.children {
            if let Err(error) = remove(child) {
                eprintln!("warning: {error:#}");
            }
        }
        if self.created_root
            && let Err(error) = fs::remove_dir(&self.root)
        {
            eprintln!("warning: cannot remove `{}`: {error}", self.root.display());
        }
    }
}

fn remove(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("cannot remove `{}`", path.display()))
        }
        _ => Ok(()),
    }
}
