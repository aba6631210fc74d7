//! Decision latency: how long the agent took to answer each permission
//! event, from the moment its reader had read the event to the moment the
//! answer was written back. (The time an event spent queued in the kernel
//! before the read is not visible from user space.)
//!
//! A fixed log-linear histogram of atomics: eight buckets per power of two
//! (each bucket at most 12.5 % wider than its lower bound), from 256 ns to
//! 2^37 ns (about 137 s), one bucket below and one above. Recording is a
//! few relaxed atomic operations: no lock, no allocation, so it sits on the
//! decision path. Quantiles are read from the buckets and therefore name
//! the bucket's upper bound: "p99 ≤ 40 µs"; the total time is kept exact,
//! for the mean.
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per power of two.
const SUB_BITS: u32 = 3;
const SUB: u32 = 1 << SUB_BITS;
/// Values below 2^MIN_EXP ns share the first bucket.
const MIN_EXP: u32 = 8;
/// Values from 2^MAX_EXP ns up share the last bucket.
const MAX_EXP: u32 = 37;
/// Number of buckets: one below, `SUB` per power of two, one above.
const BUCKETS: usize = 2 + ((MAX_EXP - MIN_EXP) * SUB) as usize;

/// The bucket a duration of `ns` nanoseconds falls into.
fn index(ns: u64) -> usize {
    if ns < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    // The bits just below the leading one pick the sub-bucket.
    let sub = ((ns >> (exp - SUB_BITS)) & u64::from(SUB - 1)) as u32;
    1 + ((exp - MIN_EXP) * SUB + sub) as usize
}

/// The bucket's upper bound in nanoseconds (exclusive); `u64::MAX` for the
/// last bucket.
fn upper_bound(i: usize) -> u64 {
    if i == 0 {
        return 1 << MIN_EXP;
    }
    if i >= BUCKETS - 1 {
        return u64::MAX;
    }
    let k = (i - 1) as u32;
    let exp = MIN_EXP + k / SUB;
    let sub = u64::from(k % SUB);
    (1u64 << exp) + ((sub + 1) << (exp - SUB_BITS))
}

/// Answer times, recorded from any thread.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Count one answer that took `took`.
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.counts[index(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while other threads may
    /// record, so `count` and `sum_ns` can disagree by the answers recorded
    /// meanwhile; each bucket is exact.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (upper_bound(i), n))
            })
            .collect();
        HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            max_ns: self.max_ns.load(Ordering::Relaxed),
            buckets,
        }
    }
}

/// A copy of a [`Histogram`] for serialisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistogramSnapshot {
    /// Answers counted.
    pub count: u64,
    /// Their total time, in nanoseconds.
    pub sum_ns: u64,
    /// The longest, in nanoseconds.
    pub max_ns: u64,
    /// The non-empty buckets in ascending order: (upper bound in ns,
    /// exclusive, or `u64::MAX` for the last; answers in the bucket).
    pub buckets: Vec<(u64, u64)>,
}

impl HistogramSnapshot {
    /// An upper bound for the `q`-quantile (0 < q ≤ 1) in nanoseconds: the
    /// upper bound of the bucket holding it, or the maximum if that is
    /// lower. `None` when nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: at least the first answer.
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for &(upper, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Some(upper.min(self.max_ns.max(1)));
            }
        }
        Some(self.max_ns)
    }

    /// The mean in nanoseconds, `None` when nothing was counted.
    pub fn mean(&self) -> Option<u64> {
        self.sum_ns.checked_div(self.count)
    }
}

/// Answer times of the agent's two kinds of deciders.
#[derive(Debug, Default)]
pub struct DecisionLatency {
    /// Events answered on the reader thread: cache hits, first runs of small
    /// files it hashes itself, the agent's own events, and answers given at
    /// once because the worker queue was full.
    pub reader: Histogram,
    /// Events answered by a worker or, at their deadline, by the watchdog.
    pub workers: Histogram,
}

