//! The [`Stage`] handle: the state machine of docs/protocol.md (states Created, Suspended,
//! Running, Exhausted, Closed, Faulted). Every call checks the state before entering the guest
//! and checks what the guest answered (rules C1–C3, P1–P3, S1–S3, E1–E2, D1–D2, F1–F2,
//! X1–X6) before anything is delivered.

mod checkpoint;
mod entry;
mod instance;
mod lifecycle;
mod options;
mod protocol;
pub(crate) mod supervise;
mod swap;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use self::instance::Recipe;
use self::lifecycle::{Inner, Lifecycle, missing_store};
pub use self::options::StageOptions;
use self::supervise::Supervisor;
pub use self::swap::SwapReport;
use crate::chunk::{Chunk, Deliver};
use crate::component::StageComponent;
use crate::counters::{Counters, StageStats};
use crate::engine::Engine;
use crate::error::{Call, Error, Result};
use crate::fast::ExecutionPath;
use crate::upstream::{Demand, NoUpstream, Upstream};

/// Where a stage is in the protocol (docs/protocol.md, "States").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
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
    /// Faulted under [`FaultPolicy::Bypass`](crate::FaultPolicy::Bypass): its input passes through unchanged.
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
    /// The thread inside the call (resume, close) in progress ([`this_thread`]), 0 between
    /// calls: set once the call holds `inner`, cleared before it lets go. Observers (`state`)
    /// and a swap's cut-over also hold `inner` for a moment, so a busy lock alone does not
    /// mean "already running" (R1); a busy lock with a caller does.
    caller: AtomicU64,
    /// The faults recovered from, readable without the stage's lock (by an observer, or from
    /// inside a call).
    recovered: Arc<Mutex<Vec<Error>>>,
    /// The execution path of the component the stage runs now (a swap may change it),
    /// readable without the stage's lock.
    path: Mutex<ExecutionPath>,
    inner: Mutex<Inner>,
}

thread_local! {
    /// This thread's number, given on first use (0: none yet), to tell which thread is inside
    /// a stage's call.
    static THREAD: Cell<u64> = const { Cell::new(0) };
}

