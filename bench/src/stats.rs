//! Latency summaries: count, mean, nearest-rank percentiles, max.
//!
//! Sample counts in these benchmarks are small (thousands), so we keep every
//! sample and sort, which is exact, rather than bucket into a histogram.

use std::fmt;
use std::time::Duration;

/// A summary of a set of latency samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub min: Duration,
    pub mean: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples` (in any order); `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        let count = sorted.len();
        Some(Summary {
            count,
            min: sorted[0],
            // Dividing by a usize would need a u32; divide the nanos instead.
            mean: Duration::from_nanos((total.as_nanos() / count as u128) as u64),
            p50: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            p99: percentile(&sorted, 99.0),
            max: sorted[count - 1],
        })
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest
/// sample such that at least `p` percent of samples are less than or equal to
/// it. Nearest-rank never invents a value that was not measured.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Milliseconds with microsecond precision, for printing.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "    count  {}", self.count)?;
        writeln!(f, "    p50    {:.3} ms", ms(self.p50))?;
        writeln!(f, "    p90    {:.3} ms", ms(self.p90))?;
        writeln!(f, "    p99    {:.3} ms", ms(self.p99))?;
        writeln!(f, "    max    {:.3} ms", ms(self.max))?;
        writeln!(f, "    mean   {:.3} ms", ms(self.mean))?;
        write!(f, "    min    {:.3} ms", ms(self.min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn empty_input_has_no_summary() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn one_to_a_hundred() {
        let s = Summary::of(&millis(1..=100)).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.mean, Duration::from_micros(50_500));
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let mut samples = millis(1..=100);
        samples.reverse();
        samples.swap(3, 77);
        assert_eq!(Summary::of(&samples), Summary::of(&millis(1..=100)));
    }

    #[test]
    fn single_sample_is_every_percentile() {
        let s = Summary::of(&millis([7])).unwrap();
        assert_eq!(
            (s.min, s.p50, s.p90, s.p99, s.max, s.mean),
            (
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7),
                Duration::from_millis(7)
            )
        );
    }

    #[test]
    fn nearest_rank_on_small_sets() {
        // Ten samples: p50 is the 5th, p90 the 9th, p99 rounds up to the 10th.
        let sorted = millis(1..=10);
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(5));
        assert_eq!(percentile(&sorted, 90.0), Duration::from_millis(9));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(10));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(10));
    }

    #[test]
    fn tail_outlier_shows_in_p99_and_max_only() {
        let mut samples = millis(std::iter::repeat_n(2, 999));
        samples.push(Duration::from_millis(500));
        let s = Summary::of(&samples).unwrap();
        assert_eq!(s.p50, Duration::from_millis(2));
        assert_eq!(s.p99, Duration::from_millis(2));
        assert_eq!(s.max, Duration::from_millis(500));
    }
}
