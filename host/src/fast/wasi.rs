//! The WASI functions a stage may import on the fast path, lifted and lowered by hand. What
//! they do is not repeated here: each calls the same implementation the component path links
//! (the host's own bounded waits and clocks of `sandbox/waits.rs`, wasmtime-wasi's for the
//! rest, on the same deny-by-default context), so stdout and stderr go to the stage's log,
//! clocks are virtual and randomness seeded unless granted, and every wait is bounded.
//!
//! A resource handle the guest holds is the host table's index plus one (0 is never a
//! handle); the host table checks each handle's type, and its capacity bounds how many a stage
//! may hold, as on the component path.

use wasmtime::component::Resource;
use wasmtime::{Caller, Func, Store};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::WasiCliView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr,
    terminal_stdin, terminal_stdout,
};
use wasmtime_wasi::p2::bindings::clocks::wall_clock;
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::bindings::sync::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError};

use super::abi::{self, Options};
use super::imports::{HostImport, Resource as Kind};
use crate::sandbox::StageCtx;

type C<'a> = Caller<'a, StageCtx>;
type R<T = ()> = wasmtime::Result<T>;

/// The WASI function `import` in `store`, lowered with `options`.
pub(super) fn func(
    import: HostImport,
    store: &mut Store<StageCtx>,
    options: Option<Options>,
) -> Func {
    use HostImport::*;
    match import {
        Drop(kind) => Func::wrap(store, move |mut c: C<'_>, handle: u32| -> R {
            enter(&c)?;
            drop_handle(c.data_mut(), kind, handle)
        }),
        PollableReady => Func::wrap(store, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let ready = poll::HostPollable::ready(&mut c.data_mut().waits(), borrow(h)?)?;
            Ok(u32::from(ready))
        }),
        PollableBlock => Func::wrap(store, |mut c: C<'_>, h: u32| -> R {
            enter(&c)?;
            poll::HostPollable::block(&mut c.data_mut().waits(), borrow(h)?)
        }),
        Poll => Func::wrap(
            store,
            move |mut c: C<'_>, ptr: u32, len: u32, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let memory = o.memory.data(&c);
                abi::list_of(memory, ptr, len, 4, 4)?;
                let mut pollables = Vec::with_capacity(len as usize);
                for i in 0..len as usize {
                    pollables.push(borrow(abi::u32_at(memory, ptr as usize + 4 * i)?)?);
                }
                let ready = poll::Host::poll(&mut c.data_mut().waits(), pollables)?;
                let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
                let list = abi::alloc(&mut c, o, 4, ready.len().saturating_mul(4))?;
                let bytes: Vec<u8> = ready.iter().flat_map(|i| i.to_le_bytes()).collect();
                abi::write(&mut c, o.memory, list, &bytes)?;
                abi::write_pair(&mut c, o.memory, at, (list as u32, ready.len() as u32))
            },
        ),
        InputRead { blocking } => Func::wrap(
            store,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let stream: Resource<DynInputStream> = borrow(h)?;
                let mut waits = c.data_mut().waits();
                let read = if blocking {
                    streams::HostInputStream::blocking_read(&mut waits, stream, len)
                } else {
                    streams::HostInputStream::read(&mut waits, stream, len)
                };
                let read = stream_result(c.data_mut(), read)?;
                let at = abi::return_area(o.memory.data(&c), ret, 4, 12)?;
                match read {
                    Ok(bytes) => {
                        abi::write(&mut c, o.memory, at, &[0])?;
                        let list = abi::lower_bytes(&mut c, o, &bytes)?;
                        abi::write_pair(&mut c, o.memory, at + 4, list)
                    }
                    Err(error) => write_error(&mut c, o, at, 4, error),
                }
            },
        ),
        InputSkip { blocking } => Func::wrap(
            store,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let stream: Resource<DynInputStream> = borrow(h)?;
                let mut waits = c.data_mut().waits();
                let skipped = if blocking {
                    streams::HostInputStream::blocking_skip(&mut waits, stream, len)
                } else {
                    streams::HostInputStream::skip(&mut waits, stream, len)
                };
                let skipped = stream_result(c.data_mut(), skipped)?;
                write_u64_result(&mut c, o, ret, skipped)
            },
        ),
        InputSubscribe => Func::wrap(store, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let stream: Resource<DynInputStream> = borrow(h)?;
            let pollable = streams::HostInputStream::subscribe(&mut c.data_mut().waits(), stream)?;
            to_guest(pollable)
        }),
        OutputCheckWrite => Func::wrap(store, move |mut c: C<'_>, h: u32, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let stream: Resource<DynOutputStream> = borrow(h)?;
            let room = streams::HostOutputStream::check_write(&mut c.data_mut().waits(), stream);
            let room = stream_result(c.data_mut(), room)?;
            write_u64_result(&mut c, o, ret, room)
        }),
        OutputWrite { blocking } => Func::wrap(
            store,
            move |mut c: C<'_>, h: u32, ptr: u32, len: u32, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let bytes = abi::list(o.memory.data(&c), ptr, len)?.to_vec();
                let stream: Resource<DynOutputStream> = borrow(h)?;
                let mut waits = c.data_mut().waits();
                let wrote = if blocking {
                    streams::HostOutputStream::blocking_write_and_flush(&mut waits, stream, bytes)
                } else {
                    streams::HostOutputStream::write(&mut waits, stream, bytes)
                };
                let wrote = stream_result(c.data_mut(), wrote)?;
                write_unit_result(&mut c, o, ret, wrote)
            },
        ),
        OutputWriteZeroes { blocking } => Func::wrap(
            store,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let stream: Resource<DynOutputStream> = borrow(h)?;
                let mut waits = c.data_mut().waits();
                let wrote = if blocking {
                    streams::HostOutputStream::blocking_write_zeroes_and_flush(
                        &mut waits, stream, len,
                    )
                } else {
                    streams::HostOutputStream::write_zeroes(&mut waits, stream, len)
                };
                let wrote = stream_result(c.data_mut(), wrote)?;
                write_unit_result(&mut c, o, ret, wrote)
            },
        ),
        OutputFlush { blocking } => Func::wrap(store, move |mut c: C<'_>, h: u32, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let stream: Resource<DynOutputStream> = borrow(h)?;
            let mut waits = c.data_mut().waits();
            let flushed = if blocking {
                streams::HostOutputStream::blocking_flush(&mut waits, stream)
            } else {
                streams::HostOutputStream::flush(&mut waits, stream)
            };
            let flushed = stream_result(c.data_mut(), flushed)?;
            write_unit_result(&mut c, o, ret, flushed)
        }),
        OutputSubscribe => Func::wrap(store, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let stream: Resource<DynOutputStream> = borrow(h)?;
            let pollable = streams::HostOutputStream::subscribe(&mut c.data_mut().waits(), stream)?;
            to_guest(pollable)
        }),
        GetEnvironment => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let vars = environment::Host::get_environment(&mut c.data_mut().cli())?;
            let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
            let list = abi::lower_pairs(&mut c, o, &vars)?;
            abi::write_pair(&mut c, o.memory, at, list)
        }),
        GetArguments => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let args = environment::Host::get_arguments(&mut c.data_mut().cli())?;
            let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
            let list = abi::lower_strings(&mut c, o, &args)?;
            abi::write_pair(&mut c, o.memory, at, list)
        }),
        InitialCwd => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let cwd = environment::Host::initial_cwd(&mut c.data_mut().cli())?;
            let at = abi::return_area(o.memory.data(&c), ret, 4, 12)?;
            match cwd {
                None => abi::write(&mut c, o.memory, at, &[0]),
                Some(cwd) => {
                    abi::write(&mut c, o.memory, at, &[1])?;
                    let s = abi::lower_bytes(&mut c, o, cwd.as_bytes())?;
                    abi::write_pair(&mut c, o.memory, at + 4, s)
                }
            }
        }),
        Exit => Func::wrap(store, |mut c: C<'_>, status: u32| -> R {
            enter(&c)?;
            let status = match status {
                0 => Ok(()),
                1 => Err(()),
                _ => wasmtime::bail!("invalid expected discriminant"),
            };
            exit::Host::exit(&mut c.data_mut().cli(), status)
        }),
        GetStdin => Func::wrap(store, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stdin::Host::get_stdin(&mut c.data_mut().cli())?)
        }),
        GetStdout => Func::wrap(store, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stdout::Host::get_stdout(&mut c.data_mut().cli())?)
        }),
        GetStderr => Func::wrap(store, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stderr::Host::get_stderr(&mut c.data_mut().cli())?)
        }),
        GetTerminalStdin => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stdin::Host::get_terminal_stdin(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, &options, ret, terminal.map(|t| t.rep()))
        }),
        GetTerminalStdout => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stdout::Host::get_terminal_stdout(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, &options, ret, terminal.map(|t| t.rep()))
        }),
        GetTerminalStderr => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stderr::Host::get_terminal_stderr(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, &options, ret, terminal.map(|t| t.rep()))
        }),
        MonotonicNow => Func::wrap(store, |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            monotonic_clock::Host::now(&mut c.data_mut().waits())
        }),
        MonotonicResolution => Func::wrap(store, |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            monotonic_clock::Host::resolution(&mut c.data_mut().waits())
        }),
        SubscribeInstant => Func::wrap(store, |mut c: C<'_>, when: u64| -> R<u32> {
            enter(&c)?;
            to_guest(monotonic_clock::Host::subscribe_instant(
                &mut c.data_mut().waits(),
                when,
            )?)
        }),
        SubscribeDuration => Func::wrap(store, |mut c: C<'_>, duration: u64| -> R<u32> {
            enter(&c)?;
            let waits = &mut c.data_mut().waits();
            to_guest(monotonic_clock::Host::subscribe_duration(waits, duration)?)
        }),
        WallNow | WallResolution => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let mut clocks = c.data_mut().clocks();
            let time = if import == WallNow {
                wall_clock::Host::now(&mut clocks)?
            } else {
                wall_clock::Host::resolution(&mut clocks)?
            };
            let at = abi::return_area(o.memory.data(&c), ret, 8, 16)?;
            let mut bytes = [0u8; 12];
            bytes[..8].copy_from_slice(&time.seconds.to_le_bytes());
            bytes[8..].copy_from_slice(&time.nanoseconds.to_le_bytes());
            abi::write(&mut c, o.memory, at, &bytes)
        }),
        RandomBytes { insecure } => {
            Func::wrap(store, move |mut c: C<'_>, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = options_of(&options)?;
                let random = c.data_mut().ctx().ctx.random();
                let bytes = if insecure {
                    insecure::Host::get_insecure_random_bytes(random, len)?
                } else {
                    random::Host::get_random_bytes(random, len)?
                };
                let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
                let list = abi::lower_bytes(&mut c, o, &bytes)?;
                abi::write_pair(&mut c, o.memory, at, list)
            })
        }
        RandomU64 { insecure } => Func::wrap(store, move |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            let random = c.data_mut().ctx().ctx.random();
            if insecure {
                insecure::Host::get_insecure_random_u64(random)
            } else {
                random::Host::get_random_u64(random)
            }
        }),
        InsecureSeed => Func::wrap(store, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = options_of(&options)?;
            let (low, high) = insecure_seed::Host::insecure_seed(c.data_mut().ctx().ctx.random())?;
            let at = abi::return_area(o.memory.data(&c), ret, 8, 16)?;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&low.to_le_bytes());
            bytes[8..].copy_from_slice(&high.to_le_bytes());
            abi::write(&mut c, o.memory, at, &bytes)
        }),
        // The stage contract's functions are not WASI (`stage_calls.rs`).
        Pull | Log | Config => Func::wrap(store, |_: C<'_>| -> R {
            wasmtime::bail!("not a WASI function")
        }),
    }
}

