//! **No wait without a bound**: the WASI interfaces a stage waits through (the monotonic clock,
//! `wasi:io/poll`, `wasi:io/streams`), served by the host in place of wasmtime-wasi's.
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
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Resource, ResourceTable};
pub(super) use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
pub(super) use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::{in_tokio, poll_noop, with_ambient_tokio_runtime};
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;
use wasmtime_wasi_io::bindings::wasi::io::streams as async_streams;
use wasmtime_wasi_io::bindings::wasi::io::streams::{
    HostInputStream as In, HostOutputStream as Out,
};

use super::clocks::{Clock, Deadline, VIRTUAL_TICK_NS};
use crate::limits::Budget;

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

/// Runs `future` to completion if it is ready now, or once the stage's virtual clock has moved
/// to the earliest virtual deadline it is blocked on; otherwise blocks for at most what is left
/// of the call's wall budget, then gives up with an error that traps the guest (the budget
/// records `wall`, so the fault is named from the host's records).
fn bounded<F: Future>(
    budget: &mut Budget,
    clock: &Clock,
    future: F,
) -> wasmtime::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    let virtual_clock = match clock {
        Clock::Virtual(clock) => Some(clock),
        Clock::Real(_) => None,
    };
    if let Some(clock) = virtual_clock {
        clock.start_wait();
    }
    loop {
        if let Some(done) = with_ambient_tokio_runtime(|| poll_noop(future.as_mut())) {
            return Ok(done);
        }
        match virtual_clock {
            // Blocked on a virtual deadline: time moves to it, and the wait is polled again.
            Some(clock) if clock.advance_to_earliest_waited() => {}
            _ => break,
        }
    }
    let left = budget.wait_left();
    let started = Instant::now();
    let outcome = in_tokio(async move { tokio::time::timeout(left, future).await });
    budget.charge_wait(started.elapsed(), outcome.is_err());
    outcome.map_err(|_| wasmtime::format_err!("the wall budget of the call ran out in a WASI wait"))
}

/// [`bounded`] for a stream operation, whose errors are stream errors.
fn bounded_stream<T>(
    budget: &mut Budget,
    clock: &Clock,
    future: impl Future<Output = StreamResult<T>>,
) -> StreamResult<T> {
    bounded(budget, clock, future).map_err(StreamError::Trap)?
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

impl poll::Host for WaitView<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        bounded(
            self.budget,
            self.clock,
            async_poll::Host::poll(self.table, pollables),
        )?
    }
}

impl poll::HostPollable for WaitView<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        bounded(
            self.budget,
            self.clock,
            async_poll::HostPollable::ready(self.table, pollable),
        )?
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        bounded(
            self.budget,
            self.clock,
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
        bounded(self.budget, self.clock, Out::drop(self.table, stream))?
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
            self.clock,
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
            self.clock,
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
        bounded_stream(
            self.budget,
            self.clock,
            Out::blocking_flush(self.table, stream),
        )
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
        bounded_stream(
            self.budget,
            self.clock,
            Out::blocking_splice(self.table, dst, src, len),
        )
    }
}

impl streams::HostInputStream for WaitView<'_> {
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        bounded(self.budget, self.clock, In::drop(self.table, stream))?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        In::read(self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        bounded_stream(
            self.budget,
            self.clock,
            In::blocking_read(self.table, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        In::skip(self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        bounded_stream(
            self.budget,
            self.clock,
            In::blocking_skip(self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        In::subscribe(self.table, stream)
    }
}
