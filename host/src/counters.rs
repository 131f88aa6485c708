//! What the host counts about each stage (and the native source and the sink): calls that
//! entered the guest, credits granted, what it delivered, and how long its resumes took. Counters are atomics so they can be read while
//! the stage runs (progress displays); nothing here allocates on the hot path.
//!
//! Only the thread that holds the stage's lock writes its counters, so the hot-path counters
//! are bumped with a plain load and store ([`bump`]) rather than a locked read-modify-write:
//! readers may see a value a moment old, never a torn or lost one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct StageStats {
    /// Calls to `resume` that entered the guest (priming and pauses included).
    pub resumes_entered: u64,
    /// Calls to `close` that entered the guest (at most 1).
    pub closes_entered: u64,
    /// Chunks delivered downstream (after every check passed).
    pub chunks: u64,
    /// Records delivered downstream.
    pub records: u64,
    /// Bytes delivered downstream, framing included.
    pub bytes: u64,
    /// Times the stage was restarted after a fault.
    pub restarts: u64,
    /// Times the stage's component was hot-swapped.
    pub swaps: u64,
    /// Records quarantined (the input of calls that faulted before a restart).
    pub quarantined_records: u64,
    /// Credits granted over all resumes that entered the guest; `records <= credits_granted`.
    pub credits_granted: u64,
    /// Median time of a resume that entered the guest, in microseconds. Inclusive: a stage's
    /// resume contains the resumes of the stages it pulled from. Sampled: every resume of the
    /// first 256, then one in 16.
    pub resume_p50_us: f64,
    /// 99th percentile of the same, in microseconds.
    pub resume_p99_us: f64,
    /// The slowest sampled resume, in microseconds (the upper bound of its histogram bucket).
    pub resume_max_us: f64,
    /// The most memory any instance of the stage held (all its linear memories and tables), in
    /// bytes.
    pub memory_peak_bytes: u64,
    /// Log lines the stage wrote over its budget, counted instead of logged.
    pub log_lines_suppressed: u64,
}

/// Resumes whose latency is always recorded, before sampling starts.
const LATENCY_EVERY_UNTIL: u64 = 256;
/// After those, one resume in this many is timed.
const LATENCY_SAMPLE: u64 = 16;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    resumes_entered: AtomicU64,
    closes_entered: AtomicU64,
    chunks: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    credits_granted: AtomicU64,
    restarts: AtomicU64,
    swaps: AtomicU64,
    quarantined_records: AtomicU64,
    /// Shared with the log gate of every instance of the stage.
    log_lines_suppressed: Arc<AtomicU64>,
    memory_peak_bytes: AtomicU64,
    latency: Histogram,
}

impl Counters {
    /// The count of suppressed log lines, for the log gate of a new instance.
    pub(crate) fn log_lines_suppressed(&self) -> Arc<AtomicU64> {
        self.log_lines_suppressed.clone()
    }

    /// Counts a resume that enters the guest; true if its time should go into the latency
    /// histogram: every one of the first [`LATENCY_EVERY_UNTIL`], then one in
    /// [`LATENCY_SAMPLE`] (two clock reads per call are a tenth of a hop).
    pub(crate) fn entered_resume(&self, credits: u32) -> bool {
        let n = self.resumes_entered.load(Relaxed);
        bump(&self.resumes_entered, 1);
        bump(&self.credits_granted, u64::from(credits));
        n < LATENCY_EVERY_UNTIL || n.is_multiple_of(LATENCY_SAMPLE)
    }

    pub(crate) fn restarted(&self, quarantined_records: u64) {
        self.restarts.fetch_add(1, Relaxed);
        self.quarantined_records
            .fetch_add(quarantined_records, Relaxed);
    }

    pub(crate) fn swapped(&self) {
        self.swaps.fetch_add(1, Relaxed);
    }

    pub(crate) fn resume_took(&self, elapsed: Duration) {
        self.latency.record(elapsed);
    }

    /// An instance of the stage held `bytes` (memories and tables).
    pub(crate) fn memory_reached(&self, bytes: usize) {
        self.memory_peak_bytes
            .fetch_max(u64::try_from(bytes).unwrap_or(u64::MAX), Relaxed);
    }

    pub(crate) fn entered_close(&self) {
        self.closes_entered.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, records: u32, bytes: usize) {
        bump(&self.chunks, 1);
        bump(&self.records, u64::from(records));
        bump(&self.bytes, bytes as u64);
    }

    /// Records delivered so far: one load, where a [`Counters::snapshot`] also works out the
    /// latency quantiles.
    pub(crate) fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }

    pub(crate) fn snapshot(&self) -> StageStats {
        StageStats {
            resumes_entered: self.resumes_entered.load(Relaxed),
            closes_entered: self.closes_entered.load(Relaxed),
            chunks: self.chunks.load(Relaxed),
            records: self.records.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            credits_granted: self.credits_granted.load(Relaxed),
            restarts: self.restarts.load(Relaxed),
            swaps: self.swaps.load(Relaxed),
            quarantined_records: self.quarantined_records.load(Relaxed),
            resume_p50_us: self.latency.quantile_us(0.50),
            resume_p99_us: self.latency.quantile_us(0.99),
            resume_max_us: self.latency.quantile_us(1.0),
            memory_peak_bytes: self.memory_peak_bytes.load(Relaxed),
            log_lines_suppressed: self.log_lines_suppressed.load(Relaxed),
        }
    }
}

/// Adds `n` to a counter that only one thread writes at a time (see the module docs).
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Buckets per doubling of the duration: each bucket spans about 19%.
const SUBBUCKETS: u32 = 4;
/// Durations up to 2^40 ns (18 minutes) have a bucket; longer ones land in the last.
const BUCKETS: usize = 40 * SUBBUCKETS as usize;

/// A log-bucketed histogram of durations with fixed, lock-free storage.
#[derive(Debug)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Histogram {
    fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX).max(1);
        bump(&self.buckets[bucket_of(ns)], 1);
    }

    /// The upper bound of the bucket holding quantile `q`, in microseconds; 0 when empty.
    fn quantile_us(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_bound_ns(i) / 1000.0;
            }
        }
        upper_bound_ns(BUCKETS - 1) / 1000.0
    }
}

fn bucket_of(ns: u64) -> usize {
    let octave = 63 - ns.leading_zeros();
    let fraction = if octave >= 2 {
        ((ns >> (octave - 2)) & 0b11) as u32
    } else {
        0
    };
    ((octave * SUBBUCKETS + fraction) as usize).min(BUCKETS - 1)
}

fn upper_bound_ns(bucket: usize) -> f64 {
    let octave = (bucket as u32 / SUBBUCKETS) as i32;
    let fraction = (bucket as u32 % SUBBUCKETS) as f64;
    2f64.powi(octave) * (1.0 + (fraction + 1.0) / f64::from(SUBBUCKETS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket_of_the_truth() {
        let h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((50.0..=50.0 * 1.25).contains(&p50), "p50 {p50}");
        assert!((99.0..=99.0 * 1.25).contains(&p99), "p99 {p99}");
        assert_eq!(Histogram::default().quantile_us(0.5), 0.0);
    }
}
