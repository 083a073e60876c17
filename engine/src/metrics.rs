//! Counters for `GET /metrics`, in the Prometheus text exposition format (version 0.0.4):
//! decisions by outcome, denials by reason, the time to decide, the time the proxy takes per
//! request (HTTP, to the upstream's answer) and per session set-up (PostgreSQL, to the relay),
//! upstream errors of the proxy by target, and the connections the proxy has open by protocol.
//!
//! Counting is a few atomic additions per event; the maps of labelled counters are bounded,
//! so that no caller can grow them without limit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use portcullis_audit::{Decision, EventKind, NewEvent};

/// Upper bounds of the time buckets, in seconds: a decision takes microseconds, a proxied
/// request or a PostgreSQL login up to seconds.
const LATENCY_BUCKETS_S: [f64; 17] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// The most distinct labels one labelled counter keeps; later ones count under `other`.
const MAX_LABELS: usize = 256;

#[derive(Debug, Default)]
pub struct Metrics {
    allowed: AtomicU64,
    denied: AtomicU64,
    denials: LabelledCounter,
    decision_time: Histogram,
    http_proxy_time: Histogram,
    postgres_proxy_time: Histogram,
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

    /// The counter family `name`, with its help text, one series per value of `label`.
    fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for (value, n) in counts.iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
        }
    }
}

/// Durations, counted into [`LATENCY_BUCKETS_S`].
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, ns: u64) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a duration in seconds as a float; nanoseconds past 2^53 are not a concern"
        )]
        let seconds = ns as f64 / 1e9;
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The series of `name` with `labels` (`key="value"`, or empty) before `le`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bucket, bound) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of seconds as a float, as the format has it"
        )]
        let sum_s = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n\
             {name}_sum{braced} {sum_s}\n{name}_count{braced} {count}"
        );
    }
}

/// The protocols whose proxied connections are counted.
const PROXY_PROTOCOLS: [&str; 2] = ["http", "postgres"];

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
        self.decision_time.observe(latency_ns);
    }

    /// Counts how long the HTTP proxy took for a request, from its head to the upstream's
    /// answer (or the proxy's own refusal).
    pub fn http_proxied(&self, took: std::time::Duration) {
        self.http_proxy_time
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts how long the PostgreSQL proxy took to set a session up, from the connection to
    /// the relay (TLS, startup, decision, issuance, the upstream's login).
    pub fn postgres_session_ready(&self, took: std::time::Duration) {
        self.postgres_proxy_time
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Counts a request or connection the proxy could not take to its target's upstream.
    pub fn upstream_error(&self, target: &str) {
        self.upstream_errors.add(target);
    }

    /// Counts a connection of `protocol` open until the guard is dropped.
    pub fn connection_opened(&self, protocol: &'static str) -> OpenConnection {
        debug_assert!(PROXY_PROTOCOLS.contains(&protocol), "{protocol}");
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
        self.denials.render(
            &mut out,
            "portcullis_denials_total",
            "Denials, by reason code.",
            "reason",
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_decision_seconds Time from request to decision.\n\
             # TYPE portcullis_decision_seconds histogram"
        );
        self.decision_time
            .render(&mut out, "portcullis_decision_seconds", "");
        let _ = writeln!(
            out,
            "# HELP portcullis_proxy_seconds Time the proxy takes: per HTTP request, to the \
             upstream's answer; per PostgreSQL session, to the relay.\n\
             # TYPE portcullis_proxy_seconds histogram"
        );
        self.http_proxy_time
            .render(&mut out, "portcullis_proxy_seconds", "protocol=\"http\"");
        self.postgres_proxy_time.render(
            &mut out,
            "portcullis_proxy_seconds",
            "protocol=\"postgres\"",
        );
        self.upstream_errors.render(
            &mut out,
            "portcullis_proxy_upstream_errors_total",
            "Proxied requests and connections whose upstream could not be reached, by target.",
            "target",
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_proxy_active_connections Requests and sessions the proxy has \
             open, by protocol.\n# TYPE portcullis_proxy_active_connections gauge"
        );
        let active = self.active.lock().unwrap_or_else(PoisonError::into_inner);
        // Both protocols from the start, so that a dashboard sees 0 rather than no series.
        for protocol in PROXY_PROTOCOLS {
            let open = active
                .get(protocol)
                .map_or(0, |gauge| gauge.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "portcullis_proxy_active_connections{{protocol=\"{protocol}\"}} {open}"
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
        metrics.http_proxied(std::time::Duration::from_micros(300));
        metrics.postgres_session_ready(std::time::Duration::from_secs(2));
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
            "portcullis_proxy_seconds_bucket{protocol=\"http\",le=\"0.00025\"} 0",
            "portcullis_proxy_seconds_bucket{protocol=\"http\",le=\"0.0005\"} 1",
            "portcullis_proxy_seconds_sum{protocol=\"http\"} 0.0003",
            "portcullis_proxy_seconds_count{protocol=\"http\"} 1",
            "portcullis_proxy_seconds_bucket{protocol=\"postgres\",le=\"1\"} 0",
            "portcullis_proxy_seconds_bucket{protocol=\"postgres\",le=\"2.5\"} 1",
            "portcullis_proxy_seconds_bucket{protocol=\"postgres\",le=\"+Inf\"} 1",
            "portcullis_proxy_upstream_errors_total{target=\"billing \\\"api\\\"\"} 1",
            "portcullis_proxy_active_connections{protocol=\"postgres\"} 1",
            // Never opened, and there all the same.
            "portcullis_proxy_active_connections{protocol=\"http\"} 0",
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
