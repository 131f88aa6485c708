//! What the host counts about each stage: calls that entered the guest, and what it delivered.
//! Counters are atomics so they can be read while the stage runs (progress displays).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of one stage's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    resumes_entered: AtomicU64,
    closes_entered: AtomicU64,
    chunks: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn entered_resume(&self) {
        self.resumes_entered.fetch_add(1, Relaxed);
    }

    pub(crate) fn entered_close(&self) {
        self.closes_entered.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, records: u32, bytes: usize) {
        self.chunks.fetch_add(1, Relaxed);
        self.records.fetch_add(u64::from(records), Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StageStats {
        StageStats {
            resumes_entered: self.resumes_entered.load(Relaxed),
            closes_entered: self.closes_entered.load(Relaxed),
            chunks: self.chunks.load(Relaxed),
            records: self.records.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
        }
    }
}
