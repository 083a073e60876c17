//! The query benchmark's store: thirty days of generated history, written with the store's
//! own segment writer.
//!
//! `AuditLog::record` stamps each event with the current time, as it must: `time` is when the
//! store recorded the event and never goes backwards. So a month of history cannot be recorded
//! in a few minutes through the log. Instead this module assigns `seq`, `time` and `event_id`
//! itself, as the log's intake would have (consecutive `seq`s, times in order, UUIDv7 ids from
//! the time), and hands every 100,000 events (the log's default file size) to
//! [`portcullis_audit::segment::write_segments`], the function every seal of the store calls.
//! The segments are therefore laid out, compressed, bloom-filtered, chained in the manifest
//! and checkpointed exactly as a server that ran for the month would have left them (one
//! segment per date per seal), and `verify` accepts the store. The two policy bundles are
//! archived as the server archives them, the second marked current.
//!
//! In: the organisation, its two bundles, how many events over how many days. Out: the store
//! in `data_dir` and a [`HistoryReport`].

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Datelike, Duration as Days, NaiveDate, Utc, Weekday};
use portcullis_audit::bundles::{archive_bundle, set_current_bundle};
use portcullis_audit::segment::{SealedIndex, write_segments};
use portcullis_audit::store::EVENTS_DIR;
use portcullis_audit::{AccessEvent, NewEvent};
use uuid::Builder;

use crate::events::{EventGen, Mix};
use crate::gate::PolicyBundle;
use crate::model::Org;
use crate::rng::Rng;

/// Events per seal: the log's default `seal_after_events`.
pub const SEAL_EVENTS: usize = 100_000;
/// The node that "recorded" the history.
const NODE: &str = "bench-node-1";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct HistorySpec {
    pub events: u64,
    pub first_day: NaiveDate,
    pub days: u32,
    /// The day (from 0) on which the second policy version takes effect, at 10:00 UTC.
    pub switch_day: u32,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct HistoryReport {
    pub events: u64,
    pub seconds: f64,
    /// Of `seconds`, the time spent in `write_segments`: sealing alone, on one thread.
    pub seal_seconds: f64,
    pub mix: Mix,
}

/// Writes the history into `data_dir`, which must not hold a store yet.
pub fn write(
    data_dir: &Path,
    org: &Org,
    bundles: [&PolicyBundle; 2],
    spec: HistorySpec,
) -> Result<HistoryReport> {
    let started = Instant::now();
    for bundle in bundles {
        archive_bundle(data_dir, &bundle.hash, &bundle.bytes)
            .context("cannot archive a generated bundle")?;
    }
    let mut index =
        SealedIndex::open(data_dir, None).context("cannot start the history's manifest")?;
    let events_dir = data_dir.join(EVENTS_DIR);
    let mut writer = Writer {
        events_dir: &events_dir,
        index: &mut index,
        pending: Vec::with_capacity(SEAL_EVENTS),
        next_seq: 1,
        rng: Rng::new(spec.seed ^ 0x5eed),
        switched: false,
        seal_seconds: 0.0,
    };
    let hashes = bundles.map(|bundle| bundle.hash.clone());
    let mut events = EventGen::new(org, hashes, spec.seed);
    let mut times = Rng::new(spec.seed.rotate_left(17));
    let per_day = events_per_day(spec);
    for (day, count) in per_day.into_iter().enumerate() {
        let date = spec.first_day + Days::days(day as i64);
        if day == 0 {
            // The server started on the first version just before the month began.
            let change = events.policy_change();
            writer.push(day_start(date), change)?;
        }
        let switch_at = (day as u32 == spec.switch_day).then(|| day_start(date) + HOUR * 10);
        for time in day_times(date, count, &mut times) {
            if switch_at.is_some_and(|at| time >= at) && !writer.switched {
                events.use_second(true);
                let change = events.policy_change();
                writer.push(time, change)?;
                writer.switched = true;
            }
            let event = events.next(time.div_euclid(1_000_000));
            writer.push(time, event)?;
        }
    }
    writer.flush()?;
    set_current_bundle(data_dir, &bundles[1].hash).context("cannot mark the current bundle")?;
    Ok(HistoryReport {
        events: writer.next_seq - 1,
        seconds: started.elapsed().as_secs_f64(),
        seal_seconds: writer.seal_seconds,
        mix: events.mix,
    })
}

const HOUR: i64 = 3_600 * 1_000_000;

fn day_start(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |start| start.and_utc().timestamp_micros())
}

