//! Timing one engine on one thread, in two phases that share its time budget.
//!
//! - **Latency**: each decision is timed on its own between two `Instant::now()` reads. The
//!   cost of the reads themselves ([`timer_overhead`], the median of back-to-back pairs) is
//!   subtracted from the median and the 99th percentile, so they estimate the decision alone.
//! - **Throughput**: decisions run in batches with one clock read per batch (the batch grows
//!   until it lasts at least [`MIN_BATCH`]); decisions per second is the number decided over
//!   the phase's wall time.
//!
//! Both phases cycle through the sample's requests in order, after a short warm-up. An engine
//! slower than the budget still decides at least one request in each phase.
//!
//! [`throughput_slice`] times one short turn of the throughput phase, for measurements that
//! take turns (`run::alternate`), so that a change in the machine's speed meets both sides.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// The shortest batch of the throughput phase, so that clock reads cost nothing measurable.
const MIN_BATCH: Duration = Duration::from_micros(200);

/// At most this many latency samples are kept (8 bytes each).
const MAX_SAMPLES: usize = 4_000_000;

/// Share of the budget spent warming up, before either phase.
const WARM_UP_SHARE: f64 = 0.05;

#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    /// Decisions timed one by one.
    pub latency_samples: usize,
    pub median_ns: f64,
    pub p99_ns: f64,
    /// Decisions run in the throughput phase.
    pub throughput_decisions: u64,
    pub per_second: f64,
}

impl Timing {
    /// Every decision measured, in both phases.
    pub fn decisions(&self) -> u64 {
        self.latency_samples as u64 + self.throughput_decisions
    }
}

/// The median time, in nanoseconds, between two consecutive `Instant::now()` reads.
pub fn timer_overhead() -> f64 {
    let mut samples: Vec<u64> = (0..100_000)
        .map(|_| {
            let start = Instant::now();
            let end = Instant::now();
            nanos(end - start)
        })
        .collect();
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or(0) as f64
}

/// Times `decide` over request indexes 0, 1, 2, … within `budget`; `overhead_ns` is
/// [`timer_overhead`].
pub fn measure(
    budget: Duration,
    overhead_ns: f64,
    mut decide: impl FnMut(usize) -> bool,
) -> Timing {
    let mut next = 0usize;
    let warm_up = budget.mul_f64(WARM_UP_SHARE);
    let started = Instant::now();
    while started.elapsed() < warm_up {
        black_box(decide(next));
        next += 1;
    }
    let phase = budget.mul_f64((1.0 - WARM_UP_SHARE) / 2.0);
    let mut timing = latency(phase, overhead_ns, &mut next, &mut decide);
    let (decided, elapsed) = throughput(phase, &mut next, &mut decide);
    timing.throughput_decisions = decided;
    timing.per_second = decided as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    timing
}

/// Decisions per second over one slice of `phase` (after a warm-up of a tenth of it), going on
/// from request `next`: one turn of a measurement that takes turns between engines or sizes.
pub fn throughput_slice(
    phase: Duration,
    next: &mut usize,
    mut decide: impl FnMut(usize) -> bool,
) -> f64 {
    let warm_up = phase / 10;
    let started = Instant::now();
    while started.elapsed() < warm_up {
        black_box(decide(*next));
        *next += 1;
    }
    let (decided, elapsed) = throughput(phase, next, &mut decide);
    decided as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

fn latency(
    phase: Duration,
    overhead_ns: f64,
    next: &mut usize,
    decide: &mut impl FnMut(usize) -> bool,
) -> Timing {
    let mut samples = Vec::new();
    let started = Instant::now();
    loop {
        let before = Instant::now();
        black_box(decide(*next));
        let after = Instant::now();
        *next += 1;
        samples.push(nanos(after - before));
        if after - started >= phase || samples.len() >= MAX_SAMPLES {
            break;
        }
    }
    samples.sort_unstable();
    let at = |quantile: f64| {
        let rank = ((samples.len() as f64 * quantile).ceil() as usize).saturating_sub(1);
        let sample = samples.get(rank).copied().unwrap_or(0) as f64;
        (sample - overhead_ns).max(0.0)
    };
    Timing {
        latency_samples: samples.len(),
        median_ns: at(0.5),
        p99_ns: at(0.99),
        ..Timing::default()
    }
}

fn throughput(
    phase: Duration,
    next: &mut usize,
    decide: &mut impl FnMut(usize) -> bool,
) -> (u64, Duration) {
    let mut batch = 1usize;
    let mut decided = 0u64;
    let started = Instant::now();
    loop {
        let batch_started = Instant::now();
        for _ in 0..batch {
            black_box(decide(*next));
            *next += 1;
        }
        decided += batch as u64;
        let now = Instant::now();
        if now - started >= phase {
            return (decided, now - started);
        }
        if now - batch_started < MIN_BATCH {
            batch *= 2;
        }
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
