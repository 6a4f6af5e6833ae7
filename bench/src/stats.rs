//! Medians, percentiles and the formatting of measured times.

use std::time::Duration;

/// A set of timings, sorted.
#[derive(Debug, Clone)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Sorts `samples`; warm-up runs must already be left out.
    pub fn new(mut samples: Vec<Duration>) -> Samples {
        samples.sort();
        Samples { sorted: samples }
    }

    /// How many timings there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when nothing was measured.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> Duration {
        let n = self.sorted.len();
        match n {
            0 => Duration::ZERO,
            _ if n % 2 == 1 => self.sorted[n / 2],
            _ => (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2,
        }
    }

    /// The `p`th percentile (nearest rank), `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        self.sorted[rank.clamp(1, self.sorted.len()) - 1]
    }
}

/// A duration for a table: µs below 10 ms, ms with one decimal below 10 s, else s.
pub fn show(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 10_000.0 {
        format!("{micros:.1} µs")
    } else if micros < 10_000_000.0 {
        format!("{:.1} ms", micros / 1000.0)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// Bytes as KiB or MiB with one decimal.
pub fn show_bytes(bytes: u64) -> String {
    if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// `a / b` to two decimals, as `1.04×`.
pub fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "n/a".to_string();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Samples {
        Samples::new(values.iter().map(|v| Duration::from_millis(*v)).collect())
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(ms(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
        assert_eq!(ms(&[5, 1, 3]).median(), Duration::from_millis(3));
    }

    #[test]
    fn the_99th_percentile_is_a_measured_value() {
        let samples = ms(&(1..=200).collect::<Vec<u64>>());
        assert_eq!(samples.percentile(99.0), Duration::from_millis(198));
        assert_eq!(ms(&[7]).percentile(99.0), Duration::from_millis(7));
    }
}
