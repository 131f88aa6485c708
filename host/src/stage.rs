//! The [`Stage`] handle: the state machine of docs/protocol.md (states Created, Suspended,
//! Running, Exhausted, Closed, Faulted). Every call checks the state before entering the guest
//! and checks what the guest answered (rules C1–C3, P1–P3, S1–S3, E1–E2, D1–D2, F1–F2,
//! X1–X6) before anything is delivered.

mod boundary;
mod entry;
mod host_services;
mod instance;
mod options;
mod protocol;
pub(crate) mod supervise;
mod swap;
mod wasi;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

pub use self::boundary::Capabilities;
pub(crate) use self::boundary::StageCtx;
pub(crate) use self::host_services::add_to_linker as add_host_services;
use self::instance::{Live, Recipe};
pub use self::options::StageOptions;
use self::protocol::{Action, Answer, Outcome, Refusal, Request};
pub use self::supervise::FaultPolicy;
use self::supervise::{Salvage, Supervisor};
pub use self::swap::SwapReport;
pub(crate) use self::wasi::shadow_waits;
use crate::chunk::Chunk;
use crate::engine::{Engine, StageComponent};
use crate::error::{Call, Error, Result};
use crate::metrics::{Counters, StageStats};
use crate::upstream::{Demand, NoUpstream, Upstream};

/// Where a stage is in the protocol (docs/protocol.md, "States").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageState {
    /// Instantiated, never entered.
    Created,
    /// Primed and waiting between calls.
    Suspended,
    /// Inside `resume` or `close`.
    Running,
    /// Answered `none`; cleanup not run yet.
    Exhausted,
    /// Cleanup ran (or there was nothing to clean up).
    Closed,
    /// Ended by a trap, a violation or a limit; its store is dropped.
    Faulted,
    /// Faulted under [`FaultPolicy::Bypass`]: its input passes through unchanged.
    Bypassed,
}

/// One running instance of a stage component, with its own store.
///
/// A cheap, cloneable handle (`Send + Sync`): every clone drives the same instance. A call
/// made while another is in progress, from another thread or by re-entry through a pull, is
/// refused with [`Error::AlreadyRunning`] (rule R1).
#[derive(Clone)]
pub struct Stage {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    counters: Counters,
    /// How to make a fresh instance (restarts, swaps); fixed for the stage's life.
    recipe: Recipe,
    /// Set while a swap cuts over, so that callers wait for it instead of being refused as
    /// re-entrant.
    swapping: AtomicBool,
    /// Held for the whole of a swap: two swaps of one stage run one after the other.
    swap_lock: Mutex<()>,
    /// Set while a call (resume, close) is in progress: a second call is refused (R1).
    /// Observers (`state`) may hold `inner` for a moment; only this flag, never a busy lock,
    /// means "already running".
    in_call: AtomicBool,
    /// The faults recovered from, readable without the stage's lock (by an observer, or from
    /// inside a call).
    recovered: Arc<Mutex<Vec<Error>>>,
    inner: Mutex<Inner>,
}

struct Inner {
    state: Lifecycle,
    /// The store and typed functions; `None` once Closed or Faulted, so its memory is freed.
    live: Option<Live>,
    /// The compiled component the stage runs now (a swap replaces it).
    component: StageComponent,
    /// X4 happened: the upstream faulted and this stage's input is gone for good, so every
    /// later resume is refused with it; `close` still runs.
    upstream_lost: Option<Box<Error>>,
    /// What survived the last fault (its upstream, the input of the failed call).
    salvage: Option<Salvage>,
    supervisor: Supervisor,
}

enum Lifecycle {
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

