//! Summaries of repeated runs: every figure in the report is a median with its min and
//! max, and latency distributions are read at percentiles.

use std::time::Duration;

/// The median, min and max of one figure over several runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    /// The middle run (the mean of the two middle runs for an even count).
    pub(crate) median: f64,
    /// The lowest run.
    pub(crate) min: f64,
    /// The highest run.
    pub(crate) max: f64,
    /// How many runs.
    pub(crate) runs: usize,
}

impl Summary {
    /// Summarises `samples`; `None` if there are none or one is not a number, so that a
    /// broken measurement shows as missing rather than as a plausible figure.
    pub(crate) fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|sample| !sample.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            runs: sorted.len(),
        })
    }

    /// The same summary with every figure passed through `f` (a unit change). A
    /// decreasing `f` (a reciprocal) swaps min and max, so they are put back in order.
    pub(crate) fn map(self, f: impl Fn(f64) -> f64) -> Self {
        let (a, b) = (f(self.min), f(self.max));
        Self {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            runs: self.runs,
        }
    }
}

/// The value at quantile `q` (0 to 1) of `sorted`, by nearest rank; zero if empty.
pub(crate) fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b`, or `None` when either side is missing or `b` is zero.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_odd_count_is_the_middle_run() {
        let summary = Summary::of(&[5.0, 1.0, 3.0]).expect("three runs");
        assert_eq!(
            summary,
            Summary {
                median: 3.0,
                min: 1.0,
                max: 5.0,
                runs: 3
            }
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        let summary = Summary::of(&[4.0, 1.0, 2.0, 10.0]).expect("four runs");
        assert_eq!((summary.median, summary.min, summary.max), (3.0, 1.0, 10.0));
    }

    #[test]
    fn no_runs_or_a_broken_run_gives_no_summary() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn a_reciprocal_keeps_min_below_max() {
        let per_second = Summary::of(&[2.0, 4.0, 8.0])
            .expect("runs")
            .map(|x| 1.0 / x);
        assert_eq!(
            (per_second.min, per_second.median, per_second.max),
            (0.125, 0.25, 0.5)
        );
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
