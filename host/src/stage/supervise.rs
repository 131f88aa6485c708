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

use crate::chunk::Chunk;
use crate::counters::Counters;
use crate::error::{Error, Result};
pub(crate) use crate::policy::FaultPolicy;
pub(crate) use crate::sandbox::Salvage;
use crate::upstream::Demand;

use super::instance::Recipe;
use super::lifecycle::{Inner, Lifecycle, upstream_faulted};

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

    /// The stage was bypassed after `error`: the input of the failed call passes through.
    pub(crate) fn bypassed(&mut self, error: Error, inputs: &[Chunk]) {
        self.bypass_queue.extend(
            inputs
                .iter()
                .flat_map(|chunk| chunk.records().map(<[u8]>::to_vec)),
        );
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

    /// Quarantines the input of a failed call: writes it framed to the dead-letter sink (if
    /// any) and returns how many records it held.
    pub(crate) fn quarantine(&mut self, stage: &str, inputs: &[Chunk]) -> u64 {
        let records: u64 = inputs.iter().map(|chunk| u64::from(chunk.len())).sum();
        if let Some(out) = self.dead_letter.as_mut() {
            let written = inputs
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

impl Inner {
    /// True if the stage just faulted through a fault of its own (not an upstream's refusal)
    /// and its policy has a recovery left: one more restart, or the one bypass.
    pub(super) fn may_recover(&self) -> bool {
        let own = match &self.state {
            Lifecycle::Faulted(cause) => !matches!(**cause, Error::UpstreamRefused { .. }),
            _ => false,
        };
        own && self.salvage.is_some()
            && match self.supervisor.policy {
                FaultPolicy::Restart { .. } => self.supervisor.may_restart(),
                FaultPolicy::Bypass => true,
                FaultPolicy::Fail => false,
            }
    }

    /// Applies the fault policy after a fault in `resume` (only called when
    /// [`Inner::may_recover`]). `Ok` means "retry the call"; `Err` is the fault, final unless
    /// `may_recover` still says otherwise.
    pub(super) fn recover(
        &mut self,
        recipe: &Recipe,
        name: &Arc<str>,
        counters: &Counters,
        error: Error,
    ) -> Result<()> {
        let Some(salvage) = self.salvage.take() else {
            return Err(error);
        };
        match self.supervisor.policy {
            FaultPolicy::Restart { .. } => {
                let quarantined = self.supervisor.quarantine(name, &salvage.inputs);
                counters.restarted(quarantined);
                std::thread::sleep(self.supervisor.backoff());
                self.supervisor.restarted(error);
                let live = match recipe.spawn(
                    &self.component,
                    name,
                    salvage.upstream,
                    salvage.upstream_done,
                ) {
                    Ok(live) => live,
                    // Instantiation itself failed: nothing to salvage, the fault is final.
                    Err(e) => return Err(self.fault(e)),
                };
                self.live = Some(live);
                self.state = Lifecycle::Created;
                // Prime the new instance; a fault here comes back round to `recover`.
                self.resume(name, counters, 0).map(|_| ())
            }
            FaultPolicy::Bypass => {
                tracing::warn!(
                    stage = &**name,
                    "bypassing the stage after a fault: {error}"
                );
                self.supervisor.bypassed(error, &salvage.inputs);
                self.salvage = Some(Salvage {
                    inputs: Vec::new(),
                    ..salvage
                });
                self.state = Lifecycle::Bypassed;
                Ok(())
            }
            FaultPolicy::Fail => {
                self.salvage = Some(salvage);
                Err(error)
            }
        }
    }

    /// A bypassed stage: its input passes through, at most `credits` records per call. An
    /// upstream error is returned as it is for any stage (X4 if it is a fault, sticky), never
    /// retried.
    pub(super) fn pass_through(
        &mut self,
        name: &str,
        counters: &Counters,
        credits: u32,
    ) -> Result<Option<Chunk>> {
        if let Some(cause) = &self.upstream_lost {
            return Err(upstream_faulted(name, cause));
        }
        let mut chunk = Chunk::empty();
        while chunk.len() < credits {
            let Some(record) = self.supervisor.bypass_queue.pop_front() else {
                break;
            };
            chunk.push(&record);
        }
        if chunk.len() < credits
            && let Some(salvage) = self.salvage.as_mut()
            && !salvage.upstream_done
        {
            match salvage
                .upstream
                .pull(Demand::records(credits - chunk.len()))
            {
                Ok(Some(more)) => more.records().for_each(|r| chunk.push(r)),
                Ok(None) => salvage.upstream_done = true,
                Err(cause) if cause.is_fault() => {
                    salvage.upstream_done = true;
                    let cause = Box::new(cause);
                    let error = upstream_faulted(name, &cause);
                    self.upstream_lost = Some(cause);
                    return Err(error);
                }
                Err(cause) => {
                    return Err(Error::UpstreamRefused {
                        stage: name.to_string(),
                        cause: Box::new(cause),
                    });
                }
            }
        }
        let done = self.salvage.as_ref().is_none_or(|s| s.upstream_done);
        if chunk.is_empty() && done && credits > 0 {
            return Ok(None);
        }
        if credits > 0 {
            counters.delivered(chunk.len(), chunk.as_bytes().len());
        }
        Ok(Some(chunk))
    }
}