/// How many events each day gets: weekdays carry about three times a weekend day's traffic.
/// One event of the total goes to the policy change at the start, one to the switch.
fn events_per_day(spec: HistorySpec) -> Vec<u64> {
    let weights: Vec<f64> = (0..spec.days)
        .map(|day| {
            let date = spec.first_day + Days::days(i64::from(day));
            match date.weekday() {
                Weekday::Sat | Weekday::Sun => 0.35,
                _ => 1.0,
            }
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let requests = spec.events.saturating_sub(2);
    let mut counts: Vec<u64> = weights
        .iter()
        .map(|weight| (requests as f64 * weight / total) as u64)
        .collect();
    let assigned: u64 = counts.iter().sum();
    if let Some(last) = counts.last_mut() {
        *last += requests - assigned;
    }
    counts
}

/// The times of one day's requests, in order: three quarters in working hours (07:00 to
/// 19:00 UTC), the rest around the clock.
fn day_times(date: NaiveDate, count: u64, rng: &mut Rng) -> Vec<i64> {
    let start = day_start(date);
    let day = 24 * HOUR;
    let mut times: Vec<i64> = (0..count)
        .map(|_| {
            if rng.chance(750) {
                start + 7 * HOUR + (rng.unit() * (12 * HOUR) as f64) as i64
            } else {
                start + (rng.unit() * day as f64) as i64
            }
        })
        .collect();
    times.sort_unstable();
    times
}

/// Gives events their `seq`, time and id as the log's intake does, and seals every
/// [`SEAL_EVENTS`] of them as the log's sealer does.
struct Writer<'a> {
    events_dir: &'a Path,
    index: &'a mut SealedIndex,
    pending: Vec<AccessEvent>,
    next_seq: u64,
    rng: Rng,
    switched: bool,
    seal_seconds: f64,
}

impl Writer<'_> {
    fn push(&mut self, micros: i64, details: NewEvent) -> Result<()> {
        let time = DateTime::<Utc>::from_timestamp_micros(micros)
            .context("a generated time is out of range")?;
        let millis = u64::try_from(micros / 1_000).unwrap_or_default();
        let event_id = Builder::from_unix_timestamp_millis(millis, &self.rng.bytes10()).into_uuid();
        self.pending.push(AccessEvent {
            event_id,
            seq: self.next_seq,
            time,
            node: NODE.to_owned(),
            details,
        });
        self.next_seq += 1;
        if self.pending.len() >= SEAL_EVENTS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        write_segments(self.events_dir, &self.pending, self.index)
            .context("cannot seal generated events")?;
        self.seal_seconds += started.elapsed().as_secs_f64();
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_share_the_events_and_times_stay_in_their_day() {
        let spec = HistorySpec {
            events: 10_000,
            first_day: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            days: 30,
            switch_day: 12,
            seed: 1,
        };
        let counts = events_per_day(spec);
        assert_eq!(counts.len(), 30);
        assert_eq!(counts.iter().sum::<u64>(), 9_998);
        // 2026-11-01 is a Sunday, 2026-11-02 a Monday.
        assert!(counts[1] > counts[0] * 2);
        let date = NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        let times = day_times(date, 1_000, &mut Rng::new(2));
        assert!(times.is_sorted());
        let start = day_start(date);
        assert!(times.iter().all(|t| (start..start + 24 * HOUR).contains(t)));
    }
}
