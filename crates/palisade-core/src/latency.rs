//! Decision latency as values: how long an agent took to answer permission
//! events, kept as a fixed log-linear histogram so that the histograms of
//! many agents add up exactly into one for a policy or the whole fleet.
//!
//! The bucket layout: eight buckets per power of two (each at most 12.5 %
//! wider than its lower bound), from 256 ns to 2^37 ns (about 137 s), one
//! bucket below and one above. The agent counts into atomics laid out by
//! [`bucket_index`] and copies them into a [`HistogramSnapshot`], which is
//! what travels (`palisade status`, the agent's status report to the
//! service, the admin API). Quantiles are read from the buckets and so name
//! the bucket's upper bound ("p99 ≤ 40 µs"); the total time is exact, for
//! the mean.
use serde::{Deserialize, Serialize};

/// Buckets per power of two, as a bit count.
const SUB_BITS: u32 = 3;
const SUB: u32 = 1 << SUB_BITS;
/// Values below 2^MIN_EXP ns share the first bucket.
const MIN_EXP: u32 = 8;
/// Values from 2^MAX_EXP ns up share the last bucket.
const MAX_EXP: u32 = 37;
/// Number of buckets: one below, eight per power of two, one above.
pub const BUCKETS: usize = 2 + ((MAX_EXP - MIN_EXP) * SUB) as usize;

/// The bucket a duration of `ns` nanoseconds falls into (`< BUCKETS`).
pub fn bucket_index(ns: u64) -> usize {
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

/// Bucket `i`'s upper bound in nanoseconds (exclusive); `u64::MAX` for the
/// last bucket.
pub fn bucket_upper_bound(i: usize) -> u64 {
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

/// Whether `bound` is the upper bound of some bucket (a bucket's bound is
/// the first value of the next bucket).
fn is_bucket_bound(bound: u64) -> bool {
    bucket_upper_bound(top_index(bound)) == bound
}

/// The index of the bucket whose upper bound is `bound` (one of them).
fn top_index(bound: u64) -> usize {
    if bound == u64::MAX {
        BUCKETS - 1
    } else {
        bucket_index(bound).saturating_sub(1)
    }
}

/// A histogram of answer times.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// Why a histogram received from elsewhere was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistogramError {
    /// More buckets than the layout has.
    #[error("{0} buckets, at most {BUCKETS}")]
    TooManyBuckets(usize),
    /// A bound that is not one of the layout's.
    #[error("{0} is not a bucket bound")]
    NotABound(u64),
    /// Bounds not strictly ascending.
    #[error("bucket bounds are not strictly ascending at {0}")]
    NotAscending(u64),
    /// A bucket with no answers (snapshots list non-empty buckets only).
    #[error("the bucket up to {0} is empty")]
    EmptyBucket(u64),
    /// `count` is not the sum of the buckets.
    #[error("count {count} is not the buckets' total {total}")]
    CountMismatch {
        /// The stated count.
        count: u64,
        /// The buckets' total (saturating).
        total: u64,
    },
    /// The maximum does not fall into the highest bucket.
    #[error("max_ns {0} is outside the highest bucket")]
    MaxOutsideBuckets(u64),
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
        let mut seen: u64 = 0;
        for &(upper, n) in &self.buckets {
            seen = seen.saturating_add(n);
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

    /// Add `other`'s answers to these (histograms of the same layout add
    /// bucket by bucket, so a merged quantile is as exact as either).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&(ua, na)), Some(&&(ub, nb))) => {
                    if ua == ub {
                        a.next();
                        b.next();
                        (ua, na.saturating_add(nb))
                    } else if ua < ub {
                        a.next();
                        (ua, na)
                    } else {
                        b.next();
                        (ub, nb)
                    }
                }
                (Some(&&x), None) => {
                    a.next();
                    x
                }
                (None, Some(&&x)) => {
                    b.next();
                    x
                }
                (None, None) => break,
            };
            merged.push(next);
        }
        self.buckets = merged;
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// The answers counted since `earlier`, a snapshot of the same
    /// histogram taken before this one, bucket by bucket; `max_ns` is the
    /// longest answer in between, which the buckets cannot tell (it is kept
    /// inside the highest bucket left). `None` if `earlier` has answers this
    /// one lacks (not the same histogram: the agent restarted).
    pub fn since(&self, earlier: &HistogramSnapshot, max_ns: u64) -> Option<HistogramSnapshot> {
        let mut before = earlier.buckets.iter().peekable();
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for &(bound, n) in &self.buckets {
            let mut was = 0;
            while let Some(&&(b, m)) = before.peek() {
                if b > bound {
                    break;
                }
                before.next();
                if b < bound {
                    return None; // a bucket that emptied
                }
                was = m;
            }
            match n.checked_sub(was)? {
                0 => {}
                d => buckets.push((bound, d)),
            }
        }
        if before.next().is_some() {
            return None;
        }
        let mut recent = HistogramSnapshot {
            count: buckets.iter().fold(0u64, |t, b| t.saturating_add(b.1)),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
            max_ns,
            buckets,
        };
        recent.clamp_max();
        Some(recent)
    }

    /// Keep `max_ns` inside the highest bucket (0 when there is none): a
    /// maximum read apart from the buckets may be a little ahead of or
    /// behind them.
    pub fn clamp_max(&mut self) {
        self.max_ns = match self.buckets.last() {
            None => 0,
            Some(&(top, _)) => {
                let i = top_index(top);
                let lowest = if i == 0 { 0 } else { bucket_upper_bound(i - 1) };
                let highest = if i == BUCKETS - 1 { u64::MAX } else { top - 1 };
                self.max_ns.clamp(lowest, highest)
            }
        };
    }

    /// Check a histogram that came from elsewhere (an agent's report): the
    /// layout's bounds, ascending, no empty bucket, a count that is the
    /// buckets' total and a maximum inside the highest bucket. The total
    /// time is not checked against the rest: an agent copies it while
    /// answers are still being counted.
    pub fn check(&self) -> Result<(), HistogramError> {
        if self.buckets.len() > BUCKETS {
            return Err(HistogramError::TooManyBuckets(self.buckets.len()));
        }
        let mut total: u64 = 0;
        let mut last: Option<u64> = None;
        for &(bound, n) in &self.buckets {
            if !is_bucket_bound(bound) {
                return Err(HistogramError::NotABound(bound));
            }
            if last.is_some_and(|l| l >= bound) {
                return Err(HistogramError::NotAscending(bound));
            }
            if n == 0 {
                return Err(HistogramError::EmptyBucket(bound));
            }
            last = Some(bound);
            total = total.saturating_add(n);
        }
        if total != self.count {
            return Err(HistogramError::CountMismatch {
                count: self.count,
                total,
            });
        }
        let max_fits = match last {
            None => self.max_ns == 0,
            Some(top) => bucket_index(self.max_ns) == top_index(top),
        };
        if max_fits {
            Ok(())
        } else {
            Err(HistogramError::MaxOutsideBuckets(self.max_ns))
        }
    }
}

