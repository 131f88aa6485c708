//! The WASI a stage sees: linked deny-by-default (no files, environment, arguments, sockets or
//! name lookup; stdin closed; stdout and stderr go to the stage's log), with clocks and
//! randomness virtual unless granted, and **no wait without a bound**.
//!
//! Waiting is where a guest could hold the host hostage without using any CPU: a Rust stage's
//! `std::thread::sleep` is `monotonic-clock.subscribe-duration` then `pollable.block`, served in
//! host code, where no epoch deadline can reach it. So the host serves those interfaces itself:
//!
//! - **Virtual clocks** (the default): a clock pollable is ready at once and moves the stage's
//!   virtual clock to its deadline. A sleep of an hour returns immediately and the stage reads
//!   an hour later on its clock; runs stay reproducible.
//! - **Every blocking wait** (`poll`, `pollable.block`, the `blocking-*` stream calls), with real
//!   clocks or not, first checks whether it is ready (stdout and stderr always are, so writing
//!   to them never enters an async runtime), and otherwise blocks for at most what is left of
//!   the call's wall budget ([`Limits::wall_per_call`](crate::Limits::wall_per_call)); past it,
//!   the call traps and the stage faults with the `wall` limit.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::{in_tokio, poll_noop, with_ambient_tokio_runtime};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as async_streams;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as In, HostOutputStream as Out,
};

use super::store::StageCtx;
use crate::guest_log::LogPipe;
use crate::limits::Budget;

/// WASI resource handles one stage may hold at once.
pub(crate) const MAX_WASI_HANDLES: usize = 1024;

/// Nanoseconds a virtual clock advances per reading.
const VIRTUAL_TICK_NS: u64 = 1_000;
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
    fn now(&self) -> u64 {
        match self {
            Clock::Virtual(ns) => ns.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed),
            Clock::Real(start) => u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// The stage's WASI context, denying everything but stdout/stderr (to its log) and clocks and
/// randomness (virtual unless `real`), and the monotonic clock that goes with it.
pub(crate) fn context(
    name: &str,
    stdout: LogPipe,
    stderr: LogPipe,
    real: bool,
) -> (WasiCtx, Clock) {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout)
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    let clock = if real {
        Clock::Real(Instant::now())
    } else {
        let ns = Arc::new(AtomicU64::new(0));
        wasi.wall_clock(VirtualWallClock(ns.clone()))
            .secure_random(wasmtime_wasi::Deterministic::new(seed_bytes(name)))
            .insecure_random(wasmtime_wasi::Deterministic::new(seed_bytes(name)))
            .insecure_random_seed(0x5eed);
        Clock::Virtual(ns)
    };
    (wasi.build(), clock)
}

/// A resource table that holds at most [`MAX_WASI_HANDLES`] handles, so a guest cannot make
/// the host's handle table grow without bound.
pub(crate) fn handle_table() -> ResourceTable {
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_WASI_HANDLES);
    table
}

/// Replaces wasmtime-wasi's monotonic clock, `wasi:io/poll` and `wasi:io/streams` in `linker`
/// with the bounded versions of this module. Call after `add_to_linker_sync`.
pub(crate) fn shadow_waits(linker: &mut Linker<StageCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    monotonic_clock::add_to_linker::<StageCtx, Waits>(linker, StageCtx::waits)?;
    poll::add_to_linker::<StageCtx, Waits>(linker, StageCtx::waits)?;
    streams::add_to_linker::<StageCtx, Waits>(linker, StageCtx::waits)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The parts of a stage's store the waits need.
pub(crate) struct WaitView<'a> {
    pub(crate) table: &'a mut ResourceTable,
    pub(crate) budget: &'a mut Budget,
    pub(crate) clock: &'a Clock,
}

/// The [`HasData`] of the interfaces served here.
pub(crate) struct Waits;

impl HasData for Waits {
    type Data<'a> = WaitView<'a>;
}

/// Runs `future` to completion if it is ready now; otherwise blocks for at most what is left of
/// the call's wall budget, then gives up with an error that traps the guest (the budget
/// records `wall`, so the fault is named from the host's records).
fn bounded<F: Future>(budget: &mut Budget, future: F) -> wasmtime::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    if let Some(done) = with_ambient_tokio_runtime(|| poll_noop(future.as_mut())) {
        return Ok(done);
    }
    let left = budget.wait_left();
    let started = Instant::now();
    let outcome = in_tokio(async move { tokio::time::timeout(left, future).await });
    budget.charge_wait(started.elapsed(), outcome.is_err());
    outcome.map_err(|_| wasmtime::format_err!("the wall budget of the call ran out in a WASI wait"))
}

