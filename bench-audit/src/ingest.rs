//! Ingest: events from the decision to sealed Parquet through [`AuditLog`], timed.
//!
//! Events are generated first, untimed, already cut into the batches `record_batch` takes.
//! The clock starts at the first `record` and stops when `close` returns, so it covers the
//! write-ahead log (with its syncs), the background seals that run meanwhile, and the final
//! seal of what is left: every event is in a chained Parquet segment when the clock stops.
//! Opening the store is not timed (a server opens it once).
//!
//! A large run is recorded in rounds — open, record a round's events, close — so that only one
//! round's events are in memory at a time, and the rounds' times are added up. Between rounds
//! the store is closed, so no background seal runs while the next round is generated. Each
//! round is a restart of the server, which seals its last, partly filled log file: a round of a
//! million events makes about one segment more than an uninterrupted run would.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow};
use portcullis_audit::store::WAL_DIR;
use portcullis_audit::{AuditLog, AuditOptions, NewEvent};

use crate::events::EventGen;
use crate::system::{self, CpuClock, Segments};

/// The node name the ingest stores record.
const NODE: &str = "bench-node-1";

/// One line of the ingest table.
#[derive(Debug, Clone)]
pub struct IngestLine {
    pub label: String,
    pub events: u64,
    pub rounds: u32,
    pub seconds: f64,
    /// CPU seconds of the whole process (recording thread, sealer, timer) over the same span,
    /// less the benchmark's own monitor thread.
    pub cpu_seconds: Option<f64>,
    /// Of those, the recording thread's (which calls `record` and, in strict mode, waits for
    /// the syncs it leads) and the rest, the store's own threads: the sealer (`audit-seal`)
    /// with the helpers that encode a segment's columns beside it (`audit-encode`), and the
    /// timer.
    pub recording_cpu: Option<f64>,
    pub sealing_cpu: Option<f64>,
    pub segments: Segments,
    /// The most bytes the write-ahead log directory held at once.
    pub wal_peak: u64,
    /// Whether the time budget ended the run before every generated event was recorded.
    pub stopped_early: bool,
}

impl IngestLine {
    pub fn per_second(&self) -> f64 {
        rate(self.events, self.seconds)
    }

    pub fn per_cpu_second(&self) -> Option<f64> {
        self.cpu_seconds.map(|cpu| rate(self.events, cpu))
    }
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// How a batched run goes.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub label: String,
    pub events: u64,
    pub batch: usize,
    pub rounds: u32,
    pub flush_interval: Duration,
}

/// Records `plan.events` generated events with `record_batch`, in rounds; `after_round` runs
/// after each round's `close`, untimed, with the round's number (from 1) and the events
/// recorded so far.
pub fn batched(
    data_dir: &Path,
    events: &mut EventGen<'_>,
    timeline: &mut Timeline,
    plan: &BatchPlan,
    clock: CpuClock,
    after_round: &mut dyn FnMut(u32, u64) -> Result<()>,
) -> Result<IngestLine> {
    let rounds = plan.rounds.max(1);
    let mut line = IngestLine {
        label: plan.label.clone(),
        events: 0,
        rounds,
        seconds: 0.0,
        cpu_seconds: Some(0.0),
        recording_cpu: Some(0.0),
        sealing_cpu: Some(0.0),
        segments: Segments::default(),
        wal_peak: 0,
        stopped_early: false,
    };
    for round in 0..rounds {
        let count = round_share(plan.events, rounds, round);
        eprintln!(
            "[ingest] {}: generating round {} of {rounds} ({count} events)",
            plan.label,
            round + 1
        );
        let batches = generate_batches(events, timeline, count, plan.batch);
        let options = options(plan.flush_interval);
        let timed = timed_run(data_dir, options, clock, |log| {
            for batch in batches {
                log.record_batch(batch)
                    .map_err(|e| anyhow!("record_batch: {e}"))?;
            }
            Ok(())
        })?;
        line.events += count;
        line.seconds += timed.seconds;
        line.cpu_seconds = add(line.cpu_seconds, timed.cpu_seconds);
        line.recording_cpu = add(line.recording_cpu, timed.recording_cpu);
        line.sealing_cpu = add(line.sealing_cpu, timed.sealing_cpu);
        line.wal_peak = line.wal_peak.max(timed.wal_peak);
        after_round(round + 1, line.events)?;
    }
    line.segments = system::segments(data_dir)?;
    Ok(line)
}

/// Records pre-generated events one `record` call at a time, until they are all recorded or
/// `budget` has passed, then closes. Slow durability settings record only part of them.
pub fn one_at_a_time(
    data_dir: &Path,
    label: &str,
    events: Vec<NewEvent>,
    flush_interval: Duration,
    budget: Duration,
    clock: CpuClock,
) -> Result<IngestLine> {
    let generated = events.len() as u64;
    let mut recorded = 0u64;
    let mut rest = events.into_iter();
    let timed = timed_run(data_dir, options(flush_interval), clock, |log| {
        let started = Instant::now();
        for event in rest.by_ref() {
            log.record(event).map_err(|e| anyhow!("record: {e}"))?;
            recorded += 1;
            if recorded.is_multiple_of(64) && started.elapsed() >= budget {
                break;
            }
        }
        Ok(())
    })?;
    // The events not recorded are dropped only now, outside the timed span.
    drop(rest);
    Ok(IngestLine {
        label: label.to_owned(),
        events: recorded,
        rounds: 1,
        seconds: timed.seconds,
        cpu_seconds: timed.cpu_seconds,
        recording_cpu: timed.recording_cpu,
        sealing_cpu: timed.sealing_cpu,
        segments: system::segments(data_dir)?,
        wal_peak: timed.wal_peak,
        stopped_early: recorded < generated,
    })
}

