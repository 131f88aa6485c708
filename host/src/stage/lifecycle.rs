//! One stage's state between calls ([`Inner`]: its place in the protocol, its live instance,
//! what survived a fault), the transitions the protocol table (`protocol.rs`) prescribes for
//! `resume` and `close`, and the recovery from a fault its policy allows (with the
//! [`Supervisor`] of `supervise.rs`).

use std::sync::Arc;

use super::StageState;
use super::instance::{Live, Recipe};
use super::protocol::{self, Action, Answer, Outcome, Refusal, Request};
use super::supervise::{Salvage, Supervisor};
use crate::chunk::{Answered, Chunk, Deliver, Lent};
use crate::component::StageComponent;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::policy::FaultPolicy;
use crate::upstream::Demand;

/// A stage between calls, behind its lock: where it is in the protocol, its live instance, and
/// what its supervision needs.
pub(super) struct Inner {
    pub(super) state: Lifecycle,
    /// The store and typed functions; `None` once Closed or Faulted, so its memory is freed.
    pub(super) live: Option<Live>,
    /// The compiled component the stage runs now (a swap replaces it).
    pub(super) component: StageComponent,
    /// The stage's budgets (a bypassed stage's pulls are clamped by them too).
    pub(super) limits: Limits,
    /// X4 happened: the upstream faulted and this stage's input is gone for good, so every
    /// later resume is refused with it; `close` still runs.
    pub(super) upstream_lost: Option<Box<Error>>,
    /// What survived the last fault (its upstream, the input of the failed call).
    pub(super) salvage: Option<Salvage>,
    pub(super) supervisor: Supervisor,
}

/// Where a stage is in the protocol, with the cause of its fault once Faulted (X3).
pub(super) enum Lifecycle {
    Created,
    Suspended,
    Exhausted,
    Closed,
    Faulted(Box<Error>),
    Bypassed,
}

impl Lifecycle {
    /// Where an entered call that passed every check leaves the stage (the protocol table).
    fn after(outcome: Outcome) -> Lifecycle {
        match protocol::after(outcome) {
            protocol::State::Exhausted => Lifecycle::Exhausted,
            protocol::State::Closed => Lifecycle::Closed,
            _ => Lifecycle::Suspended,
        }
    }

    /// The row of the protocol table this state is.
    fn row(&self) -> protocol::State {
        match self {
            Lifecycle::Created => protocol::State::Created,
            Lifecycle::Suspended => protocol::State::Suspended,
            Lifecycle::Exhausted => protocol::State::Exhausted,
            Lifecycle::Closed => protocol::State::Closed,
            Lifecycle::Faulted(_) => protocol::State::Faulted,
            Lifecycle::Bypassed => protocol::State::Bypassed,
        }
    }

    pub(super) fn public(&self) -> StageState {
        match self {
            Lifecycle::Created => StageState::Created,
            Lifecycle::Suspended => StageState::Suspended,
            Lifecycle::Exhausted => StageState::Exhausted,
            Lifecycle::Closed => StageState::Closed,
            Lifecycle::Faulted(_) => StageState::Faulted,
            Lifecycle::Bypassed => StageState::Bypassed,
        }
    }
}

impl Inner {
    pub(super) fn resume<T>(
        &mut self,
        name: &str,
        counters: &Counters,
        credits: u32,
        deliver: Deliver<'_, T>,
    ) -> Result<Option<T>> {
        // X4 is sticky, also once the stage answered `none` to the call that lost its input:
        // a later resume must not look like the end of a whole stream.
        if let Some(cause) = &self.upstream_lost
            && matches!(self.state, Lifecycle::Suspended | Lifecycle::Exhausted)
        {
            return Err(upstream_faulted(name, cause));
        }
        let call = match protocol::action(self.state.row(), Request::Resume(credits)).1 {
            Action::Enter(call) => call,
            Action::Answer(Answer::PassThrough) => {
                let chunk = self.pass_through(name, counters, credits)?;
                return Ok(chunk.map(|chunk| {
                    let records = chunk.len();
                    deliver(Lent::Owned(chunk.into_bytes()), records)
                }));
            }
            Action::Answer(_) => return Ok(None),
            Action::Refuse(refusal) => return Err(self.refused(name, refusal, credits)),
        };
        let Some(live) = self.live.as_mut() else {
            return Err(self.fault(missing_store(name)));
        };
        let (answer, upstream_fault) =
            match live.resume_with(name, call, credits, counters, Some(&mut *deliver)) {
                Ok(answer) => answer,
                Err(error) => return Err(self.fault(error)),
            };
        self.state = Lifecycle::after(match answer {
            Some(_) => Outcome::Chunk,
            None => Outcome::Finished,
        });
        match upstream_fault {
            // X4: nothing of this call is delivered; the stage itself stays usable for close,
            // and refuses every later resume (its input is gone).
            Some(cause) => {
                let error = upstream_faulted(name, &cause);
                self.upstream_lost = Some(cause);
                Err(error)
            }
            // Answers to priming and pauses are not deliveries.
            None => Ok(answer.map(|answer| match answer {
                Answered::Delivered {
                    value,
                    records,
                    bytes,
                } => {
                    if credits > 0 {
                        counters.delivered(records, bytes);
                    }
                    value
                }
                Answered::Lifted(chunk) => {
                    let records = chunk.len();
                    if credits > 0 {
                        counters.delivered(records, chunk.as_bytes().len());
                    }
                    deliver(Lent::Owned(chunk.into_bytes()), records)
                }
            })),
        }
    }

