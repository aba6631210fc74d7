//! Decision latency: how long the agent took to answer each permission
//! event, from the moment its reader had read the event to the moment the
//! answer was written back. (The time an event spent queued in the kernel
//! before the read is not visible from user space.)
//!
//! The counts live in atomics laid out as `palisade_core::latency`'s
//! buckets. Recording is a few relaxed atomic operations: no lock, no
//! allocation, so it sits on the decision path. Snapshots are the core's
//! values, shown by `palisade status` and sent to the service in the
//! agent's status reports.
use palisade_core::latency::{bucket_index, bucket_upper_bound, BUCKETS};
pub use palisade_core::latency::{human_ns, HistogramSnapshot, LatencySnapshot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Answer times, recorded from any thread.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    /// The longest answer since the last status report (see
    /// [`DecisionLatency::report`]).
    window_max_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            window_max_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Count one answer that took `took`.
    pub fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_index(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
        self.window_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The counts so far. Taken bucket by bucket while other threads may
    /// record, so `count` and `sum_ns` can disagree by the answers recorded
    /// meanwhile; each bucket is exact, and `count` is their total. The
    /// maximum, read apart from the buckets, is kept inside the highest
    /// bucket copied, so that the snapshot passes
    /// [`HistogramSnapshot::check`].
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(u64, u64)> = self
            .counts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then(|| (bucket_upper_bound(i), n))
            })
            .collect();
        let mut snapshot = HistogramSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
            max_ns: self.max_ns.load(Ordering::Relaxed),
            buckets,
        };
        snapshot.clamp_max();
        snapshot
    }
}

/// Answer times of the agent's two kinds of deciders (see
/// [`LatencySnapshot`] for which is which).
#[derive(Debug, Default)]
pub struct DecisionLatency {
    /// Events answered on the reader thread.
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

    /// For a status report: both histograms, and the answers since `last`,
    /// the previous report's (`None` if there was none since this agent
    /// started). Starts the next window's maximum.
    pub fn report(
        &self,
        last: Option<&LatencySnapshot>,
    ) -> (LatencySnapshot, Option<LatencySnapshot>) {
        let window_max = |h: &Histogram| h.window_max_ns.swap(0, Ordering::Relaxed);
        let (reader_max, workers_max) = (window_max(&self.reader), window_max(&self.workers));
        let now = self.snapshot();
        let recent = last.and_then(|last| {
            Some(LatencySnapshot {
                reader: now.reader.since(&last.reader, reader_max)?,
                workers: now.workers.since(&last.workers, workers_max)?,
            })
        });
        (now, recent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_answers_make_a_valid_snapshot() {
        let h = Histogram::default();
        assert_eq!(h.snapshot(), HistogramSnapshot::default());
        for us in [10, 10, 100, 5_000] {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_secs(1_000));
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert_eq!(s.max_ns, 1_000_000_000_000);
        assert_eq!(s.buckets.last().unwrap().0, u64::MAX);
        assert_eq!(s.check(), Ok(()));
        assert_eq!(s.quantile(0.4), s.quantile(0.2));
    }

    #[test]
    fn each_report_carries_the_answers_since_the_last() {
        let l = DecisionLatency::default();
        l.reader.record(Duration::from_micros(10));
        l.workers.record(Duration::from_millis(40));
        let (first, recent) = l.report(None);
        assert_eq!(recent, None, "no earlier report");
        l.reader.record(Duration::from_micros(20));
        l.reader.record(Duration::from_micros(21));
        let (second, recent) = l.report(Some(&first));
        let recent = recent.unwrap();
        assert_eq!(second.reader.count, 3);
        assert_eq!(recent.reader.count, 2);
        assert_eq!(recent.reader.max_ns, 21_000, "the window's own maximum");
        assert_eq!(recent.workers, HistogramSnapshot::default());
        assert_eq!(recent.check(), Ok(()));
        // A window with nothing in it.
        let (_, recent) = l.report(Some(&second));
        assert_eq!(recent.unwrap().all(), HistogramSnapshot::default());
    }

    #[test]
    fn a_snapshot_taken_while_answers_are_counted_is_valid() {
        let h = std::sync::Arc::new(Histogram::default());
        let writer = {
            let h = h.clone();
            std::thread::spawn(move || {
                for i in 0..200_000u64 {
                    h.record(Duration::from_nanos(100 + i * 37));
                }
            })
        };
        while !writer.is_finished() {
            let s = h.snapshot();
            assert_eq!(s.check(), Ok(()), "{s:?}");
        }
        writer.join().unwrap();
        assert_eq!(h.snapshot().count, 200_000);
    }
}
