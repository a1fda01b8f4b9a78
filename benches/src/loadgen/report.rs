//! What a load run measured, and how it is shown: a live progress line with the current rate
//! while it runs (on a terminal), then a table, and the same figures as JSON for comparisons.
//!
//! Latencies are HDR histograms (`hdrhistogram`) in microseconds, merged from one histogram
//! per connection, so recording costs no lock and the percentiles are exact to three
//! significant digits whatever the count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};

/// Latencies up to an hour, in microseconds, three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `elapsed` into `h` (saturating at the histogram's bound).
pub fn record(h: &mut Histogram<u64>, elapsed: Duration) {
    h.saturating_record((elapsed.as_micros() as u64).max(1));
}

/// Failed requests by kind (`503`, `timeout`, ...), shared by a run's connections.
#[derive(Debug, Clone, Default)]
pub struct Failures(Arc<Mutex<BTreeMap<String, u64>>>);

impl Failures {
    pub fn count(&self, kind: &str) {
        *self
            .0
            .lock()
            .expect("failures")
            .entry(kind.to_owned())
            .or_default() += 1;
    }
}

/// One run's figures: what it was asked (`params`), what it counted and rated (`figures`), and
/// its latency distributions.
#[derive(Debug)]
pub struct Report {
    name: String,
    params: Map<String, Value>,
    figures: Vec<(String, f64)>,
    latencies: Vec<(String, Histogram<u64>)>,
}

impl Report {
    /// `params`: a JSON object of the run's settings (printed first, kept in the JSON).
    pub fn new(name: &str, params: Value) -> Self {
        Self {
            name: name.to_owned(),
            params: match params {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            figures: Vec::new(),
            latencies: Vec::new(),
        }
    }

    pub fn figure(&mut self, name: &str, value: f64) -> &mut Self {
        self.figures.push((name.to_owned(), value));
        self
    }

    pub fn latency(&mut self, name: &str, h: Histogram<u64>) -> &mut Self {
        self.latencies.push((name.to_owned(), h));
        self
    }

    /// The figures of a request-and-answer load over `elapsed` seconds: requests and readings
    /// acknowledged, their rates, and the failures, in all and by kind.
    pub fn requests(
        &mut self,
        elapsed: f64,
        requests: u64,
        readings: f64,
        failures: &Failures,
    ) -> &mut Self {
        self.figure("seconds", (elapsed * 10.0).round() / 10.0)
            .figure("requests", requests as f64)
            .figure("readings", readings)
            .figure("readings_per_sec", (readings / elapsed).round())
            .figure("requests_per_sec", (requests as f64 / elapsed).round());
        self.failures(failures)
    }

    /// The failures, in all (`errors`) and by kind (`errors_{kind}`).
    pub fn failures(&mut self, failures: &Failures) -> &mut Self {
        let failures = failures.0.lock().expect("failures");
        self.figure("errors", failures.values().sum::<u64>() as f64);
        for (kind, n) in failures.iter() {
            self.figure(&format!("errors_{kind}"), *n as f64);
        }
        self
    }

    /// The figure called `name`, if the run has it.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = format!("{}:", self.name);
        for (k, v) in &self.params {
            out.push_str(&format!(
                " {k}={}",
                v.as_str().map_or(v.to_string(), str::to_owned)
            ));
        }
        out.push('\n');
        for (name, value) in &self.figures {
            out.push_str(&format!("  {name:<32} {}\n", number(*value)));
        }
        if !self.latencies.is_empty() {
            out.push_str(&format!(
                "  {:<20} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
                "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
            ));
            for (name, h) in &self.latencies {
                let q = |q: f64| ms(h.value_at_quantile(q));
                out.push_str(&format!(
                    "  {name:<20} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                    h.len(),
                    q(0.5),
                    q(0.9),
                    q(0.99),
                    q(0.999),
                    ms(h.max())
                ));
            }
        }
        out
    }

    /// `{"name", "params", "figures": {..}, "latency_ms": {name: {count, mean, p50, p90, p99,
    /// p999, max}}}`.
    pub fn to_json(&self) -> Value {
        let figures: Map<String, Value> = self
            .figures
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let latencies: Map<String, Value> = self
            .latencies
            .iter()
            .map(|(k, h)| {
                let q = |q: f64| ms(h.value_at_quantile(q));
                (
                    k.clone(),
                    json!({"count": h.len(), "mean": h.mean() / 1000.0, "p50": q(0.5),
                           "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": ms(h.max())}),
                )
            })
            .collect();
        json!({"name": self.name, "params": self.params, "figures": figures,
               "latency_ms": latencies})
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// Whole numbers without decimals and with thousands separators; others with three decimals.
fn number(v: f64) -> String {
    if v.fract() != 0.0 || !v.is_finite() || v.abs() >= 1e15 {
        return format!("{v:.3}");
    }
    let digits = format!("{}", v.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A progress bar over the run's seconds with the live rate of `counter`; drawn only when
/// standard error is a terminal (indicatif hides it otherwise), so logs and pipes stay clean.
pub struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(seconds: u64, unit: &'static str, counter: Arc<AtomicU64>) -> Self {
        let bar = ProgressBar::new(seconds.max(1) * 1000);
        bar.set_style(
            ProgressStyle::with_template("[{elapsed_precise}] {wide_bar} {msg}")
                .expect("a valid template"),
        );
        let ticker = {
            let bar = bar.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let (mut last, mut last_at) = (counter.load(Ordering::Relaxed), Instant::now());
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let now = counter.load(Ordering::Relaxed);
                    let rate = (now - last) as f64 / last_at.elapsed().as_secs_f64();
                    (last, last_at) = (now, Instant::now());
                    bar.set_position(started.elapsed().as_millis() as u64);
                    bar.set_message(format!(
                        "{} {unit}/s, {} in all",
                        number(rate.round()),
                        number(now as f64)
                    ));
                }
            })
        };
        Self { bar, ticker }
    }

    pub fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_and_latencies_reach_the_table_and_the_json() {
        let mut h = histogram();
        for ms in 1..=100 {
            record(&mut h, Duration::from_millis(ms));
        }
        let mut r = Report::new("http", json!({"connections": 8, "format": "json"}));
        r.figure("readings_per_sec", 1234567.0)
            .figure("cpu", 0.25)
            .latency("request", h);
        let table = r.table();
        assert!(
            table.starts_with("http: connections=8 format=json\n"),
            "{table}"
        );
        assert!(table.contains("1,234,567"), "{table}");
        assert!(table.contains("0.250"), "{table}");
        let v = r.to_json();
        assert_eq!(v["figures"]["readings_per_sec"], 1234567.0);
        assert_eq!(v["latency_ms"]["request"]["count"], 100);
        let p50 = v["latency_ms"]["request"]["p50"].as_f64().unwrap();
        assert!((p50 - 50.0).abs() < 0.1, "{p50}");
        assert_eq!(r.get("cpu"), Some(0.25));
    }
}