/// Every WASI call starts here: refused while the guest may not leave.
fn enter(c: &C<'_>) -> R {
    abi::check_may_leave(c.data())
}

fn options_of(options: &Option<Options>) -> R<&Options> {
    options
        .as_ref()
        .ok_or_else(|| wasmtime::format_err!("the canonical options name no memory"))
}

/// The host resource behind a handle the guest lends.
fn borrow<T: 'static>(handle: u32) -> R<Resource<T>> {
    handle
        .checked_sub(1)
        .map(Resource::new_borrow)
        .ok_or_else(|| wasmtime::format_err!("unknown handle index {handle}"))
}

/// The host resource behind a handle the guest gives up.
fn own<T: 'static>(handle: u32) -> R<Resource<T>> {
    handle
        .checked_sub(1)
        .map(Resource::new_own)
        .ok_or_else(|| wasmtime::format_err!("unknown handle index {handle}"))
}

/// The guest's handle for a resource the host hands over.
fn to_guest<T: 'static>(resource: Resource<T>) -> R<u32> {
    resource
        .rep()
        .checked_add(1)
        .ok_or_else(|| wasmtime::format_err!("resource table full"))
}

/// `canon resource.drop` of a WASI resource.
fn drop_handle(ctx: &mut StageCtx, kind: Kind, handle: u32) -> R {
    match kind {
        Kind::Error => {
            let table = ctx.ctx().table;
            wasmtime_wasi_io::bindings::wasi::io::error::HostError::drop(table, own(handle)?)
        }
        Kind::Pollable => poll::HostPollable::drop(&mut ctx.waits(), own::<DynPollable>(handle)?),
        Kind::InputStream => {
            streams::HostInputStream::drop(&mut ctx.waits(), own::<DynInputStream>(handle)?)
        }
        Kind::OutputStream => {
            streams::HostOutputStream::drop(&mut ctx.waits(), own::<DynOutputStream>(handle)?)
        }
        Kind::TerminalInput => {
            let r: Resource<terminal_input::TerminalInput> = own(handle)?;
            terminal_input::HostTerminalInput::drop(&mut ctx.cli(), r)
        }
        Kind::TerminalOutput => {
            let r: Resource<terminal_output::TerminalOutput> = own(handle)?;
            terminal_output::HostTerminalOutput::drop(&mut ctx.cli(), r)
        }
    }
}

