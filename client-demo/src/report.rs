//! A run's results: figures, failures by kind, latency percentiles. Printed as a
//! summary table, written as JSON (`--json`), drawn as SVG (`--plot`).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// At most this many mismatches are kept in the JSON report, and far fewer printed.
const MISMATCHES_KEPT: usize = 1000;
const MISMATCHES_PRINTED: usize = 20;

#[derive(Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub target: String,
    pub started_at: String,
    pub open_file_limit: u64,
    /// The flags of the run (passwords left out).
    pub settings: serde_json::Value,
    pub figures: Vec<Figure>,
    /// Failures by kind: logins, connections, sockets that ended early, requests.
    pub failures: BTreeMap<String, u64>,
    pub latencies: Vec<Latency>,
    /// Sockets that did not end as expected (`revoke`), first ones only.
    pub mismatches: Vec<String>,
    pub mismatch_count: u64,
    pub hints: Vec<String>,
}

#[derive(Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
}

/// One latency distribution, in milliseconds.
#[derive(Serialize)]
pub struct Latency {
    pub name: String,
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p10_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `[percentile, ms]` pairs along the whole distribution, for charts.
    pub distribution: Vec<[f64; 2]>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Latency {
    pub fn new(name: &str, histogram: &Histogram<u64>) -> Latency {
        let at = |quantile: f64| {
            if histogram.is_empty() { 0.0 } else { ms(histogram.value_at_quantile(quantile)) }
        };
        let distribution = if histogram.is_empty() {
            Vec::new()
        } else {
            histogram
                .iter_quantiles(5)
                .map(|step| [step.quantile_iterated_to() * 100.0, ms(step.value_iterated_to())])
                .collect()
        };
        Latency {
            name: name.to_owned(),
            count: histogram.len(),
            min_ms: if histogram.is_empty() { 0.0 } else { ms(histogram.min()) },
            mean_ms: histogram.mean() / 1000.0,
            p10_ms: at(0.1),
            p50_ms: at(0.5),
            p90_ms: at(0.9),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: if histogram.is_empty() { 0.0 } else { ms(histogram.max()) },
            distribution,
        }
    }
}

impl Report {
    pub fn new(scenario: &'static str, settings: serde_json::Value) -> Report {
        Report {
            scenario,
            target: String::new(),
            started_at: String::new(),
            open_file_limit: 0,
            settings,
            figures: Vec::new(),
            failures: BTreeMap::new(),
            latencies: Vec::new(),
            mismatches: Vec::new(),
            mismatch_count: 0,
            hints: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: impl Into<String>, value: impl Into<f64>, unit: &'static str) {
        self.figures.push(Figure { name: name.into(), value: value.into(), unit });
    }

    pub fn latency(&mut self, name: &str, histogram: Histogram<u64>) {
        self.latencies.push(Latency::new(name, &histogram));
    }

    pub fn mismatch(&mut self, text: String) {
        self.mismatch_count += 1;
        if self.mismatches.len() < MISMATCHES_KEPT {
            self.mismatches.push(text);
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n")?;
        Ok(())
    }

    /// The summary table, on stdout.
    pub fn print(&self) {
        println!();
        println!("== {} against {} (started {})", self.scenario, self.target, self.started_at);
        for figure in &self.figures {
            println!("  {:<44} {:>14} {}", figure.name, format_value(figure.value), figure.unit);
        }
        if self.failures.is_empty() {
            println!("failures: none");
        } else {
            println!("failures:");
            for (kind, count) in &self.failures {
                println!("  {kind:<58} {count:>8}");
            }
        }
        if !self.latencies.is_empty() {
            println!(
                "{:<34} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "latency (ms)", "count", "p10", "p50", "p90", "p99", "p99.9", "max"
            );
            for latency in &self.latencies {
                println!(
                    "  {:<32} {:>9} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                    latency.name,
                    latency.count,
                    latency.p10_ms,
                    latency.p50_ms,
                    latency.p90_ms,
                    latency.p99_ms,
                    latency.p999_ms,
                    latency.max_ms
                );
            }
        }
        if self.mismatch_count > 0 {
            println!("mismatches: {}", self.mismatch_count);
            for text in self.mismatches.iter().take(MISMATCHES_PRINTED) {
                println!("  {text}");
            }
            if self.mismatch_count > MISMATCHES_PRINTED as u64 {
                println!(
                    "  ... and {} more (all in --json, up to {MISMATCHES_KEPT})",
                    self.mismatch_count - MISMATCHES_PRINTED as u64
                );
            }
        }
        for hint in &self.hints {
            println!("hint: {hint}");
        }
    }
}

/// Whole numbers without decimals, others with up to three.
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_reported_in_milliseconds() {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for micros in 1..=1000u64 {
            histogram.record(micros * 1000).unwrap();
        }
        let latency = Latency::new("x", &histogram);
        assert_eq!(latency.count, 1000);
        assert!((latency.p50_ms - 500.0).abs() < 1.0, "{}", latency.p50_ms);
        assert!((latency.max_ms - 1000.0).abs() < 1.0, "{}", latency.max_ms);
        assert_eq!(latency.distribution.last().unwrap()[0], 100.0);
    }

    #[test]
    fn an_empty_distribution_reports_zeros() {
        let latency = Latency::new("x", &Histogram::<u64>::new(3).unwrap());
        assert_eq!((latency.count, latency.p99_ms, latency.max_ms), (0, 0.0, 0.0));
        assert!(latency.distribution.is_empty());
    }

    #[test]
    fn values_print_compactly() {
        assert_eq!(format_value(200.0), "200");
        assert_eq!(format_value(812.345), "812.3");
        assert_eq!(format_value(0.5), "0.500");
    }
}
