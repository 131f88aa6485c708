//! The `upstream.pull` a guest imports: rules R2–R5 and X4–X6 of docs/protocol.md, and the
//! clamp of every pull (records and bytes) before the upstream produces anything.

use super::store::{Serving, StageCtx};
use crate::bindings::UpstreamImports;
use crate::error::Rule;
use crate::upstream::Demand;

impl UpstreamImports for StageCtx {
    fn pull(&mut self, credits: u32) -> wasmtime::Result<Option<Vec<u8>>> {
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
        let ticks = self.budget.ticks();
        let answer = self.upstream.pull(demand);
        self.budget.charge_upstream(ticks);
        match answer {
            Ok(Some(chunk)) => {
                let cap = self.budget.limits().memory_bytes;
                if let Some(inputs) = self.inputs.as_mut() {
                    inputs.keep(&chunk, cap);
                }
                Ok(Some(chunk.into_bytes()))
            }
            Ok(None) => {
                self.upstream_done = true;
                Ok(None)
            }
            // X4: the upstream stage faulted; the guest sees the end of its input and the state
            // machine fails the call.
            Err(error) if error.is_fault() => {
                self.upstream_done = true;
                self.report.upstream_fault = Some(error);
                Ok(None)
            }
            // X6: the upstream refused the pull (re-entered, not primed, closed): the input is
            // not over, so the guest must not see `none`; its call is abandoned.
            Err(error) => {
                let message = format!("its upstream refused a pull: {error}");
                self.report.upstream_refused = Some(error);
                wasmtime::bail!(message)
            }
        }
    }
}