/// A stream's `stream-error`, as the guest sees it: `last-operation-failed` with the handle of
/// its error (case 0), or `closed` (case 1). A trap stays a trap.
struct GuestStreamError {
    case: u8,
    handle: u32,
}

/// Splits a stream call's outcome into its value or the error the guest sees; a trap is an
/// `Err` of the outer result.
fn stream_result<T>(
    ctx: &mut StageCtx,
    result: Result<T, StreamError>,
) -> R<Result<T, GuestStreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => match streams::Host::convert_stream_error(&mut ctx.waits(), error)? {
            streams::StreamError::LastOperationFailed(error) => Ok(Err(GuestStreamError {
                case: 0,
                handle: to_guest(error)?,
            })),
            streams::StreamError::Closed => Ok(Err(GuestStreamError { case: 1, handle: 0 })),
        },
    }
}

/// Writes `result<_, stream-error>` at `ret` (size 12, alignment 4).
fn write_unit_result(
    c: &mut C<'_>,
    o: &Options,
    ret: u32,
    result: Result<(), GuestStreamError>,
) -> R {
    let at = abi::return_area(o.memory.data(&*c), ret, 4, 12)?;
    match result {
        Ok(()) => abi::write(&mut *c, o.memory, at, &[0]),
        Err(error) => write_error(c, o, at, 4, error),
    }
}

