//! `verify` timed: the library function behind `portcullis audit verify`, on a closed store,
//! against the store's own public key. It hashes every segment and reads two columns of each
//! back, so its time should grow with the data and nothing else.

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, anyhow};
use portcullis_audit::verify::verify;

use crate::system;

/// One timed verification.
#[derive(Debug, Clone)]
pub struct VerifyLine {
    pub store: String,
    pub events: u64,
    pub segments: u64,
    /// Bytes of the segments it read.
    pub bytes: u64,
    pub seconds: f64,
}

impl VerifyLine {
    pub fn bytes_per_second(&self) -> f64 {
        per_second(self.bytes as f64, self.seconds)
    }

    pub fn events_per_second(&self) -> f64 {
        per_second(self.events as f64, self.seconds)
    }

    /// Microseconds of verification per event.
    pub fn micros_per_event(&self) -> f64 {
        if self.events == 0 {
            return 0.0;
        }
        self.seconds * 1e6 / self.events as f64
    }
}

fn per_second(amount: f64, seconds: f64) -> f64 {
    if seconds > 0.0 { amount / seconds } else { 0.0 }
}

/// Verifies the store in `data_dir`, and fails with `verify`'s own message when it does not.
pub fn timed_verify(data_dir: &Path, store: &str) -> Result<VerifyLine> {
    eprintln!("[verify] {store}");
    let segments = system::segments(data_dir)?;
    let started = Instant::now();
    let report = verify(data_dir, None, &mut |_| {})
        .map_err(|error| anyhow!("verify refused the {store} store: {error}"))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(VerifyLine {
        store: store.to_owned(),
        events: report.events,
        segments: report.segments,
        bytes: segments.bytes,
        seconds,
    })
}