/// Answer times of an agent's two kinds of deciders, since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct LatencySnapshot {
    /// Events answered on the reader thread: cache hits, first runs of small
    /// files it hashes itself, the agent's own events, and answers given at
    /// once because the worker queue was full.
    pub reader: HistogramSnapshot,
    /// Events answered by a worker or, at their deadline, by the watchdog.
    pub workers: HistogramSnapshot,
}

impl LatencySnapshot {
    /// Every answer, whoever gave it.
    pub fn all(&self) -> HistogramSnapshot {
        let mut all = self.reader.clone();
        all.merge(&self.workers);
        all
    }

    /// [`HistogramSnapshot::check`] for both.
    pub fn check(&self) -> Result<(), HistogramError> {
        self.reader.check()?;
        self.workers.check()
    }
}

/// Every answer of several agents (a policy, the fleet) added up, and how
/// many of them had answered any.
pub fn total<'a>(
    agents: impl IntoIterator<Item = &'a LatencySnapshot>,
) -> (HistogramSnapshot, usize) {
    let mut sum = HistogramSnapshot::default();
    let mut answering = 0;
    for agent in agents {
        let all = agent.all();
        if all.count > 0 {
            sum.merge(&all);
            answering += 1;
        }
    }
    (sum, answering)
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

    /// A histogram of `values`, as an agent would count them.
    fn of(values: &[u64]) -> HistogramSnapshot {
        let mut counts = [0u64; BUCKETS];
        for &v in values {
            counts[bucket_index(v)] += 1;
        }
        HistogramSnapshot {
            count: values.len() as u64,
            sum_ns: values.iter().sum(),
            max_ns: values.iter().copied().max().unwrap_or(0),
            buckets: counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (bucket_upper_bound(i), *n))
                .collect(),
        }
    }

    #[test]
    fn every_value_falls_into_the_bucket_whose_bounds_hold_it() {
        let mut values: Vec<u64> = vec![0, 1, 255, 256, 257, 319, 320, 511, 512, 1023, 1024];
        for exp in 8..40 {
            let p = 1u64 << exp;
            values.extend([p - 1, p, p + 1, p + p / 8 - 1, p + p / 8, p + p / 2 + 7]);
        }
        values.extend([u64::MAX - 1, u64::MAX]);
        for ns in values {
            let i = bucket_index(ns);
            assert!(i < BUCKETS, "{ns}: index {i}");
            assert!(
                ns < bucket_upper_bound(i) || i == BUCKETS - 1,
                "{ns} below {}",
                bucket_upper_bound(i)
            );
            if i > 0 {
                assert!(
                    ns >= bucket_upper_bound(i - 1),
                    "{ns} at or above {}",
                    bucket_upper_bound(i - 1)
                );
            }
        }
        // Bounds rise strictly, and each bucket is at most 12.5 % wide.
        for i in 1..BUCKETS - 1 {
            let (lo, hi) = (bucket_upper_bound(i - 1), bucket_upper_bound(i));
            assert!(hi > lo);
            if i > 1 {
                assert!((hi - lo) * 8 <= lo, "bucket {i}: [{lo}, {hi})");
            }
        }
        // Every bucket's bound is recognised as one, and nothing else is.
        for i in 0..BUCKETS {
            assert!(is_bucket_bound(bucket_upper_bound(i)), "bucket {i}");
        }
        for not in [0, 1, 255, 257, 300, 1000, 1 << 40] {
            assert!(!is_bucket_bound(not), "{not}");
        }
    }

    #[test]
    fn quantiles_name_an_upper_bound_no_lower_than_the_value() {
        assert_eq!(of(&[]).quantile(0.5), None);
        // 90 answers at 10 µs, 9 at 100 µs, one at 5 ms.
        let mut values = vec![10_000; 90];
        values.extend([100_000; 9]);
        values.push(5_000_000);
        let s = of(&values);
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
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn merged_histograms_are_the_histogram_of_all_the_values() {
        let a = [300, 9_000, 10_000, 10_500, 2_000_000];
        let b = [10_100, 40_000, 1 << 38];
        let mut merged = of(&a);
        merged.merge(&of(&b));
        let all: Vec<u64> = a.iter().chain(&b).copied().collect();
        assert_eq!(merged, of(&all));
        assert_eq!(merged.check(), Ok(()));
        let mut empty = of(&[]);
        empty.merge(&of(&b));
        assert_eq!(empty, of(&b));
        let both = LatencySnapshot {
            reader: of(&a),
            workers: of(&b),
        };
        assert_eq!(both.all(), of(&all));
        let idle = LatencySnapshot::default();
        assert_eq!(total([&both, &idle, &both]).1, 2);
        let twice: Vec<u64> = all.iter().chain(&all).copied().collect();
        assert_eq!(total([&both, &idle, &both]).0, of(&twice));
    }

    #[test]
    fn the_answers_since_an_earlier_snapshot_are_the_difference() {
        let first = [300, 10_000, 10_500];
        let then = [10_100, 40_000, 2_000_000];
        let all: Vec<u64> = first.iter().chain(&then).copied().collect();
        let recent = of(&all).since(&of(&first), 2_000_000).unwrap();
        assert_eq!(recent, of(&then));
        assert_eq!(recent.check(), Ok(()));
        // Nothing new: an empty window.
        let none = of(&first).since(&of(&first), 0).unwrap();
        assert_eq!(none, of(&[]));
        // A maximum outside what is left is kept inside it.
        let off = of(&all).since(&of(&first), 9_000_000_000).unwrap();
        assert_eq!(off.check(), Ok(()));
        // Not the same histogram (the agent restarted): no difference.
        assert_eq!(of(&first).since(&of(&all), 0), None);
        assert_eq!(of(&[10_000]).since(&of(&[300]), 0), None);
        assert_eq!(of(&[300]).since(&of(&[10_000]), 0), None);
    }

    #[test]
    fn a_malformed_histogram_is_refused_with_its_fault() {
        let good = of(&[1_000, 20_000, 20_100]);
        assert_eq!(good.check(), Ok(()));
        assert_eq!(of(&[]).check(), Ok(()));
        let with = |f: &dyn Fn(&mut HistogramSnapshot)| {
            let mut h = good.clone();
            f(&mut h);
            h.check()
        };
        assert_eq!(
            with(&|h| h.count += 1),
            Err(HistogramError::CountMismatch { count: 4, total: 3 })
        );
        assert_eq!(
            with(&|h| h.buckets[0].0 = 1_001),
            Err(HistogramError::NotABound(1_001))
        );
        assert_eq!(
            with(&|h| h.buckets.swap(0, 1)),
            Err(HistogramError::NotAscending(good.buckets[0].0))
        );
        assert_eq!(
            with(&|h| {
                h.buckets[0].1 = 0;
                h.count -= 1;
            }),
            Err(HistogramError::EmptyBucket(good.buckets[0].0))
        );
        assert_eq!(
            with(&|h| h.max_ns = 5_000_000),
            Err(HistogramError::MaxOutsideBuckets(5_000_000))
        );
        assert!(matches!(
            with(&|h| h.buckets = vec![(u64::MAX, 1); BUCKETS + 1]),
            Err(HistogramError::TooManyBuckets(_))
        ));
        assert_eq!(
            with(&|h| {
                h.buckets[1].1 = u64::MAX;
                h.count = u64::MAX;
            }),
            Ok(()),
            "saturating totals"
        );
    }

    #[test]
    fn a_snapshot_reads_back_what_was_serialised() {
        let s = of(&[3, 1 << 40]);
        assert_eq!(s.buckets.last().unwrap().0, u64::MAX);
        let back: HistogramSnapshot =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // An older agent's status has no histogram: empty, not an error.
        let old: LatencySnapshot = serde_json::from_str("{}").unwrap();
        assert_eq!(old.reader.quantile(0.5), None);
        assert_eq!(old.check(), Ok(()));
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
