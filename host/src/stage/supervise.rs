//! Supervision: applies a stage's [`FaultPolicy`] (`crate::policy`) when it faults: `Fail` (the
//! default: the fault is final), `Restart` (drop
//! the store, instantiate and prime a fresh instance on the same upstream, and retry the call;
//! bounded, with exponential backoff), or `Bypass` (an optional stage is taken out of the
//! chain and its input passes through unchanged).
//!
//! The input the stage pulled during the call that faulted cannot be trusted to have been
//! processed, and is never silently dropped: on restart it is **quarantined**, written framed
//! to the dead-letter sink when one is set, and always counted and logged; on bypass it is
//! forwarded downstream like the rest of the input.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::Error;
pub(crate) use crate::policy::FaultPolicy;
pub(crate) use crate::sandbox::{KeptInputs, Salvage};

/// Longest backoff before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The supervision state of one stage.
pub(crate) struct Supervisor {
    pub(crate) policy: FaultPolicy,
    restarts: u32,
    dead_letter: Option<Box<dyn Write + Send>>,
    /// Faults recovered from, in order (shared with the stage's observers). At most
    /// `max_restarts` restarts plus one bypass, so it stays small.
    recovered: Arc<Mutex<Vec<Error>>>,
    /// Records waiting to pass through a bypassed stage.
    pub(crate) bypass_queue: VecDeque<Vec<u8>>,
}

impl Supervisor {
    pub(crate) fn new(
        policy: FaultPolicy,
        dead_letter: Option<Box<dyn Write + Send>>,
        recovered: Arc<Mutex<Vec<Error>>>,
    ) -> Self {
        Supervisor {
            policy,
            restarts: 0,
            dead_letter,
            recovered,
            bypass_queue: VecDeque::new(),
        }
    }

    /// Counts a restart after `error`.
    pub(crate) fn restarted(&mut self, error: Error) {
        self.restarts += 1;
        self.remember(error);
    }

    /// The stage `stage` was bypassed after `error`: the input of the failed call passes
    /// through (what was kept of it; what was not is said).
    pub(crate) fn bypassed(&mut self, stage: &str, error: Error, inputs: &KeptInputs) {
        self.bypass_queue.extend(
            inputs
                .chunks
                .iter()
                .flat_map(|chunk| chunk.records().map(<[u8]>::to_vec)),
        );
        if inputs.unkept_records > 0 {
            tracing::error!(
                stage,
                lost = inputs.unkept_records,
                "the failed call pulled more than its memory budget allows the host to keep: \
                 those records cannot pass through and are lost"
            );
        }
        self.remember(error);
    }

    fn remember(&mut self, error: Error) {
        if let Ok(mut recovered) = self.recovered.lock() {
            recovered.push(error);
        }
    }

    /// True if one more restart is allowed.
    pub(crate) fn may_restart(&self) -> bool {
        matches!(self.policy, FaultPolicy::Restart { max_restarts, .. } if self.restarts < max_restarts)
    }

    /// The backoff before the next restart.
    pub(crate) fn backoff(&self) -> Duration {
        match self.policy {
            FaultPolicy::Restart { backoff, .. } => backoff
                .saturating_mul(1u32 << self.restarts.min(16))
                .min(MAX_BACKOFF),
            _ => Duration::ZERO,
        }
    }

    /// Quarantines the input of a failed call: writes what was kept of it framed to the
    /// dead-letter sink (if any) and returns how many records it held, kept or not.
    pub(crate) fn quarantine(&mut self, stage: &str, inputs: &KeptInputs) -> u64 {
        let records = inputs.records();
        if inputs.unkept_records > 0 {
            tracing::warn!(
                stage,
                unkept = inputs.unkept_records,
                "the failed call pulled more than its memory budget allows the host to keep: \
                 those records are counted as quarantined but not written"
            );
        }
        if let Some(out) = self.dead_letter.as_mut() {
            let written = inputs
                .chunks
                .iter()
                .try_for_each(|chunk| out.write_all(chunk.as_bytes()))
                .and_then(|()| out.flush());
            if let Err(e) = written {
                tracing::error!(
                    stage,
                    "cannot write {records} quarantined records to the dead-letter file: {e}"
                );
            }
        }
        if records > 0 {
            tracing::warn!(
                stage,
                records,
                "quarantined the input of the call that faulted"
            );
        }
        records
    }
}
