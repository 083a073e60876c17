//! The server's side of the dashboard: the compliance evaluation that feeds its posture,
//! controls and history, run at start and then on a schedule.

use std::path::PathBuf;
use std::time::Duration;

/// Evaluates every control at start and then every `every`, appending each report to the
/// compliance history; a failed evaluation is logged and the next one tried on schedule.
pub async fn evaluate_compliance(data_dir: PathBuf, every: Duration) {
    // FIXME(#8): evaluate with `portcullis_audit::compliance` once it lands.
    let _ = (data_dir, every);
}