/// Writes `result<u64, stream-error>` at `ret` (size 16, alignment 8).
fn write_u64_result(
    c: &mut C<'_>,
    o: &Options,
    ret: u32,
    result: Result<u64, GuestStreamError>,
) -> R {
    let at = abi::return_area(o.memory.data(&*c), ret, 8, 16)?;
    match result {
        Ok(value) => {
            abi::write(&mut *c, o.memory, at, &[0])?;
            abi::write(&mut *c, o.memory, at + 8, &value.to_le_bytes())
        }
        Err(error) => write_error(c, o, at, 8, error),
    }
}

/// Writes the error case of a result at `at`, its `stream-error` payload at `at + payload`.
fn write_error(
    c: &mut C<'_>,
    o: &Options,
    at: usize,
    payload: usize,
    error: GuestStreamError,
) -> R {
    abi::write(&mut *c, o.memory, at, &[1])?;
    abi::write(&mut *c, o.memory, at + payload, &[error.case])?;
    if error.case == 0 {
        abi::write(
            &mut *c,
            o.memory,
            at + payload + 4,
            &error.handle.to_le_bytes(),
        )?;
    }
    Ok(())
}

/// Writes `option<own<terminal>>` at `ret` (size 8, alignment 4).
fn write_option_handle(c: &mut C<'_>, options: &Option<Options>, ret: u32, rep: Option<u32>) -> R {
    let o = options_of(options)?;
    let at = abi::return_area(o.memory.data(&*c), ret, 4, 8)?;
    match rep {
        None => abi::write(&mut *c, o.memory, at, &[0]),
        Some(rep) => {
            let handle = rep
                .checked_add(1)
                .ok_or_else(|| wasmtime::format_err!("resource table full"))?;
            abi::write(&mut *c, o.memory, at, &[1])?;
            abi::write(&mut *c, o.memory, at + 4, &handle.to_le_bytes())
        }
    }
}