impl DecisionLatency {
    /// Both histograms.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            reader: self.reader.snapshot(),
            workers: self.workers.snapshot(),
        }
    }
}

/// A copy of [`DecisionLatency`] for serialisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySnapshot {
    /// See [`DecisionLatency::reader`].
    pub reader: HistogramSnapshot,
    /// See [`DecisionLatency::workers`].
    pub workers: HistogramSnapshot,
}

/// `ns` for people, to three significant figures: "850 ns", "12.5 µs",
/// "3.00 ms", "1.50 s".
pub fn human_ns(ns: u64) -> String {
    let (x, unit) = match ns {
        0..=999 => return format!("{ns} ns"),
        1_000..=999_999 => (ns as f64 / 1e3, "µs"),
        1_000_000..=999_999_999 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let digits = if x >= 100.0 {
        0
    } else if x >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_falls_into_the_bucket_whose_bounds_hold_it() {
        let mut values: Vec<u64> = vec![0, 1, 255, 256, 257, 319, 320, 511, 512, 1023, 1024];
        for exp in 8..40 {
            let p = 1u64 << exp;
            values.extend([p - 1, p, p + 1, p + p / 8 - 1, p + p / 8, p + p / 2 + 7]);
        }
        values.extend([u64::MAX - 1, u64::MAX]);
        for ns in values {
            let i = index(ns);
            assert!(i < BUCKETS, "{ns}: index {i}");
            assert!(
                ns < upper_bound(i) || i == BUCKETS - 1,
                "{ns} below {}",
                upper_bound(i)
            );
            if i > 0 {
                assert!(
                    ns >= upper_bound(i - 1),
                    "{ns} at or above {}",
                    upper_bound(i - 1)
                );
            }
        }
        // Bounds rise strictly, and each bucket is at most 12.5 % wide.
        for i in 1..BUCKETS - 1 {
            let (lo, hi) = (upper_bound(i - 1), upper_bound(i));
            assert!(hi > lo);
            if i > 1 {
                assert!((hi - lo) * 8 <= lo, "bucket {i}: [{lo}, {hi})");
            }
        }
    }

    #[test]
    fn quantiles_name_an_upper_bound_no_lower_than_the_value() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        // 90 answers at 10 µs, 9 at 100 µs, one at 5 ms.
        for _ in 0..90 {
            h.record(Duration::from_micros(10));
        }
        for _ in 0..9 {
            h.record(Duration::from_micros(100));
        }
        h.record(Duration::from_millis(5));
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.max_ns, 5_000_000);
        assert_eq!(
            s.mean(),
            Some((90 * 10_000 + 9 * 100_000 + 5_000_000) / 100)
        );
        let p50 = s.quantile(0.5).unwrap();
        assert!((10_000..=11_250).contains(&p50), "{p50}");
        assert_eq!(s.quantile(0.9), Some(p50));
        let p99 = s.quantile(0.99).unwrap();
        assert!((100_000..=112_500).contains(&p99), "{p99}");
        assert_eq!(s.quantile(1.0), Some(5_000_000), "capped at the maximum");
        assert_eq!(s.buckets.iter().map(|b| b.1).sum::<u64>(), 100);
    }

    #[test]
    fn a_snapshot_reads_back_what_was_serialised() {
        let h = Histogram::default();
        h.record(Duration::from_nanos(3));
        h.record(Duration::from_secs(1_000));
        let s = h.snapshot();
        assert_eq!(s.buckets.last().unwrap().0, u64::MAX);
        let back: HistogramSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // An older agent's status has no histogram: empty, not an error.
        let old: LatencySnapshot = serde_json::from_str("{}").unwrap();
        assert_eq!(old.reader.quantile(0.5), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human_ns(850), "850 ns");
        assert_eq!(human_ns(12_500), "12.5 µs");
        assert_eq!(human_ns(3_000_000), "3.00 ms");
        assert_eq!(human_ns(250_400), "250 µs");
        assert_eq!(human_ns(1_500_000_000), "1.50 s");
    }
}
