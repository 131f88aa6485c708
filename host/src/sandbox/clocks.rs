//! The clocks a stage reads: virtual by default (a fixed date plus 1 µs per reading and every
//! sleep, so runs are reproducible and timing is no side channel), real when granted, and the
//! clock pollables a sleep waits on (`waits.rs` subscribes them).
//!
//! Virtual time only moves when the stage would otherwise wait: a virtual deadline is ready once
//! the clock has reached it; a wait that nothing else can end moves the clock to the earliest
//! deadline waited on (`waits.rs`), as a discrete-event simulation does. So a sleep returns at
//! once an hour later on the stage's clock, `poll` on deadlines of 1 s and 1 h wakes at 1 s
//! with only the first ready, and asking whether a deadline is ready moves nothing.

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
    /// Virtual time (the default).
    Virtual(Arc<VirtualClock>),
    /// The host's monotonic clock (granted with `real_time_and_random`).
    Real(Instant),
}

impl Clock {
    /// A virtual clock at zero.
    pub(super) fn virtual_clock() -> Self {
        Clock::Virtual(Arc::new(VirtualClock {
            ns: AtomicU64::new(0),
            waited_for: AtomicU64::new(NOT_WAITING),
        }))
    }

    /// The time now, in nanoseconds since the stage started; a reading of the virtual clock
    /// moves it 1 µs.
    pub(super) fn now(&self) -> u64 {
        match self {
            Clock::Virtual(clock) => clock.ns.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed),
            Clock::Real(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// "No virtual deadline is waited on."
const NOT_WAITING: u64 = u64::MAX;

/// A stage's virtual clock: its time, and the earliest deadline a pending wait is blocked on.
pub(crate) struct VirtualClock {
    ns: AtomicU64,
    waited_for: AtomicU64,
}

impl VirtualClock {
    /// Starts watching which deadlines a wait blocks on.
    pub(super) fn start_wait(&self) {
        self.waited_for.store(NOT_WAITING, Ordering::Relaxed);
    }

    /// If the wait just polled was blocked on a virtual deadline, moves the clock to the
    /// earliest one and says so: the wait should be polled again.
    pub(super) fn advance_to_earliest_waited(&self) -> bool {
        let at = self.waited_for.swap(NOT_WAITING, Ordering::Relaxed);
        if at == NOT_WAITING {
            return false;
        }
        self.ns.fetch_max(at, Ordering::Relaxed);
        true
    }
}

/// A clock pollable.
pub(super) enum Deadline {
    /// Ready once the virtual clock has reached `at` (a sleep takes no real time).
    Virtual { clock: Arc<VirtualClock>, at: u64 },
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
                let (clock, at) = (clock.clone(), *at);
                std::future::poll_fn(move |_| {
                    if clock.ns.load(Ordering::Relaxed) >= at {
                        std::task::Poll::Ready(())
                    } else {
                        clock.waited_for.fetch_min(at, Ordering::Relaxed);
                        std::task::Poll::Pending
                    }
                })
                .await
            }
            Deadline::Real(at) => tokio::time::sleep_until(*at).await,
            Deadline::Never => std::future::pending().await,
        }
    }
}

/// A deterministic wall clock: a fixed date plus the virtual monotonic clock's nanoseconds.
pub(super) struct VirtualWallClock(pub(super) Arc<VirtualClock>);

impl wasmtime_wasi::HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_TICK_NS)
    }

    fn now(&self) -> Duration {
        let ns = self.0.ns.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed);
        Duration::from_secs(VIRTUAL_EPOCH_S) + Duration::from_nanos(ns)
    }
}
