//! The clocks a stage reads: virtual by default (a fixed date plus 1 µs per reading and every
//! sleep, so runs are reproducible and timing is no side channel), real when granted, and the
//! clock pollables a sleep waits on (`waits.rs` subscribes them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds a virtual clock advances per reading.
pub(super) const VIRTUAL_TICK_NS: u64 = 1_000;
/// The virtual wall clock starts at 2024-01-01T00:00:00Z.
const VIRTUAL_EPOCH_S: u64 = 1_704_067_200;

/// The monotonic clock a stage reads.
#[derive(Clone)]
pub(crate) enum Clock {
    /// Nanoseconds since the stage started, advanced 1 µs per reading and by every sleep.
    Virtual(Arc<AtomicU64>),
    /// The host's monotonic clock (granted with `real_time_and_random`).
    Real(Instant),
}

impl Clock {
    pub(super) fn now(&self) -> u64 {
        match self {
            Clock::Virtual(ns) => ns.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed),
            Clock::Real(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// A clock pollable.
pub(super) enum Deadline {
    /// Ready at once; moves the virtual clock to `at` (a sleep takes no real time).
    Virtual { clock: Arc<AtomicU64>, at: u64 },
    /// Ready at a real instant.
    Real(tokio::time::Instant),
    /// A deadline too far away to represent: never ready (the wall budget still bounds it).
    Never,
}

impl Deadline {
    pub(super) fn real_after(wait: Duration) -> Self {
        match tokio::time::Instant::now().checked_add(wait) {
            Some(at) => Deadline::Real(at),
            None => Deadline::Never,
        }
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Deadline {
    async fn ready(&mut self) {
        match self {
            Deadline::Virtual { clock, at } => {
                clock.fetch_max(*at, Ordering::Relaxed);
            }
            Deadline::Real(at) => tokio::time::sleep_until(*at).await,
            Deadline::Never => std::future::pending().await,
        }
    }
}

/// A deterministic wall clock: a fixed date plus the virtual monotonic clock's nanoseconds.
pub(super) struct VirtualWallClock(pub(super) Arc<AtomicU64>);

impl wasmtime_wasi::HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_TICK_NS)
    }

    fn now(&self) -> Duration {
        let ns = self.0.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed);
        Duration::from_secs(VIRTUAL_EPOCH_S) + Duration::from_nanos(ns)
    }
}