    fn public(&self) -> StageState {
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

thread_local! {
    /// The stages this thread is inside a call of, innermost last (a pull nests the upstream's
    /// call inside the puller's). A swap of one of them from this thread would wait for
    /// itself, so it is refused.
    static INSIDE: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Stage {
    pub(crate) fn instantiate(
        engine: &Engine,
        component: &StageComponent,
        name: &str,
        options: StageOptions,
    ) -> Result<Stage> {
        let name: Arc<str> = name.into();
        let limits = options.limits;
        let fuel = match (engine.fuel_enabled(), limits.fuel_per_call) {
            (true, budget) => Some(budget.unwrap_or(u64::MAX)),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(Error::Host {
                    stage: name.to_string(),
                    message: "the stage has a fuel budget but the engine does not meter fuel; \
                              build it with Engine::builder().fuel(true)"
                        .into(),
                });
            }
        };
        let upstream = options.upstream.unwrap_or_else(|| Box::new(NoUpstream));
        let counters = Counters::default();
        let recipe = Recipe {
            engine: engine.clone(),
            config: options.config,
            inner_configs: options.inner_configs,
            limits,
            capabilities: options.capabilities,
            fuel,
            keep_inputs: options.policy.keeps_inputs(),
            log_lines_suppressed: counters.log_lines_suppressed(),
        };
        let live = recipe.spawn(component, &name, upstream, false)?;
        let recovered = Arc::new(Mutex::new(Vec::new()));
        Ok(Stage {
            shared: Arc::new(Shared {
                name,
                counters,
                recipe,
                swapping: AtomicBool::new(false),
                swap_lock: Mutex::new(()),
                in_call: AtomicBool::new(false),
                recovered: recovered.clone(),
                inner: Mutex::new(Inner {
                    state: Lifecycle::Created,
                    live: Some(live),
                    component: component.clone(),
                    upstream_lost: None,
                    salvage: None,
                    supervisor: Supervisor::new(options.policy, options.dead_letter, recovered),
                }),
            }),
        })
    }

    /// The stage's name, as used in every error about it.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where the stage is in the protocol; [`StageState::Running`] while a call is in progress.
    pub fn state(&self) -> StageState {
        if self.shared.in_call.load(Ordering::Acquire) {
            return StageState::Running;
        }
        match self.shared.inner.try_lock() {
            Ok(inner) => inner.state.public(),
            Err(TryLockError::WouldBlock) => StageState::Running,
            Err(TryLockError::Poisoned(_)) => StageState::Faulted,
        }
    }

    /// The host's counters for this stage; readable while it runs.
    pub fn stats(&self) -> StageStats {
        self.shared.counters.snapshot()
    }

    /// Primes the stage: `resume(0)` on a Created stage (rule P1). Returns `false` if the
    /// stage finished during priming (it answered `none`).
    pub fn prime(&self) -> Result<bool> {
        self.resume(0).map(|chunk| chunk.is_some())
    }

    /// Resumes the stage with `credits` of demand (rules P1–P2, S1–S2, E1, D1, F1, R1, X4).
    ///
    /// Returns `Some(chunk)` with at most `credits` records, or `None` once the stage is
    /// exhausted. A chunk that breaks C1 or C2 is never returned: the stage faults instead.
    pub fn resume(&self, credits: u32) -> Result<Option<Chunk>> {
        // The records-per-chunk cap clamps the grant; the stage never sees more.
        let credits = match self.shared.recipe.limits.max_chunk_records {
            Some(cap) => credits.min(cap),
            None => credits,
        };
        let mut inner = self.lock()?;
        let (name, counters, recipe) = (
            &self.shared.name,
            &self.shared.counters,
            &self.shared.recipe,
        );
        loop {
            let mut error = match inner.resume(name, counters, credits) {
                Err(error) if inner.may_recover() => error,
                answer => return answer,
            };
            // Apply the fault policy; a fault while priming a restarted instance is one more
            // restart attempt, so this ends once the restart budget is spent.
            loop {
                match inner.recover(recipe, name, counters, error) {
                    Ok(()) => break,
                    Err(e) if inner.may_recover() => error = e,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// For the conformance kit only: enters `resume(credits)` once more on an **Exhausted**
    /// stage, which the host never does otherwise (E1), to see whether the stage would stay
    /// exhausted. Answers what the guest answered (after every chunk check); the stage stays
    /// Exhausted unless the call faults it.
    pub(crate) fn resume_after_end(&self, credits: u32) -> Result<Option<Chunk>> {
        let mut inner = self.lock()?;
        let name = &self.shared.name;
        if !matches!(inner.state, Lifecycle::Exhausted) {
            return Err(Error::Host {
                stage: name.to_string(),
                message: "resume_after_end on a stage that is not exhausted".into(),
            });
        }
        let Some(live) = inner.live.as_mut() else {
            return Err(inner.fault(missing_store(name)));
        };
        match live.resume(name, Call::Resume, credits, &self.shared.counters) {
            Ok((chunk, _)) => Ok(chunk),
            Err(error) => Err(inner.fault(error)),
        }
    }

    /// The faults this stage recovered from (restarts and bypass), oldest first.
    pub fn recovered_faults(&self) -> Vec<Error> {
        match self.shared.recovered.lock() {
            Ok(recovered) => recovered.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Closes the stage: runs its cleanup exactly once if it was primed (rules P3, S3, E2, D2,
    /// F2, R4). Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut inner = self.lock()?;
        inner.close(&self.shared.name, &self.shared.counters)
    }

    /// True if this thread is inside a call of this stage (directly, or further down a chain
    /// of pulls).
    fn entered_here(&self) -> bool {
        let me = self.key();
        INSIDE.with(|inside| inside.borrow().contains(&me))
    }

    fn key(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Enters a call: refused with R1 if one is in progress (another thread's, or this
    /// thread's own through a pull); waits for a swap's cut-over or an observer's glance.
    fn lock(&self) -> Result<InCall<'_>> {
        // A swap is cutting over: let it finish first (a handful of microseconds, at most the
        // handoff budget). std's mutex is not fair: without this the caller that just released
        // the lock takes it straight back, and a swap could wait for as long as the stream
        // flows.
        let mut spins = 0u32;
        while self.shared.swapping.load(Ordering::Acquire) {
            if spins < 1000 {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
        }
        let in_call = &self.shared.in_call;
        if in_call
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(Error::AlreadyRunning {
                stage: self.name().to_string(),
            });
        }
        match self.shared.inner.lock() {
            Ok(inner) => {
                let key = self.key();
                INSIDE.with(|inside| inside.borrow_mut().push(key));
                Ok(InCall {
                    inner,
                    in_call,
                    key,
                })
            }
            // Only a panic inside the host can poison the lock; refuse rather than guess.
            Err(_) => {
                in_call.store(false, Ordering::Release);
                Err(self.poisoned())
            }
        }
    }

    fn poisoned(&self) -> Error {
        Error::Host {
            stage: self.name().to_string(),
            message: "a previous call panicked inside the host; the stage is unusable".into(),
        }
    }
}

impl Upstream for Stage {
    /// Resumes the stage with the demand's records. The byte bound cannot be passed to a guest:
    /// a wasm stage's answer is bounded by its own `max_chunk_bytes` instead.
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        self.resume(demand.records)
    }
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}

/// A call in progress on a stage: its `Inner`, and the R1 flag, cleared when the call ends
/// (also if the host panics, which poisons the lock instead).
struct InCall<'a> {
    inner: MutexGuard<'a, Inner>,
    in_call: &'a AtomicBool,
    key: usize,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        INSIDE.with(|inside| {
            let mut inside = inside.borrow_mut();
            if let Some(at) = inside.iter().rposition(|&k| k == self.key) {
                inside.remove(at);
            }
        });
        self.in_call.store(false, Ordering::Release);
    }
}

impl std::ops::Deref for InCall<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl std::ops::DerefMut for InCall<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

impl Inner {
    fn resume(&mut self, name: &str, counters: &Counters, credits: u32) -> Result<Option<Chunk>> {
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
                return self.pass_through(name, counters, credits);
            }
            Action::Answer(_) => return Ok(None),
            Action::Refuse(refusal) => return Err(self.refused(name, refusal, credits)),
        };
        let Some(live) = self.live.as_mut() else {
            return Err(self.fault(missing_store(name)));
        };
        let (chunk, upstream_fault) = match live.resume(name, call, credits, counters) {
            Ok(answer) => answer,
            Err(error) => return Err(self.fault(error)),
        };
        self.state = Lifecycle::after(match chunk {
            Some(_) => Outcome::Chunk,
            None => Outcome::Finished,
        });
        match upstream_fault {
            // X4: nothing of this call is delivered; the stage itself stays usable for close,
            // and refuses every later resume (its input is gone).
            Some(cause) => {
                let cause = Box::new(cause);
                let error = upstream_faulted(name, &cause);
                self.upstream_lost = Some(cause);
                Err(error)
            }
            None => {
                // Answers to priming and pauses are not deliveries.
                if let Some(chunk) = chunk.as_ref().filter(|_| credits > 0) {
                    counters.delivered(chunk.len(), chunk.as_bytes().len());
                }
                Ok(chunk)
            }
        }
    }

    fn close(&mut self, name: &str, counters: &Counters) -> Result<()> {
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
    fn fault(&mut self, error: Error) -> Error {
        self.state = Lifecycle::Faulted(Box::new(error.clone()));
        if let Some(live) = self.live.take() {
            self.salvage = Some(live.store.into_data().into_salvage());
        }
        error
    }

    /// True if the stage just faulted through a fault of its own (not an upstream's refusal)
    /// and its policy has a recovery left: one more restart, or the one bypass.
    fn may_recover(&self) -> bool {
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
    fn recover(
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
    fn pass_through(
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

fn faulted(name: &str, cause: &Error) -> Error {
    Error::Faulted {
        stage: name.to_string(),
        cause: Box::new(cause.clone()),
    }
}

fn upstream_faulted(name: &str, cause: &Error) -> Error {
    Error::UpstreamFaulted {
        stage: name.to_string(),
        cause: Box::new(cause.clone()),
    }
}

fn missing_store(name: &str) -> Error {
    Error::Host {
        stage: name.to_string(),
        message: "the stage's store is gone although its state says it is live".into(),
    }
}
