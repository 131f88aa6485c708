//! The one way into a guest. Every entry into guest code (instantiation and its start
//! functions, priming, resume, close, the state handoff's snapshot and restore, and every inner
//! stage of a fused chain; `cabi_realloc` and post-return run inside these calls) goes through
//! [`enter`]: it arms the budgets, marks what the host is serving, enters, and classifies what
//! happened from the host's own records and wasmtime's trap codes, never from message text.
//! [`chunk`] is the one check of what a guest answered (size, framing, credits).

use wasmtime::Store;

use crate::chunk::{Chunk, CountError, count_records};
use crate::error::{Call, Error, Result, Rule};
use crate::limits::{FIRST_CHECK_TICKS, Limit};
use crate::sandbox::{CallReport, Serving, StageCtx};

/// Enters the guest of `store` as `name` for `call`, serving `serving`: arms the epoch deadline
/// (the CPU budget of the call: the handoff budget for a snapshot or restore), the fuel if the
/// stage is metered, and the wall budget of its waits; runs `f`; and turns what happened into
/// the answer, the upstream's fault if one happened meanwhile (X4), or the error that faults
/// the stage (a violation, an upstream's refusal, a limit, a trap). No clock is read.
pub(crate) fn enter<R>(
    store: &mut Store<StageCtx>,
    name: &str,
    call: Call,
    serving: Serving,
    fuel: Option<u64>,
    f: impl FnOnce(&mut Store<StageCtx>) -> wasmtime::Result<R>,
) -> Result<(R, Option<Box<Error>>)> {
    let limits = store.data().budget.limits();
    // A state handoff runs inside a swap's cut-over, while callers wait: its CPU and its waits
    // are bounded by the handoff budget.
    let (cpu, wall) = match call {
        Call::Snapshot | Call::Restore => (
            limits.cpu_per_handoff,
            limits.wall_per_call.min(limits.cpu_per_handoff),
        ),
        _ => (limits.cpu_per_call, limits.wall_per_call),
    };
    store.data_mut().begin(serving, cpu, wall);
    store.set_epoch_deadline(FIRST_CHECK_TICKS);
    if let Some(fuel) = fuel {
        // Only fails when the engine does not meter fuel, which `fuel` rules out.
        let _ = store.set_fuel(fuel);
    }
    let answer = f(store);
    let report = store.data_mut().end();
    classify(store, name, call, answer, report)
}

/// The outcome of an entered call, from the host's records first (a violation, an upstream's
/// refusal), then from how the call ended.
fn classify<R>(
    store: &Store<StageCtx>,
    name: &str,
    call: Call,
    answer: wasmtime::Result<R>,
    report: Option<Box<CallReport>>,
) -> Result<(R, Option<Box<Error>>)> {
    let Some(report) = report else {
        // Nothing happened at the boundary: the usual case.
        return match answer {
            Ok(answer) => Ok((answer, None)),
            Err(error) => Err(fault(store, name, call, &error)),
        };
    };
    let report = *report;
    match (&answer, report.violation) {
        // R4 lets the cleanup go on: if it then trapped or ran out of a budget, that ended it.
        (Err(_), Some((Rule::PullWhileClosing, _))) => {}
        // Any other violation ended the call (the host trapped the guest) or is the verdict on
        // a call that returned.
        (_, Some((rule, detail))) => return Err(violation(name, rule, detail)),
        (_, None) => {}
    }
    if let Some(cause) = report.upstream_refused {
        return Err(Error::UpstreamRefused {
            stage: name.to_string(),
            cause: Box::new(cause),
        });
    }
    match answer {
        Ok(answer) => Ok((answer, report.upstream_fault)),
        Err(error) => Err(fault(store, name, call, &error)),
    }
}

