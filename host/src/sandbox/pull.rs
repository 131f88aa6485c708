//! The `upstream.pull` a guest imports: rules R2–R5 and X4–X6 of docs/protocol.md, and the
//! clamp of every pull (records and bytes) before the upstream produces anything. Both paths
//! share it: the component path through [`UpstreamImports::pull`], the fast path through
//! [`StageCtx::start_pull`], [`Pull::ask`] and [`StageCtx::pulled`], so that its host function
//! can copy a wasm upstream's answer straight from that stage's memory into its guest's.

use super::store::{Serving, StageCtx};
use crate::bindings::UpstreamImports;
use crate::chunk::{Deliver, Lent};
use crate::error::{Result, Rule};
use crate::policy::InputKeeping;
use crate::upstream::{Demand, NoUpstream, Upstream};

/// A pull under way: the clamped demand, the upstream (out of the store while it answers, so
/// that the delivery may use the store) and the epoch tick it started at.
pub(crate) struct Pull {
    demand: Demand,
    upstream: Box<dyn Upstream>,
    ticks: u64,
}

impl Pull {
    /// The epoch tick the pull started at: from there the time is the upstream's, until a
    /// delivery into this stage begins (see [`StageCtx::pulled`]).
    pub(crate) fn started(&self) -> u64 {
        self.ticks
    }

    /// Asks the upstream for the demand, its chunk handed to `deliver` once checked: a wasm
    /// stage's straight from its memory, a host-native upstream's from its chunk.
    pub(crate) fn ask<T>(&mut self, deliver: Deliver<'_, T>) -> Result<Option<T>> {
        match self.upstream.as_stage() {
            Some(stage) => stage.resume_with(self.demand.records, deliver),
            None => Ok(self.upstream.pull(self.demand)?.map(|chunk| {
                let records = chunk.len();
                deliver(Lent::Owned(chunk.into_bytes()), records)
            })),
        }
    }
}

impl StageCtx {
    /// The rules before the upstream is asked (R2–R4, R5): the pull to make, or `None` when
    /// the answer is `none` without asking. An `Err` traps the guest.
    pub(crate) fn start_pull(&mut self, credits: u32) -> wasmtime::Result<Option<Pull>> {
        match self.serving {
            Serving::Nothing => {
                self.violate(
                    Rule::PullOutsideCall,
                    format!("pull({credits}) while the host is not inside resume or close"),
                );
                wasmtime::bail!("protocol violation: pull outside a call");
            }
            Serving::Close => {
                // R4: refuse, let cleanup go on, report once close returns.
                self.violate(
                    Rule::PullWhileClosing,
                    format!("pull({credits}) while closing; the host answered none"),
                );
                return Ok(None);
            }
            Serving::Resume(0) if credits > 0 => {
                self.violate(
                    Rule::PullWithoutDemand,
                    format!("pull({credits}) while serving resume(0); only pull(0) is allowed"),
                );
                wasmtime::bail!("protocol violation: pull without demand");
            }
            Serving::Resume(_) => {}
        }
        if self.upstream_done {
            return Ok(None); // R5
        }
        // Clamped before the upstream produces anything: what the clamp leaves upstream comes
        // with the next pull.
        let limits = self.budget.limits();
        let demand = Demand::records(credits.min(limits.max_pull_records))
            .with_max_bytes(limits.max_chunk_bytes);
        Ok(Some(Pull {
            demand,
            upstream: std::mem::replace(&mut self.upstream, Box::new(NoUpstream)),
            ticks: self.budget.ticks(),
        }))
    }

    /// Keeps a pulled chunk (`records` records; `bytes`, a copy of it, if copies are kept) if
    /// the fault policy needs the call's input.
    pub(crate) fn keep_pulled(&mut self, bytes: Option<Vec<u8>>, records: u32) {
        let cap = self.budget.limits().memory_bytes;
        if let Some(inputs) = self.inputs.as_mut() {
            inputs.keep(bytes, records, cap);
        }
    }

    /// The rules once the upstream answered (R5, X4, X6): the upstream back in the store, the
    /// time since tick `since` (the pull's start, or the end of the last delivery into this
    /// stage) charged to it, and what the guest gets: the delivery, or `none`. An `Err` traps
    /// the guest.
    pub(crate) fn pulled<T>(
        &mut self,
        pull: Pull,
        since: u64,
        answer: Result<Option<T>>,
    ) -> wasmtime::Result<Option<T>> {
        self.upstream = pull.upstream;
        self.budget.charge_upstream(since);
        match answer {
            Ok(Some(delivered)) => Ok(Some(delivered)),
            Ok(None) => {
                self.upstream_done = true;
                Ok(None)
            }
            // X4: the upstream stage faulted; the guest sees the end of its input and the state
            // machine fails the call.
            Err(error) if error.is_fault() => {
                self.upstream_done = true;
                self.report_mut().upstream_fault = Some(Box::new(error));
                Ok(None)
            }
            // X6: the upstream refused the pull (re-entered, not primed, closed): the input is
            // not over, so the guest must not see `none`; its call is abandoned.
            Err(error) => {
                let message = format!("its upstream refused a pull: {error}");
                self.report_mut().upstream_refused = Some(error);
                wasmtime::bail!(message)
            }
        }
    }
}

impl UpstreamImports for StageCtx {
    fn pull(&mut self, credits: u32) -> wasmtime::Result<Option<Vec<u8>>> {
        let Some(mut pull) = self.start_pull(credits)? else {
            return Ok(None);
        };
        let answer = pull.ask(&mut |lent, records| (lent.into_vec(), records));
        let answer = answer.map(|chunk| {
            chunk.map(|(bytes, records)| {
                match self.input_keeping() {
                    InputKeeping::Nothing => {}
                    InputKeeping::Count => self.keep_pulled(None, records),
                    InputKeeping::Copies => self.keep_pulled(Some(bytes.clone()), records),
                }
                bytes
            })
        });
        let since = pull.started();
        self.pulled(pull, since, answer)
    }
}