fn bounded_stream<T>(
    budget: &mut Budget,
    future: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    bounded(budget, future).map_err(StreamError::Trap)?
}

impl monotonic_clock::Host for WaitView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.now())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(match self.clock {
            Clock::Virtual(_) => VIRTUAL_TICK_NS,
            Clock::Real(_) => 1,
        })
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let deadline = match self.clock {
            Clock::Virtual(ns) => Deadline::Virtual {
                clock: ns.clone(),
                at: when,
            },
            Clock::Real(_) => {
                let wait = when.saturating_sub(self.clock.now());
                Deadline::real_after(Duration::from_nanos(wait))
            }
        };
        let deadline = self.table.push(deadline)?;
        wasmtime_wasi::p2::subscribe(self.table, deadline)
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let deadline = match self.clock {
            Clock::Virtual(ns) => Deadline::Virtual {
                clock: ns.clone(),
                at: self.clock.now().saturating_add(duration),
            },
            Clock::Real(_) => Deadline::real_after(Duration::from_nanos(duration)),
        };
        let deadline = self.table.push(deadline)?;
        wasmtime_wasi::p2::subscribe(self.table, deadline)
    }
}

/// A clock pollable.
enum Deadline {
    /// Ready at once; moves the virtual clock to `at` (a sleep takes no real time).
    Virtual { clock: Arc<AtomicU64>, at: u64 },
    /// Ready at a real instant.
    Real(tokio::time::Instant),
    /// A deadline too far away to represent: never ready (the wall budget still bounds it).
    Never,
}

impl Deadline {
    fn real_after(wait: Duration) -> Self {
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

impl poll::Host for WaitView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        bounded(self.budget, async_poll::Host::poll(self.table, pollables))?
    }
}

impl poll::HostPollable for WaitView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        bounded(
            self.budget,
            async_poll::HostPollable::ready(self.table, pollable),
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        bounded(
            self.budget,
            async_poll::HostPollable::block(self.table, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        async_poll::HostPollable::drop(self.table, pollable)
    }
}

impl streams::Host for WaitView<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        Ok(
            match async_streams::Host::convert_stream_error(self.table, err)? {
                async_streams::StreamError::LastOperationFailed(e) => {
                    streams::StreamError::LastOperationFailed(e)
                }
                async_streams::StreamError::Closed => streams::StreamError::Closed,
            },
        )
    }
}

impl streams::HostOutputStream for WaitView<'_> {
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        bounded(self.budget, Out::drop(self.table, stream))?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        Out::check_write(self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        Out::write(self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        bounded_stream(
            self.budget,
            Out::blocking_write_and_flush(self.table, stream, bytes),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        bounded_stream(
            self.budget,
            Out::blocking_write_zeroes_and_flush(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        Out::subscribe(self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        Out::write_zeroes(self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        Out::flush(self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        bounded_stream(self.budget, Out::blocking_flush(self.table, stream))
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        Out::splice(self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        bounded_stream(self.budget, Out::blocking_splice(self.table, dst, src, len))
    }
}

impl streams::HostInputStream for WaitView<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        bounded(self.budget, In::drop(self.table, stream))?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        In::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        bounded_stream(self.budget, In::blocking_read(self.table, stream, len))
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        In::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        bounded_stream(self.budget, In::blocking_skip(self.table, stream, len))
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        In::subscribe(self.table, stream)
    }
}

/// A deterministic wall clock: a fixed date plus the virtual monotonic clock's nanoseconds.
struct VirtualWallClock(Arc<AtomicU64>);

impl wasmtime_wasi::HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(VIRTUAL_TICK_NS)
    }

    fn now(&self) -> Duration {
        let ns = self.0.fetch_add(VIRTUAL_TICK_NS, Ordering::Relaxed);
        Duration::from_secs(VIRTUAL_EPOCH_S) + Duration::from_nanos(ns)
    }
}

/// Seeded "randomness" derived from the stage name: reproducible, and different per stage.
fn seed_bytes(name: &str) -> Vec<u8> {
    let mut state = 0xcbf2_9ce4_8422_2325u64;
    (0..64)
        .map(|i| {
            for b in name.bytes().chain([i]) {
                state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            (state >> 24) as u8
        })
        .collect()
}
