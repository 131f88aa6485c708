//! The WASI functions a stage may import on the fast path, lifted and lowered by hand. What
//! they do is not repeated here: each calls the same implementation the component path links
//! (the host's own bounded waits and clocks of `sandbox/waits.rs`, wasmtime-wasi's for the
//! rest, on the same deny-by-default context), so stdout and stderr go to the stage's log,
//! clocks are virtual and randomness seeded unless granted, and every wait is bounded.
//!
//! A resource handle the guest holds is the host table's index plus one (0 is never a
//! handle); the host table checks each handle's type, and its capacity bounds how many a stage
//! may hold, as on the component path.

mod handles;
mod stream_results;

use wasmtime::component::Resource;
use wasmtime::{Caller, Linker};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::WasiCliView;
use wasmtime_wasi::clocks::WasiClocksView;
use wasmtime_wasi::p2::bindings::cli::{
    environment, exit, stderr, stdin, stdout, terminal_stderr, terminal_stdin, terminal_stdout,
};
use wasmtime_wasi::p2::bindings::clocks::wall_clock;
use wasmtime_wasi::p2::bindings::random::{insecure, insecure_seed, random};
use wasmtime_wasi::p2::bindings::sync::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use self::handles::{borrow, drop_handle, to_guest, write_option_handle};
use self::stream_results::{stream_result, write_error, write_u64_result, write_unit_result};
use super::abi;
use super::imports::HostImport;
use crate::sandbox::StageCtx;

type C<'a> = Caller<'a, StageCtx>;
type R<T = ()> = wasmtime::Result<T>;

