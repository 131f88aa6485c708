//! The stage contract's imports on the fast path: `upstream.pull`, `host.log` and
//! `host.config`, lifted and lowered by hand. The rules are not repeated here: `pull` is the
//! same [`UpstreamImports::pull`] the component path calls (R2–R5, X4–X6, the clamp), `log`
//! the same log gate and [`guest_log::emit`].

use wasmtime::{Caller, Linker};

use super::abi::{self, Options};
use super::imports::HostImport;
use crate::bindings::Level;
use crate::guest_log::{self, MAX_LOG_FIELDS};
use crate::policy::InputKeeping;
use crate::sandbox::StageCtx;

/// Defines the function `import` (one of `Pull`, `Log`, `Config`) in `linker` as `name` of
/// `module`, its options read from slot `slot` of the calling store's lowerings.
pub(super) fn define(
    import: HostImport,
    slot: usize,
    linker: &mut Linker<StageCtx>,
    (module, name): (&str, &str),
) -> wasmtime::Result<()> {
    match import {
        HostImport::Pull => linker.func_wrap(
            module,
            name,
            move |mut caller: Caller<'_, StageCtx>, credits: u32, retptr: u32| {
                // Refused first, as wasmtime refuses it, while the guest may not leave (a
                // realloc calling `pull` finds the slot taken by the pull it serves).
                abi::check_may_leave(caller.data())?;
                let options = abi::take_options(&mut caller, slot)?;
                let answer = pull(&mut caller, &options, credits, retptr);
                abi::put_options(&mut caller, slot, options);
                answer
            },
        ),
        HostImport::Log => linker.func_wrap(
            module,
            name,
            move |caller: Caller<'_, StageCtx>,
                  level: u32,
                  message: u32,
                  message_len: u32,
                  fields: u32,
                  fields_len: u32| {
                let options = abi::options(&caller, slot)?;
                log(
                    caller,
                    &options,
                    level,
                    (message, message_len),
                    (fields, fields_len),
                )
            },
        ),
        _ => linker.func_wrap(
            module,
            name,
            move |mut caller: Caller<'_, StageCtx>, retptr: u32| {
                let options = abi::options(&caller, slot)?;
                config(&mut caller, &options, retptr)
            },
        ),
    }?;
    Ok(())
}

/// `pull(credits) -> option<chunk>`: the rules, then the answer written through `retptr`
/// (tag at 0, pointer at 4, length at 8; the bytes where the guest's realloc says). A wasm
/// upstream's chunk is copied once, from its memory straight into this guest's, inside the
/// upstream's delivery, before the upstream's post-return.
///
/// What the guest sees is the component path's: the upstream answers (every check passed),
/// then the return area is checked, then the guest's realloc is called. The time until a
/// delivery begins and after it ends is the upstream's; the delivery's is this stage's. If the
/// upstream faults after a delivery (its post-return trapped) and a restart delivers again,
/// the last delivery is the answer and only the answered chunk is kept for supervision. A
/// lowering that failed fails the call whatever came after it (a trap in this guest's
/// realloc is this guest's fault, as it would be on the component path).
fn pull(
    caller: &mut Caller<'_, StageCtx>,
    options: &Options,
    credits: u32,
    retptr: u32,
) -> wasmtime::Result<()> {
    abi::check_may_leave(caller.data())?;
    let Some(mut pull) = caller.data_mut().start_pull(credits)? else {
        return answer_none(caller, options, retptr);
    };
    let keeping = caller.data().input_keeping();
    let mut since = pull.started();
    let mut kept = None;
    let mut failed = None;
    let answer = pull.ask(&mut |lent, records| {
        caller.data_mut().budget.charge_upstream(since);
        kept = match keeping {
            InputKeeping::Nothing => None,
            InputKeeping::Count => Some((None, records)),
            InputKeeping::Copies => Some((Some(lent.bytes().to_vec()), records)),
        };
        if failed.is_none()
            && let Err(error) = answer_some(caller, options, retptr, lent.bytes())
        {
            failed = Some(error);
        }
        lent.release();
        since = caller.data().budget.ticks();
    });
    if let (Ok(Some(())), Some((bytes, records))) = (&answer, kept) {
        caller.data_mut().keep_pulled(bytes, records);
    }
    let answer = caller.data_mut().pulled(pull, since, answer);
    // A lowering that failed (this guest's realloc trapped or ran out of memory) fails the
    // call whatever the upstream answered after it: the guest is not run on after a trap.
    if let Some(error) = failed {
        return Err(error);
    }
    match answer? {
        Some(()) => Ok(()),
        None => answer_none(caller, options, retptr),
    }
}

