//! Counters for `GET /metrics`, in the Prometheus text exposition format (version 0.0.4):
//! decisions by outcome, denials by reason, the time to decide, upstream errors of the proxy
//! by target, and the connections the proxy has open by protocol.
//!
//! Counting is a few atomic additions per event; the maps of labelled counters are bounded,
//! so that no caller can grow them without limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_audit::{Decision, EventKind, NewEvent};

/// Upper bounds of the decision-time buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

/// The most distinct labels one labelled counter keeps; later ones count under `other`.
const MAX_LABELS: usize = 256;

#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    denials: LabelledCounter,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    upstream_errors: LabelledCounter,
    active: Mutex<BTreeMap<&'static str, Arc<AtomicI64>>>,
}

#[derive(Debug, Default)]
struct LabelledCounter(Mutex<BTreeMap<String, u64>>);

impl LabelledCounter {
    fn add(&self, label: &str) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let label = if counts.contains_key(label) || counts.len() < MAX_LABELS {
            label
        } else {
            "other"
        };
        *counts.entry(label.to_owned()).or_default() += 1;
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .iter()
            .map(|(label, n)| (label.clone(), *n))
            .collect()
    }
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<AtomicI64>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts the decisions and attestation failures among `events`, as they are recorded.
    pub fn observe(&self, events: &[NewEvent]) {
        for event in events {
            if !matches!(
                event.kind,
                EventKind::Decision | EventKind::AttestationFailed
            ) {
                continue;
            }
            if event.decision == Some(Decision::Allow) && event.kind == EventKind::Decision {
                self.allowed.fetch_add(1, Ordering::Relaxed);
            } else {
                self.denied.fetch_add(1, Ordering::Relaxed);
                self.denials
                    .add(event.reason_code.as_deref().unwrap_or("unknown"));
            }
            if let Some(latency_ns) = event.latency_ns {
                self.observe_latency(latency_ns);
            }
        }
    }

    fn observe_latency(&self, latency_ns: u64) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a latency in seconds as a float; nanoseconds past 2^53 are not a concern"
        )]
        let seconds = latency_ns as f64 / 1e9;
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(latency_ns, Ordering::Relaxed);
    }

    /// Counts a request or connection the proxy could not take to its target's upstream.
    pub fn upstream_error(&self, target: &str) {
        self.upstream_errors.add(target);
    }

    /// Counts a connection of `protocol` open until the guard is dropped.
    pub fn connection_opened(&self, protocol: &'static str) -> OpenConnection {
        let gauge = {
            let mut active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(active.entry(protocol).or_default())
        };
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenConnection(gauge)
    }

    /// The text of `GET /metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP portcullis_decisions_total Decisions recorded, by outcome (attestation \
             failures are denials).\n# TYPE portcullis_decisions_total counter"
        );
        for (decision, counter) in [("allow", &self.allowed), ("deny", &self.denied)] {
            let _ = writeln!(
                out,
                "portcullis_decisions_total{{decision=\"{decision}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_denials_total Denials, by reason code.\n\
             # TYPE portcullis_denials_total counter"
        );
        for (reason, n) in self.denials.snapshot() {
            let _ = writeln!(
                out,
                "portcullis_denials_total{{reason=\"{}\"}} {n}",
                escape(&reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_decision_seconds Time from request to decision.\n\
             # TYPE portcullis_decision_seconds histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS_S) {
            let _ = writeln!(
                out,
                "portcullis_decision_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of seconds as a float, as the format has it"
        )]
        let sum_s = self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "portcullis_decision_seconds_bucket{{le=\"+Inf\"}} {count}\n\
             portcullis_decision_seconds_sum {sum_s}\nportcullis_decision_seconds_count {count}"
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_proxy_upstream_errors_total Proxied requests and connections \
             whose upstream could not be reached, by target.\n\
             # TYPE portcullis_proxy_upstream_errors_total counter"
        );
        for (target, n) in self.upstream_errors.snapshot() {
            let _ = writeln!(
                out,
                "portcullis_proxy_upstream_errors_total{{target=\"{}\"}} {n}",
                escape(&target)
            );
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_proxy_active_connections Requests and sessions the proxy has \
             open, by protocol.\n# TYPE portcullis_proxy_active_connections gauge"
        );
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        for (protocol, gauge) in active.iter() {
            let _ = writeln!(
                out,
                "portcullis_proxy_active_connections{{protocol=\"{protocol}\"}} {}",
                gauge.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, decision: Option<Decision>, code: &str, latency_ns: u64) -> NewEvent {
        NewEvent {
            kind,
            decision,
            reason_code: Some(code.to_owned()),
            latency_ns: Some(latency_ns),
            ..NewEvent::default()
        }
    }

    #[test]
    fn decisions_denials_latency_and_connections_are_rendered() {
        let metrics = Metrics::default();
        metrics.observe(&[
            event(
                EventKind::Decision,
                Some(Decision::Allow),
                "permitted",
                20_000,
            ),
            event(
                EventKind::Decision,
                Some(Decision::Deny),
                "no_permit",
                2_000_000,
            ),
            event(
                EventKind::AttestationFailed,
                Some(Decision::Deny),
                "token_expired",
                0,
            ),
            event(EventKind::CredentialIssued, None, "credential_issued", 0),
        ]);
        metrics.upstream_error("billing \"api\"");
        let open = metrics.connection_opened("postgres");
        let text = metrics.render();
        for line in [
            "portcullis_decisions_total{decision=\"allow\"} 1",
            "portcullis_decisions_total{decision=\"deny\"} 2",
            "portcullis_denials_total{reason=\"no_permit\"} 1",
            "portcullis_denials_total{reason=\"token_expired\"} 1",
            "portcullis_decision_seconds_bucket{le=\"0.000025\"} 2",
            "portcullis_decision_seconds_bucket{le=\"0.0025\"} 3",
            "portcullis_decision_seconds_bucket{le=\"+Inf\"} 3",
            "portcullis_decision_seconds_count 3",
            "portcullis_proxy_upstream_errors_total{target=\"billing \\\"api\\\"\"} 1",
            "portcullis_proxy_active_connections{protocol=\"postgres\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
        drop(open);
        assert!(
            metrics
                .render()
                .contains("portcullis_proxy_active_connections{protocol=\"postgres\"} 0")
        );
    }

    #[test]
    fn labels_are_bounded() {
        let metrics = Metrics::default();
        for n in 0..MAX_LABELS + 10 {
            metrics.upstream_error(&format!("t{n}"));
        }
        let text = metrics.render();
        assert!(text.contains("portcullis_proxy_upstream_errors_total{target=\"other\"} 10"));
    }
}