/// Defines the WASI function `import` in `linker` as `name` of `module`, its options read from
/// slot `slot` of the calling store's lowerings.
pub(super) fn define(
    import: HostImport,
    slot: usize,
    linker: &mut Linker<StageCtx>,
    (module, name): (&str, &str),
) -> R {
    use HostImport::*;
    match import {
        Drop(kind) => linker.func_wrap(module, name, move |mut c: C<'_>, handle: u32| -> R {
            enter(&c)?;
            drop_handle(c.data_mut(), kind, handle)
        }),
        PollableReady => linker.func_wrap(module, name, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let ready = poll::HostPollable::ready(&mut c.data_mut().waits(), borrow(h)?)?;
            Ok(u32::from(ready))
        }),
        PollableBlock => linker.func_wrap(module, name, |mut c: C<'_>, h: u32| -> R {
            enter(&c)?;
            poll::HostPollable::block(&mut c.data_mut().waits(), borrow(h)?)
        }),
        Poll => linker.func_wrap(
            module,
            name,
            move |mut c: C<'_>, ptr: u32, len: u32, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        InputRead { blocking } => linker.func_wrap(
            module,
            name,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        InputSkip { blocking } => linker.func_wrap(
            module,
            name,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        InputSubscribe => linker.func_wrap(module, name, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let stream: Resource<DynInputStream> = borrow(h)?;
            let pollable = streams::HostInputStream::subscribe(&mut c.data_mut().waits(), stream)?;
            to_guest(pollable)
        }),
        OutputCheckWrite => {
            linker.func_wrap(module, name, move |mut c: C<'_>, h: u32, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
                let stream: Resource<DynOutputStream> = borrow(h)?;
                let room =
                    streams::HostOutputStream::check_write(&mut c.data_mut().waits(), stream);
                let room = stream_result(c.data_mut(), room)?;
                write_u64_result(&mut c, o, ret, room)
            })
        }
        OutputWrite { blocking } => linker.func_wrap(
            module,
            name,
            move |mut c: C<'_>, h: u32, ptr: u32, len: u32, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        OutputWriteZeroes { blocking } => linker.func_wrap(
            module,
            name,
            move |mut c: C<'_>, h: u32, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        OutputFlush { blocking } => {
            linker.func_wrap(module, name, move |mut c: C<'_>, h: u32, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
                let stream: Resource<DynOutputStream> = borrow(h)?;
                let mut waits = c.data_mut().waits();
                let flushed = if blocking {
                    streams::HostOutputStream::blocking_flush(&mut waits, stream)
                } else {
                    streams::HostOutputStream::flush(&mut waits, stream)
                };
                let flushed = stream_result(c.data_mut(), flushed)?;
                write_unit_result(&mut c, o, ret, flushed)
            })
        }
        OutputSubscribe => linker.func_wrap(module, name, |mut c: C<'_>, h: u32| -> R<u32> {
            enter(&c)?;
            let stream: Resource<DynOutputStream> = borrow(h)?;
            let pollable = streams::HostOutputStream::subscribe(&mut c.data_mut().waits(), stream)?;
            to_guest(pollable)
        }),
        GetEnvironment => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = &abi::options(&c, slot)?;
            let vars = environment::Host::get_environment(&mut c.data_mut().cli())?;
            let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
            let list = abi::lower_pairs(&mut c, o, &vars)?;
            abi::write_pair(&mut c, o.memory, at, list)
        }),
        GetArguments => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = &abi::options(&c, slot)?;
            let args = environment::Host::get_arguments(&mut c.data_mut().cli())?;
            let at = abi::return_area(o.memory.data(&c), ret, 4, 8)?;
            let list = abi::lower_strings(&mut c, o, &args)?;
            abi::write_pair(&mut c, o.memory, at, list)
        }),
        InitialCwd => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = &abi::options(&c, slot)?;
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
        Exit => linker.func_wrap(module, name, |mut c: C<'_>, status: u32| -> R {
            enter(&c)?;
            let status = match status {
                0 => Ok(()),
                1 => Err(()),
                _ => wasmtime::bail!("invalid expected discriminant"),
            };
            exit::Host::exit(&mut c.data_mut().cli(), status)
        }),
        GetStdin => linker.func_wrap(module, name, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stdin::Host::get_stdin(&mut c.data_mut().cli())?)
        }),
        GetStdout => linker.func_wrap(module, name, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stdout::Host::get_stdout(&mut c.data_mut().cli())?)
        }),
        GetStderr => linker.func_wrap(module, name, |mut c: C<'_>| -> R<u32> {
            enter(&c)?;
            to_guest(stderr::Host::get_stderr(&mut c.data_mut().cli())?)
        }),
        GetTerminalStdin => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stdin::Host::get_terminal_stdin(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, slot, ret, terminal.map(|t| t.rep()))
        }),
        GetTerminalStdout => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stdout::Host::get_terminal_stdout(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, slot, ret, terminal.map(|t| t.rep()))
        }),
        GetTerminalStderr => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let terminal = terminal_stderr::Host::get_terminal_stderr(&mut c.data_mut().cli())?;
            write_option_handle(&mut c, slot, ret, terminal.map(|t| t.rep()))
        }),
        MonotonicNow => linker.func_wrap(module, name, |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            monotonic_clock::Host::now(&mut c.data_mut().waits())
        }),
        MonotonicResolution => linker.func_wrap(module, name, |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            monotonic_clock::Host::resolution(&mut c.data_mut().waits())
        }),
        SubscribeInstant => linker.func_wrap(module, name, |mut c: C<'_>, when: u64| -> R<u32> {
            enter(&c)?;
            to_guest(monotonic_clock::Host::subscribe_instant(
                &mut c.data_mut().waits(),
                when,
            )?)
        }),
        SubscribeDuration => {
            linker.func_wrap(module, name, |mut c: C<'_>, duration: u64| -> R<u32> {
                enter(&c)?;
                let waits = &mut c.data_mut().waits();
                to_guest(monotonic_clock::Host::subscribe_duration(waits, duration)?)
            })
        }
        WallNow | WallResolution => {
            linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
            })
        }
        RandomBytes { insecure } => {
            linker.func_wrap(module, name, move |mut c: C<'_>, len: u64, ret: u32| -> R {
                enter(&c)?;
                let o = &abi::options(&c, slot)?;
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
        RandomU64 { insecure } => linker.func_wrap(module, name, move |mut c: C<'_>| -> R<u64> {
            enter(&c)?;
            let random = c.data_mut().ctx().ctx.random();
            if insecure {
                insecure::Host::get_insecure_random_u64(random)
            } else {
                random::Host::get_random_u64(random)
            }
        }),
        InsecureSeed => linker.func_wrap(module, name, move |mut c: C<'_>, ret: u32| -> R {
            enter(&c)?;
            let o = &abi::options(&c, slot)?;
            let (low, high) = insecure_seed::Host::insecure_seed(c.data_mut().ctx().ctx.random())?;
            let at = abi::return_area(o.memory.data(&c), ret, 8, 16)?;
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&low.to_le_bytes());
            bytes[8..].copy_from_slice(&high.to_le_bytes());
            abi::write(&mut c, o.memory, at, &bytes)
        }),
        // The stage contract's functions are not WASI (`stage_calls.rs`).
        Pull | Log | Config => linker.func_wrap(module, name, |_: C<'_>| -> R {
            wasmtime::bail!("not a WASI function")
        }),
    }?;
    Ok(())
}

/// Every WASI call starts here: refused while the guest may not leave.
fn enter(c: &C<'_>) -> R {
    abi::check_may_leave(c.data())
}