    pub(super) fn close(&mut self, name: &str, counters: &Counters) -> Result<()> {
        match protocol::action(self.state.row(), Request::Close).1 {
            Action::Enter(_) => {}
            Action::Answer(Answer::AlreadyClosed) => return Ok(()),
            Action::Answer(_) => {
                // P3 (never entered) or B1 (bypassed): nothing to clean up.
                self.state = Lifecycle::Closed;
                self.live = None;
                self.salvage = None;
                return Ok(());
            }
            Action::Refuse(refusal) => return Err(self.refused(name, refusal, 0)),
        }
        let Some(live) = self.live.as_mut() else {
            return Err(self.fault(missing_store(name)));
        };
        match live.close(name, counters) {
            Ok(()) => {
                self.state = Lifecycle::after(Outcome::Cleaned);
                self.live = None;
                Ok(())
            }
            Err(error) => Err(self.fault(error)),
        }
    }

    /// The error of a call the protocol table refuses.
    fn refused(&self, name: &str, refusal: Refusal, credits: u32) -> Error {
        match (refusal, &self.state) {
            (Refusal::NotPrimed, _) => Error::NotPrimed {
                stage: name.to_string(),
                credits,
            },
            (Refusal::Faulted, Lifecycle::Faulted(cause)) => faulted(name, cause),
            (Refusal::Closed | Refusal::Faulted, _) => Error::Closed {
                stage: name.to_string(),
            },
        }
    }

    /// Faults the stage: keeps the cause for later calls (X3) and drops the store (X1),
    /// salvaging its upstream and the input of the failed call for supervision.
    pub(super) fn fault(&mut self, error: Error) -> Error {
        self.state = Lifecycle::Faulted(Box::new(error.clone()));
        if let Some(live) = self.live.take() {
            self.salvage = Some(live.store.into_data().into_salvage());
        }
        error
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
                self.resume(name, counters, 0, &mut |lent, _| lent.release())
                    .map(|_| ())
            }
            FaultPolicy::Bypass => {
                tracing::warn!(
                    stage = &**name,
                    "bypassing the stage after a fault: {error}"
                );
                self.supervisor.bypassed(name, error, &salvage.inputs);
                self.salvage = Some(Salvage {
                    inputs: Default::default(),
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
        // What the queue does not cover is pulled, clamped as the stage's own pulls were (R2);
        // a pause is passed on as a pause (R3).
        let wanted = credits - chunk.len();
        if (credits == 0 || wanted > 0)
            && let Some(salvage) = self.salvage.as_mut()
            && !salvage.upstream_done
        {
            let demand = Demand::records(wanted.min(self.limits.max_pull_records))
                .with_max_bytes(self.limits.max_chunk_bytes);
            match salvage.upstream.pull(demand) {
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

pub(super) fn faulted(name: &str, cause: &Error) -> Error {
    Error::Faulted {
        stage: name.to_string(),
        cause: Box::new(cause.clone()),
    }
}

pub(super) fn upstream_faulted(name: &str, cause: &Error) -> Error {
    Error::UpstreamFaulted {
        stage: name.to_string(),
        cause: Box::new(cause.clone()),
    }
}

pub(super) fn missing_store(name: &str) -> Error {
    Error::Host {
        stage: name.to_string(),
        message: "the stage's store is gone although its state says it is live".into(),
    }
}