/// Writes `none` through `retptr`.
fn answer_none(
    caller: &mut Caller<'_, StageCtx>,
    options: &Options,
    retptr: u32,
) -> wasmtime::Result<()> {
    let at = abi::return_area(options.memory.data(&*caller), retptr, 4, 12)?;
    abi::write(&mut *caller, options.memory, at, &[0])
}

/// Writes `some(bytes)` through `retptr`, the bytes copied into the guest's realloc.
fn answer_some(
    caller: &mut Caller<'_, StageCtx>,
    options: &Options,
    retptr: u32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let at = abi::return_area(options.memory.data(&*caller), retptr, 4, 12)?;
    abi::lower_some_bytes(&mut *caller, options, at, bytes)
}

/// `log(level, message, fields)`: lifted as wasmtime lifts it (the level, then the bounds of
/// the message and of the field list), then the log budget before anything more is read, then
/// at most [`MAX_LOG_FIELDS`] fields, each key and value checked, then the message's UTF-8.
fn log(
    caller: Caller<'_, StageCtx>,
    options: &Options,
    level: u32,
    (message, message_len): (u32, u32),
    (fields, fields_len): (u32, u32),
) -> wasmtime::Result<()> {
    abi::check_may_leave(caller.data())?;
    let level = match level {
        0 => Level::Trace,
        1 => Level::Debug,
        2 => Level::Info,
        3 => Level::Warn,
        4 => Level::Error,
        other => wasmtime::bail!("unexpected discriminant: {other}"),
    };
    let memory = options.memory.data(&caller);
    let bounds = |ptr: u32, len: u32| -> wasmtime::Result<(u32, u32)> {
        let fits = (ptr as usize)
            .checked_add(len as usize)
            .is_some_and(|end| end <= memory.len());
        if fits {
            Ok((ptr, len))
        } else {
            wasmtime::bail!("string pointer/length out of bounds of memory")
        }
    };
    let message = bounds(message, message_len)?;
    abi::list_of(memory, fields, fields_len, 16, 4)?;
    if !caller.data().log_gate().admit() {
        return Ok(());
    }
    let mut pairs = Vec::new();
    for i in 0..(fields_len as usize).min(MAX_LOG_FIELDS) {
        let at = fields as usize + 16 * i;
        let element = memory
            .get(at..at + 16)
            .ok_or_else(|| wasmtime::format_err!("list pointer/length out of bounds of memory"))?;
        let key = bounds(abi::u32_at(element, 0)?, abi::u32_at(element, 4)?)?;
        let value = bounds(abi::u32_at(element, 8)?, abi::u32_at(element, 12)?)?;
        pairs.push((key, value));
    }
    let mut read = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        read.push((
            abi::string(memory, key.0, key.1)?,
            abi::string(memory, value.0, value.1)?,
        ));
    }
    let message = abi::string(memory, message.0, message.1)?;
    guest_log::emit(caller.data().log_name(None), level, message, &read);
    Ok(())
}

/// `config() -> list<tuple<string, string>>`, written through `retptr`.
fn config(
    caller: &mut Caller<'_, StageCtx>,
    options: &Options,
    retptr: u32,
) -> wasmtime::Result<()> {
    abi::check_may_leave(caller.data())?;
    let config = caller.data().config_of(None);
    let at = abi::return_area(options.memory.data(&caller), retptr, 4, 8)?;
    let list = abi::lower_pairs(&mut *caller, options, &config)?;
    abi::write_pair(&mut *caller, options.memory, at, list)
}
