//! Order statistics over timings: median, p90, p99 and max by the nearest-rank rule, which
//! never invents a value between two samples.

use serde_json::{Value, json};
use std::time::Duration;

/// A summary of samples, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Summarises durations; panics on an empty set (a benchmark that measured nothing is a bug).
    pub fn of(samples: &[Duration]) -> Summary {
        Summary::of_micros(samples.iter().map(|d| d.as_secs_f64() * 1e6).collect())
    }

    pub fn of_micros(mut values: Vec<f64>) -> Summary {
        assert!(!values.is_empty(), "no samples to summarise");
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Summary {
            n,
            median: nearest_rank(&values, 0.50),
            p90: nearest_rank(&values, 0.90),
            p99: nearest_rank(&values, 0.99),
            max: values[n - 1],
            mean: values.iter().sum::<f64>() / n as f64,
        }
    }

    /// Every field in milliseconds, for the JSON file.
    pub fn to_json_ms(&self) -> Value {
        json!({
            "n": self.n,
            "median_ms": self.median / 1e3,
            "p90_ms": self.p90 / 1e3,
            "p99_ms": self.p99 / 1e3,
            "max_ms": self.max / 1e3,
            "mean_ms": self.mean / 1e3,
        })
    }
}

/// The smallest sample with at least `q` of the samples at or below it.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median of plain numbers (e.g. kilobytes), for figures that are not timings.
pub fn median_u64(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted[(sorted.len() - 1) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of_micros((1..=100).map(f64::from).collect());
        assert_eq!((s.median, s.p90, s.p99, s.max), (50.0, 90.0, 99.0, 100.0));
        let one = Summary::of_micros(vec![7.0]);
        assert_eq!((one.median, one.p99), (7.0, 7.0));
    }
}