fn add(total: Option<f64>, more: Option<f64>) -> Option<f64> {
    total.zip(more).map(|(a, b)| a + b)
}

/// The times of the requests the ingest's events are generated for. The store stamps `time`
/// itself, but the claims follow the request (token times, the CI job or pod of the moment):
/// requests spread over a month at the query store's pace give the claims a month's variety.
/// Had they all been made now, every workload's events would share one job, and the `claims`
/// column would compress far better than real traffic does.
#[derive(Debug, Clone)]
pub struct Timeline {
    start: i64,
    seconds_per_event: f64,
    drawn: u64,
}

impl Timeline {
    /// `events` requests over the `span_s` seconds before `end` (Unix seconds); more keep the
    /// same pace past `end`.
    pub fn new(end: i64, span_s: i64, events: u64) -> Timeline {
        Timeline {
            start: end - span_s,
            seconds_per_event: span_s as f64 / events.max(1) as f64,
            drawn: 0,
        }
    }

    fn next(&mut self) -> i64 {
        let offset = (self.drawn as f64 * self.seconds_per_event) as i64;
        self.drawn += 1;
        self.start + offset
    }
}

/// `count` events, cut into batches of `batch`.
pub fn generate_batches(
    events: &mut EventGen<'_>,
    timeline: &mut Timeline,
    count: u64,
    batch: usize,
) -> Vec<Vec<NewEvent>> {
    let batch = batch.max(1);
    let mut batches = Vec::with_capacity((count as usize).div_ceil(batch));
    let mut left = count;
    while left > 0 {
        let size = left.min(batch as u64);
        batches.push((0..size).map(|_| events.next(timeline.next())).collect());
        left -= size;
    }
    batches
}

/// The events of round `round` out of `rounds`, the remainder in the last.
fn round_share(total: u64, rounds: u32, round: u32) -> u64 {
    let share = total / u64::from(rounds);
    if round + 1 == rounds {
        total - share * u64::from(rounds - 1)
    } else {
        share
    }
}

/// The default options, but for the flush interval.
fn options(flush_interval: Duration) -> AuditOptions {
    AuditOptions {
        flush_interval,
        ..AuditOptions::new(NODE)
    }
}

struct Timed {
    seconds: f64,
    cpu_seconds: Option<f64>,
    recording_cpu: Option<f64>,
    sealing_cpu: Option<f64>,
    wal_peak: u64,
}

/// Opens the store (untimed), then times `record` and the `close` that seals everything.
fn timed_run(
    data_dir: &Path,
    options: AuditOptions,
    clock: CpuClock,
    record: impl FnOnce(&AuditLog) -> Result<()>,
) -> Result<Timed> {
    let (log, _) = AuditLog::open(data_dir, options)
        .with_context(|| format!("cannot open the store `{}`", data_dir.display()))?;
    let monitor = Monitor::start(data_dir.join(WAL_DIR), clock);
    let cpu_before = clock.seconds();
    let thread_before = clock.this_thread_seconds();
    let started = Instant::now();
    let recorded = record(&log);
    let closed = log.close();
    let seconds = started.elapsed().as_secs_f64();
    let since = |after: Option<f64>, before: Option<f64>| after.zip(before).map(|(a, b)| a - b);
    let process_cpu = since(clock.seconds(), cpu_before);
    let recording_cpu = since(clock.this_thread_seconds(), thread_before);
    let seen = monitor.stop();
    let cpu_seconds = process_cpu.map(|cpu| cpu - seen.own_cpu.unwrap_or(0.0));
    // The encoding helpers live for one segment each, too briefly to sample; the process's
    // total less the recording thread counts them exactly.
    let sealing_cpu = since(cpu_seconds, recording_cpu);
    recorded?;
    closed.map_err(|e| anyhow!("close: {e}"))?;
    Ok(Timed {
        seconds,
        cpu_seconds,
        recording_cpu,
        sealing_cpu,
        wal_peak: seen.wal_peak,
    })
}

/// Samples, every few milliseconds, the size of the write-ahead log directory, keeping the
/// peak; a peak shorter than the interval can be missed.
struct Monitor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

/// What [`Monitor`] saw.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    wal_peak: u64,
    /// The monitor's own CPU time, which is not the store's.
    own_cpu: Option<f64>,
}

/// How often [`Monitor`] looks.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(5);

impl Monitor {
    fn start(wal_dir: PathBuf, clock: CpuClock) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("bench-monitor".to_owned())
            .spawn(move || {
                let mut seen = Seen::default();
                while !stopping.load(Ordering::Relaxed) {
                    seen.wal_peak = seen.wal_peak.max(system::dir_bytes(&wal_dir));
                    thread::sleep(SAMPLE_INTERVAL);
                }
                seen.own_cpu = clock.this_thread_seconds();
                seen
            })
            .ok();
        Monitor { stop, thread }
    }

    /// What it saw; nothing if the thread could not start.
    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_spreads_requests_evenly() {
        let mut timeline = Timeline::new(1_000, 100, 10);
        let times: Vec<i64> = (0..11).map(|_| timeline.next()).collect();
        assert_eq!(times[0], 900);
        assert_eq!(times[5], 950);
        assert_eq!(times[10], 1_000);
    }

    #[test]
    fn rounds_add_up() {
        let shares: Vec<u64> = (0..3).map(|round| round_share(10, 3, round)).collect();
        assert_eq!(shares, [3, 3, 4]);
        assert_eq!(round_share(7, 1, 0), 7);
    }
}