/// Names what ended a call: a budget that ran out (from wasmtime's trap codes: CPU, fuel,
/// stack; from the host's records: memory, wall), or else a trap, quoting what the guest last
/// wrote to stderr (a Rust panic message).
fn fault(store: &Store<StageCtx>, name: &str, call: Call, error: &wasmtime::Error) -> Error {
    let budget = &store.data().budget;
    let exceeded = |limit, detail: String| Error::LimitExceeded {
        stage: name.to_string(),
        limit,
        call,
        detail,
    };
    let trap = error.downcast_ref::<wasmtime::Trap>();
    match trap {
        Some(wasmtime::Trap::Interrupt) => {
            return exceeded(
                Limit::Cpu,
                format!(
                    "the call ran past its CPU budget of {:?}",
                    budget.cpu_budget()
                ),
            );
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return exceeded(
                Limit::Fuel,
                format!(
                    "the call used up its fuel budget of {}",
                    budget.limits().fuel_per_call.unwrap_or(u64::MAX)
                ),
            );
        }
        Some(wasmtime::Trap::StackOverflow) => {
            return exceeded(
                Limit::Stack,
                "wasm stack exhausted (runaway recursion)".into(),
            );
        }
        _ => {}
    }
    if let Some((limit, detail)) = budget.exceeded() {
        return exceeded(*limit, detail.clone());
    }
    // One line: the trap, or the root cause without wasmtime's backtrace frames.
    let mut message = match trap {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(words) = store.data().last_words() {
        message.push_str(&format!("; guest stderr: {words}"));
    }
    Error::Trap {
        stage: name.to_string(),
        call,
        message,
    }
}

/// Checks what a guest answered to `resume(credits)` (or an inner stage to its priming) before
/// anything is delivered: at most `max_bytes` bytes, well framed (C1), at most `credits`
/// records (C2; P1 on the priming call, S1 on a pause).
pub(crate) fn chunk(
    name: &str,
    call: Call,
    credits: u32,
    bytes: Vec<u8>,
    max_bytes: usize,
) -> Result<Chunk> {
    let records = check(name, call, credits, &bytes, max_bytes)?;
    Ok(Chunk::from_checked(bytes, records))
}

/// [`chunk`]'s checks on bytes where they are (the answering guest's memory, on the fast
/// path): the number of records if they pass.
pub(crate) fn check(
    name: &str,
    call: Call,
    credits: u32,
    bytes: &[u8],
    max_bytes: usize,
) -> Result<u32> {
    if bytes.len() > max_bytes {
        return Err(Error::LimitExceeded {
            stage: name.to_string(),
            limit: Limit::ChunkBytes,
            call,
            detail: format!(
                "a {}-byte chunk, over the {max_bytes}-byte cap (it was granted {credits} \
                 credits: a stage downstream that asks for more records than fit in a chunk \
                 can be clamped with limits.max_chunk_records)",
                bytes.len()
            ),
        });
    }
    count_records(bytes, credits).map_err(|error| chunk_violation(name, call, credits, error))
}

/// Names the rule a bad chunk broke: framing (C1), or too many records, which is P1 on the
/// priming call, S1 on a pause and C2 otherwise.
fn chunk_violation(name: &str, call: Call, credits: u32, error: CountError) -> Error {
    match error {
        CountError::Framing(e) => violation(name, Rule::BadFraming, format!("chunk {e}")),
        CountError::TooMany { .. } if credits == 0 && call == Call::Prime => violation(
            name,
            Rule::DataOnPriming,
            "the priming resume(0) answered records; it must answer an empty chunk".into(),
        ),
        CountError::TooMany { .. } if credits == 0 => violation(
            name,
            Rule::DataWhilePaused,
            "a pause resume(0) answered records; it must answer an empty chunk".into(),
        ),
        CountError::TooMany { .. } => violation(
            name,
            Rule::CreditsExceeded,
            format!("resume({credits}) answered more than {credits} records"),
        ),
    }
}

pub(crate) fn violation(name: &str, rule: Rule, detail: String) -> Error {
    Error::ProtocolViolation {
        stage: name.to_string(),
        rule,
        detail,
    }
}