/// The number of the current thread (never 0).
fn this_thread() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    THREAD.with(|id| {
        if id.get() == 0 {
            id.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        id.get()
    })
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
        limits.check().map_err(|message| Error::Host {
            stage: name.to_string(),
            message,
        })?;
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
            keep_inputs: options.policy.keeps_inputs(options.dead_letter.is_some()),
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
                caller: AtomicU64::new(0),
                recovered: recovered.clone(),
                path: Mutex::new(component.execution_path().clone()),
                inner: Mutex::new(Inner {
                    state: Lifecycle::Created,
                    live: Some(live),
                    component: component.clone(),
                    limits,
                    upstream_lost: None,
                    salvage: None,
                    supervisor: Supervisor::new(options.policy, options.dead_letter, recovered),
                }),
            }),
        })
    }

    /// Which way the stage's calls cross the sandbox boundary now (the fast path or the
    /// component model, and why), from the component it runs (a swap may change it).
    pub fn execution_path(&self) -> ExecutionPath {
        match self.shared.path.lock() {
            Ok(path) => path.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_execution_path(&self, path: &ExecutionPath) {
        match self.shared.path.lock() {
            Ok(mut now) => *now = path.clone(),
            Err(poisoned) => *poisoned.into_inner() = path.clone(),
        }
    }

    /// The stage's name, as used in every error about it.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where the stage is in the protocol; [`StageState::Running`] while a call is in progress.
    pub fn state(&self) -> StageState {
        if self.shared.caller.load(Ordering::Acquire) != 0 {
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
        self.resume_with(credits, &mut |lent, records| {
            Chunk::from_checked(lent.into_vec(), records)
        })
    }

    /// [`Stage::resume`], the answer handed to `deliver` once it passed every check: on the
    /// fast path straight from the guest's memory, so that a puller's host function copies it
    /// once, into the puller's memory (`sandbox/pull.rs`). On the fast path the delivery comes
    /// before the guest's post-return: if that traps and the fault policy restarts the stage,
    /// the retried call delivers again (`deliver` may run more than once; the last one is the
    /// answer).
    pub(crate) fn resume_with<T>(
        &self,
        credits: u32,
        deliver: Deliver<'_, T>,
    ) -> Result<Option<T>> {
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
            let mut error = match inner.resume(name, counters, credits, &mut *deliver) {
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
    /// of pulls: a pull nests the upstream's call inside the puller's). A call or a swap of it
    /// from this thread would wait for itself.
    fn entered_here(&self) -> bool {
        self.shared.caller.load(Ordering::Acquire) == this_thread()
    }

    /// Enters a call: refused with R1 if one is in progress (another thread's, or this
    /// thread's own through a pull); waits for a swap's cut-over or an observer's glance.
    ///
    /// One uncontended lock and two plain stores per call: the mutex is the only
    /// read-modify-write (taking it and letting it go), since the handle is shared between
    /// threads; who holds it is told by `caller`, not by a second atomic flag.
    fn lock(&self) -> Result<InCall<'_>> {
        let already_running = || Error::AlreadyRunning {
            stage: self.name().to_string(),
        };
        let me = this_thread();
        let caller = &self.shared.caller;
        // Re-entered from this thread (a cycle through a pull): refused at once, before waiting
        // for anything, since whatever it would wait for waits for this very call.
        if caller.load(Ordering::Acquire) == me {
            return Err(already_running());
        }
        let mut waits = 0u32;
        loop {
            // A swap is cutting over: let it finish first (a handful of microseconds, at most
            // the handoff budget). std's mutex is not fair: without this the caller that just
            // released the lock takes it straight back, and a swap could wait for as long as
            // the stream flows.
            let mut swap_waits = 0u32;
            while self.shared.swapping.load(Ordering::Acquire) {
                back_off(&mut swap_waits);
            }
            match self.shared.inner.try_lock() {
                Ok(inner) => {
                    caller.store(me, Ordering::Release);
                    return Ok(InCall { inner, caller });
                }
                // Only a panic inside the host can poison the lock; refuse rather than guess.
                Err(TryLockError::Poisoned(_)) => return Err(self.poisoned()),
                // Held by a call in progress: refused (R1). Held with no caller: an observer's
                // glance, a swap's cut-over, or a call in its first or last instructions;
                // each lets go within moments, so wait and look again.
                Err(TryLockError::WouldBlock) => {
                    if caller.load(Ordering::Acquire) != 0 {
                        return Err(already_running());
                    }
                    back_off(&mut waits);
                }
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

impl StageComponent {
    /// Instantiates a new stage named `name`. The stage starts **Created**: nothing in it
    /// has run except component start functions; call [`Stage::prime`] next.
    pub fn instantiate(&self, name: &str, options: StageOptions) -> Result<Stage> {
        Stage::instantiate(&self.engine, self, name, options)
    }
}

impl Upstream for Stage {
    /// Resumes the stage with the demand's records. The byte bound cannot be passed to a guest:
    /// a wasm stage's answer is bounded by its own `max_chunk_bytes` instead.
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        self.resume(demand.records)
    }

    fn as_stage(&self) -> Option<&Stage> {
        Some(self)
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

/// A call in progress on a stage: its `Inner`, and the caller mark (R1), cleared when the
/// call ends, before the lock is let go (also if the host panics, which poisons the lock).
struct InCall<'a> {
    inner: MutexGuard<'a, Inner>,
    caller: &'a AtomicU64,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        self.caller.store(0, Ordering::Release);
    }
}

/// Waits a little, longer each time: first yields the thread (a thousand times), then sleeps
/// 50 µs at a time.
fn back_off(waits: &mut u32) {
    if *waits < 1000 {
        *waits += 1;
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
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
