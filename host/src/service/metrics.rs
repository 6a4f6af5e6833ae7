//! Counters for `GET /metrics`, written in the Prometheus text format by hand: a few counters
//! and one histogram do not need a metrics library.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::loader::LoadCounters;
use crate::model::Severity;

/// Upper bounds, in seconds, of the run duration histogram buckets.
const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the service counted since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Check runs by `(check id, severity)`.
    check_runs: Mutex<BTreeMap<(String, Severity), u64>>,
    /// Duration of `POST /run` requests that ran checks.
    run_durations: Mutex<Histogram>,
    /// Component files that failed to load, at start or later.
    pub load_errors: AtomicU64,
    /// New or changed versions swapped in, and checks removed.
    pub swaps_added: AtomicU64,
    /// Versions that replaced a serving one.
    pub swaps_replaced: AtomicU64,
    /// Checks removed with their file.
    pub swaps_removed: AtomicU64,
    /// Updates refused while an older version kept serving.
    pub rejected_updates: AtomicU64,
    /// Run requests turned away because too many were in progress.
    pub runs_throttled: AtomicU64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Point-in-time values the service reads when `/metrics` is scraped.
pub struct Gauges<'a> {
    /// Checks currently serving.
    pub checks_loaded: usize,
    /// Component files currently without a serving version because they failed to load.
    pub components_failed: usize,
    /// Run requests in progress.
    pub runs_in_flight: usize,
    /// The snapshot generation, bumped on every change to the set of checks.
    pub generation: u64,
    /// Compiles and cache hits.
    pub load: &'a LoadCounters,
}

impl Metrics {
    /// Counts one finished check run.
    pub fn record_check(&self, check_id: &str, severity: Severity) {
        let mut runs = self.check_runs.lock().unwrap_or_else(|e| e.into_inner());
        *runs.entry((check_id.to_string(), severity)).or_default() += 1;
    }

    /// Records the wall time of one run request.
    pub fn record_run(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let mut histogram = self.run_durations.lock().unwrap_or_else(|e| e.into_inner());
        for (bucket, bound) in histogram.buckets.iter_mut().zip(DURATION_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Everything in the Prometheus text exposition format.
    pub fn render(&self, gauges: &Gauges<'_>) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };

        let _ = writeln!(
            out,
            "# HELP stella_doctor_check_runs_total Check runs by check and result severity.\n# TYPE stella_doctor_check_runs_total counter"
        );
        for ((check, severity), count) in self
            .check_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "stella_doctor_check_runs_total{{check=\"{}\",severity=\"{severity}\"}} {count}",
                escape_label(check)
            );
        }

        let histogram = self.run_durations.lock().unwrap_or_else(|e| e.into_inner());
        let name = "stella_doctor_run_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Wall time of run requests, all selected checks together.\n# TYPE {name} histogram"
        );
        for (count, bound) in histogram.buckets.iter().zip(DURATION_BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", histogram.count);
        let _ = writeln!(out, "{name}_sum {}", histogram.sum);
        let _ = writeln!(out, "{name}_count {}", histogram.count);
        drop(histogram);

        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        counter(
            &mut out,
            "stella_doctor_load_errors_total",
            "Component files that failed to load (invalid, untrusted, or a rejected update).",
            load(&self.load_errors),
        );
        let name = "stella_doctor_swaps_total";
        let _ = writeln!(
            out,
            "# HELP {name} Changes to the serving set of checks, by kind.\n# TYPE {name} counter"
        );
        for (kind, value) in [
            ("added", &self.swaps_added),
            ("replaced", &self.swaps_replaced),
            ("removed", &self.swaps_removed),
        ] {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\"}} {}", load(value));
        }
        counter(
            &mut out,
            "stella_doctor_rejected_updates_total",
            "Updates of a serving check that were refused; the previous version kept serving.",
            load(&self.rejected_updates),
        );
        counter(
            &mut out,
            "stella_doctor_compiles_total",
            "Components compiled by Cranelift.",
            load(&gauges.load.compiles),
        );
        counter(
            &mut out,
            "stella_doctor_cache_hits_total",
            "Components loaded from the compile cache instead of compiled.",
            load(&gauges.load.cache_hits),
        );
        counter(
            &mut out,
            "stella_doctor_runs_throttled_total",
            "Run requests refused with 429 because `Doctor:Api:MaxConcurrentRuns` were in progress.",
            load(&self.runs_throttled),
        );
        counter(
            &mut out,
            "stella_doctor_unauthorized_requests_total",
            "Requests refused for a missing or wrong bearer token.",
            load(&self.unauthorized),
        );
        gauge(
            &mut out,
            "stella_doctor_checks_loaded",
            "Checks currently serving.",
            gauges.checks_loaded as u64,
        );
        gauge(
            &mut out,
            "stella_doctor_components_failed",
            "Component files with no serving version because they failed to load.",
            gauges.components_failed as u64,
        );
        gauge(
            &mut out,
            "stella_doctor_runs_in_flight",
            "Run requests in progress.",
            gauges.runs_in_flight as u64,
        );
        gauge(
            &mut out,
            "stella_doctor_snapshot_generation",
            "Bumped on every change to the set of serving checks or their load status.",
            gauges.generation,
        );
        out
    }
}

/// Escapes a label value: backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        metrics.record_check("check.a", Severity::Pass);
        metrics.record_check("check.a", Severity::Pass);
        metrics.record_check("check.\"b\"", Severity::Fail);
        metrics.record_run(Duration::from_millis(20));
        let load = LoadCounters::default();
        load.cache_hits.fetch_add(2, Ordering::Relaxed);

        let text = metrics.render(&Gauges {
            checks_loaded: 1,
            components_failed: 0,
            runs_in_flight: 0,
            generation: 3,
            load: &load,
        });

        for line in [
            "stella_doctor_check_runs_total{check=\"check.a\",severity=\"pass\"} 2",
            "stella_doctor_check_runs_total{check=\"check.\\\"b\\\"\",severity=\"fail\"} 1",
            "stella_doctor_run_duration_seconds_bucket{le=\"0.01\"} 0",
            "stella_doctor_run_duration_seconds_bucket{le=\"0.025\"} 1",
            "stella_doctor_run_duration_seconds_count 1",
            "stella_doctor_compiles_total 0",
            "stella_doctor_cache_hits_total 2",
            "stella_doctor_swaps_total{kind=\"added\"} 0",
            "stella_doctor_snapshot_generation 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
