//! The [`Stage`] handle: the state machine of docs/protocol.md (states Created, Suspended,
//! Running, Exhausted, Closed, Faulted). Every call checks the state before entering the guest
//! and checks what the guest answered (rules C1–C3, P1–P3, S1–S3, E1–E2, D1–D2, F1–F2,
//! X1–X4) before anything is delivered.

mod boundary;
pub(crate) mod supervise;
mod swap;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

pub use self::boundary::Capabilities;
pub(crate) use self::boundary::StageCtx;
use self::boundary::{CallReport, Serving};
pub use self::supervise::FaultPolicy;
use self::supervise::{Salvage, Supervisor};
pub use self::swap::SwapReport;
use crate::bindings::{StageWorld, StageWorldPre};
use crate::chunk::{Chunk, CountError, count_records};
use crate::engine::Engine;
use crate::error::{Call, Error, Result, Rule};
use crate::limits::{Budget, FIRST_CHECK_TICKS, Limit, Limits};
use crate::metrics::{Counters, StageStats};
use crate::upstream::{NoUpstream, Upstream};

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

/// How to instantiate a stage: its upstream, configuration, limits and capabilities.
#[derive(Default)]
pub struct StageOptions {
    upstream: Option<Box<dyn Upstream>>,
    config: Vec<(String, String)>,
    /// Fused mode: the configuration of each inner stage, most upstream first.
    inner_configs: Vec<Vec<(String, String)>>,
    limits: Limits,
    capabilities: Capabilities,
    policy: FaultPolicy,
    dead_letter: Option<Box<dyn Write + Send>>,
}

impl StageOptions {
    /// No upstream (every pull answers `none`), no configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets where the stage's pulls go: another [`Stage`], or a host-native source.
    pub fn upstream(mut self, upstream: impl Upstream + 'static) -> Self {
        self.upstream = Some(Box::new(upstream));
        self
    }

    /// Sets the stage's budgets (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets what the stage may see of the outside world (default: nothing real).
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets what happens when the stage faults (default: [`FaultPolicy::Fail`]).
    pub fn on_fault(mut self, policy: FaultPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Where the input of a call that faulted is written (framed) under
    /// [`FaultPolicy::Restart`]. Without one it is counted and logged only.
    pub fn dead_letter(mut self, out: impl Write + Send + 'static) -> Self {
        self.dead_letter = Some(Box::new(out));
        self
    }

    /// Adds one configuration entry, returned to the guest by `host.config` in this order.
    /// For a fused stage ([`crate::Engine::load_fused`]) this is the last stage's
    /// configuration; see [`StageOptions::inner_config`] for the others.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.push((key.into(), value.into()));
        self
    }

    /// Fused mode: adds a configuration entry for inner stage `index` of a fused chain (0 is
    /// the most upstream; the last stage takes [`StageOptions::config`]). Each inner stage
    /// reads only its own configuration.
    pub fn inner_config(
        mut self,
        index: usize,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        if self.inner_configs.len() <= index {
            self.inner_configs.resize_with(index + 1, Vec::new);
        }
        self.inner_configs[index].push((key.into(), value.into()));
        self
    }
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
    /// Set while a swap waits for or holds the lock, so that callers wait for the cut-over
    /// instead of being refused as re-entrant.
    swapping: AtomicBool,
    /// Set while a call (resume, close) is in progress: a second call is refused (R1).
    /// Observers (`state`, `recovered_faults`) may hold `inner` for a moment; only this flag,
    /// never a busy lock, means "already running".
    in_call: AtomicBool,
    inner: Mutex<Inner>,
}

struct Inner {
    state: Lifecycle,
    /// The store and bindings; `None` once Closed or Faulted, so its memory is freed.
    live: Option<Live>,
    /// The compiled component the stage runs now (a swap replaces it), and its digest.
    pre: StageWorldPre<StageCtx>,
    digest: Arc<str>,
    /// What survived the last fault (its upstream, the input of the failed call).
    salvage: Option<Salvage>,
    supervisor: Supervisor,
}

/// Everything needed to make a fresh instance of the stage.
struct Recipe {
    engine: Engine,
    config: Vec<(String, String)>,
    inner_configs: Vec<Vec<(String, String)>>,
    limits: Limits,
    capabilities: Capabilities,
    fuel: Option<u64>,
    keep_inputs: bool,
    /// The stage's count of suppressed log lines, carried by every instance's log gate.
    log_lines_suppressed: Arc<std::sync::atomic::AtomicU64>,
}

impl Recipe {
    /// Instantiates a fresh store and instance on `upstream` (not primed).
    fn spawn(
        &self,
        pre: &StageWorldPre<StageCtx>,
        name: &Arc<str>,
        upstream: Box<dyn Upstream>,
        upstream_done: bool,
    ) -> Result<Live> {
        let inner_exports = fused_exports(self.engine.wasmtime(), pre);
        let ctx = StageCtx::new(
            name.clone(),
            upstream,
            self.config.clone(),
            Budget::new(
                self.limits,
                self.engine.tick_counter(),
                1 + inner_exports.len(),
            ),
            self.capabilities,
            self.engine.instance_counter(),
            self.log_lines_suppressed.clone(),
        );
        let mut store = Store::new(self.engine.wasmtime(), ctx);
        store.data_mut().set_inner(
            inner_exports
                .iter()
                .enumerate()
                .map(|(i, (_, inner))| {
                    let config = self.inner_configs.get(i).cloned().unwrap_or_default();
                    (format!("{name}/{inner}"), config)
                })
                .collect(),
        );
        store.data_mut().set_upstream_done(upstream_done);
        if self.keep_inputs {
            store.data_mut().keep_inputs();
        }
        store.limiter(|ctx| &mut ctx.budget);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.on_deadline()));
        store.set_hostcall_fuel(self.limits.hostcall_fuel());
        // Instantiation runs start functions: the same budgets as any call.
        store.data_mut().begin(Serving::Nothing, Instant::now());
        store.set_epoch_deadline(FIRST_CHECK_TICKS);
        if let Some(fuel) = self.fuel {
            let _ = store.set_fuel(fuel);
        }
        let instance = pre.instance_pre().instantiate(&mut store);
        let report = store.data_mut().end();
        let instance = match (instance, report.violation) {
            (_, Some((rule, detail))) => return Err(violation(name, rule, detail)),
            (Err(e), None) => return Err(fault_of(name, Call::Instantiate, &e, &store)),
            (Ok(instance), None) => instance,
        };
        let world = StageWorld::new(&mut store, &instance)
            .map_err(|e| fault_of(name, Call::Instantiate, &e, &store))?;
        let state = StateFuncs::find(&mut store, &instance);
        let mut fused = Vec::new();
        for (export, inner) in inner_exports {
            let found = InnerStage::find(&mut store, &instance, &export).ok_or_else(|| {
                Error::WrongWorld {
                    stage: name.to_string(),
                    reason: format!("its export `{export}` is not a generator"),
                }
            })?;
            fused.push((format!("{name}/{inner}"), found));
        }
        Ok(Live {
            store,
            world,
            state,
            fused,
            fuel: self.fuel,
        })
    }
}

struct Live {
    store: Store<StageCtx>,
    world: StageWorld,
    /// The optional `state` interface (hot-swap state handoff), if the component exports it.
    state: Option<StateFuncs>,
    /// Fused mode: the stages composed ahead of this one in the same component, most upstream
    /// first, named `fused/inner` in errors; primed and closed by the host, upstream-first.
    fused: Vec<(String, InnerStage)>,
    /// Fuel to give each call when the engine meters fuel.
    fuel: Option<u64>,
}

/// The generator of a stage fused ahead of the outer one ([`crate::fuse`]).
#[derive(Clone, Copy)]
struct InnerStage {
    resume: TypedFunc<(u32,), (Option<Vec<u8>>,)>,
    close: TypedFunc<(), ()>,
}

impl InnerStage {
    fn find(store: &mut Store<StageCtx>, instance: &Instance, export: &str) -> Option<Self> {
        let iface = instance.get_export_index(&mut *store, None, export)?;
        Some(InnerStage {
            resume: typed_export(store, instance, &iface, "resume")?,
            close: typed_export(store, instance, &iface, "close")?,
        })
    }
}

/// Function `name` of the exported interface `iface`, if it exists with these types.
fn typed_export<Params, Results>(
    store: &mut Store<StageCtx>,
    instance: &Instance,
    iface: &wasmtime::component::ComponentExportIndex,
    name: &str,
) -> Option<TypedFunc<Params, Results>>
where
    Params: wasmtime::component::ComponentNamedList + wasmtime::component::Lower,
    Results: wasmtime::component::ComponentNamedList + wasmtime::component::Lift,
{
    let func = instance.get_export_index(&mut *store, Some(iface), name)?;
    instance.get_typed_func(&mut *store, func).ok()
}

/// The inner-stage exports of a fused component, most upstream first: (export, stage name).
fn fused_exports(
    engine: &wasmtime::Engine,
    pre: &StageWorldPre<StageCtx>,
) -> Vec<(String, String)> {
    let component = pre.instance_pre().component();
    let mut found: Vec<(char, String, String)> = component
        .component_type()
        .exports(engine)
        .filter_map(|(export, _)| {
            crate::fuse::inner_name(export)
                .map(|(order, inner)| (order, export.to_string(), inner.to_string()))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .map(|(_, export, inner)| (export, inner))
        .collect()
}

/// The typed functions of the optional `sluicegate:stage/state@0.1.0` export.
struct StateFuncs {
    snapshot: TypedFunc<(), (Option<Vec<u8>>,)>,
    restore: TypedFunc<(Vec<u8>,), (std::result::Result<(), String>,)>,
}

impl StateFuncs {
    /// The component's `state` interface, if it exports one of the right type.
    fn find(store: &mut Store<StageCtx>, instance: &Instance) -> Option<StateFuncs> {
        let iface = instance.get_export_index(&mut *store, None, STATE_INTERFACE)?;
        Some(StateFuncs {
            snapshot: typed_export(store, instance, &iface, "snapshot")?,
            restore: typed_export(store, instance, &iface, "restore")?,
        })
    }
}

/// The optional export through which a stage hands its state to its next version.
const STATE_INTERFACE: &str = "sluicegate:stage/state@0.1.0";

/// What a resume answered that passed every check, and the upstream's fault if one happened
/// while it served this stage's pulls (X4).
type Answer = (Option<Chunk>, Option<Error>);

impl Live {
    /// Calls `resume(credits)` and checks everything the guest did and answered (C1-C3,
    /// P1, S1, R3, the limits). An `Err` is a fault: the store must not be entered again.
    fn resume(
        &mut self,
        name: &str,
        call: Call,
        credits: u32,
        counters: &Counters,
    ) -> Result<Answer> {
        if matches!(call, Call::Prime) && !self.fused.is_empty() {
            self.enter_fused(Call::Prime)?;
        }
        counters.entered_resume(credits);
        // One clock read serves the CPU budget and the latency histogram.
        let started = Instant::now();
        self.store
            .data_mut()
            .begin(Serving::Resume(credits), started);
        self.arm();
        let answer = self
            .world
            .sluicegate_stage_generator()
            .call_resume(&mut self.store, credits);
        counters.resume_took(started.elapsed());
        if let Some(bytes) = self.store.data_mut().budget.take_memory_growth() {
            counters.memory_reached(bytes);
        }
        let CallReport {
            violation: broken,
            upstream_fault,
        } = self.store.data_mut().end();
        let answer = match (answer, broken) {
            (_, Some((rule, detail))) => return Err(violation(name, rule, detail)),
            (Err(e), None) => return Err(fault_of(name, call, &e, &self.store)),
            (Ok(answer), None) => answer,
        };
        let max_bytes = self.store.data().budget.limits().max_chunk_bytes;
        if let Some(bytes) = answer.as_ref().filter(|b| b.len() > max_bytes) {
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
        let chunk = match answer {
            None => None,
            Some(bytes) => match count_records(&bytes, credits) {
                Ok(records) => Some(Chunk::from_checked(bytes, records)),
                Err(error) => return Err(chunk_violation(name, call, credits, error)),
            },
        };
        Ok((chunk, upstream_fault))
    }

    /// Fused mode: enters every inner stage, upstream-first, with `call` (the priming
    /// `resume(0)` or `close`), under the outer stage's boundary checks: an answer to priming
    /// goes through the same chunk check (P1, C1), a pull while closing is R4, and traps and
    /// limits are named after the inner stage (`fused/inner`).
    fn enter_fused(&mut self, call: Call) -> Result<()> {
        let serving = match call {
            Call::Close => Serving::Close,
            _ => Serving::Resume(0),
        };
        for i in 0..self.fused.len() {
            let name = self.fused[i].0.clone();
            let InnerStage { resume, close } = self.fused[i].1;
            self.store.data_mut().begin(serving, Instant::now());
            self.arm();
            let answer = match call {
                Call::Close => close.call(&mut self.store, ()).map(|()| None),
                _ => resume.call(&mut self.store, (0,)).map(|(answer,)| answer),
            };
            let report = self.store.data_mut().end();
            let answer = match (answer, report.violation) {
                (_, Some((rule, detail))) => return Err(violation(&name, rule, detail)),
                (Err(e), None) => return Err(fault_of(&name, call, &e, &self.store)),
                (Ok(answer), None) => answer,
            };
            if let Some(bytes) = answer {
                count_records(&bytes, 0).map_err(|e| chunk_violation(&name, call, 0, e))?;
            }
        }
        Ok(())
    }

    /// Calls `close()` (the stage's cleanup); an `Err` is a fault (R4, a trap, a limit).
    fn close(&mut self, name: &str, counters: &Counters) -> Result<()> {
        if !self.fused.is_empty() {
            self.enter_fused(Call::Close)?;
        }
        counters.entered_close();
        self.store.data_mut().begin(Serving::Close, Instant::now());
        self.arm();
        let done = self
            .world
            .sluicegate_stage_generator()
            .call_close(&mut self.store);
        let report = self.store.data_mut().end();
        match (done, report.violation) {
            (_, Some((rule, detail))) => Err(violation(name, rule, detail)),
            (Err(e), None) => Err(fault_of(name, Call::Close, &e, &self.store)),
            (Ok(()), None) => Ok(()),
        }
    }

    /// Asks the stage for its state (hot swap); `None` if it has no `state` interface or
    /// nothing to hand over. It may not pull meanwhile (X5).
    fn snapshot(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(state) = self.state.as_ref().map(|s| s.snapshot) else {
            return Ok(None);
        };
        self.store
            .data_mut()
            .begin(Serving::Nothing, Instant::now());
        self.arm();
        let answer = state.call(&mut self.store, ());
        let report = self.store.data_mut().end();
        match (answer, report.violation) {
            (_, Some((rule, detail))) => Err(violation(name, rule, detail)),
            (Err(e), None) => Err(fault_of(name, Call::Snapshot, &e, &self.store)),
            (Ok((state,)), None) => Ok(state),
        }
    }

    /// Gives a freshly primed stage its predecessor's state; `Ok(false)` if it has no
    /// `state` interface to take it with.
    fn restore(&mut self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let Some(restore) = self.state.as_ref().map(|s| s.restore) else {
            return Ok(false);
        };
        self.store
            .data_mut()
            .begin(Serving::Nothing, Instant::now());
        self.arm();
        let answer = restore.call(&mut self.store, (bytes,));
        let report = self.store.data_mut().end();
        match (answer, report.violation) {
            (_, Some((rule, detail))) => Err(violation(name, rule, detail)),
            (Err(e), None) => Err(fault_of(name, Call::Restore, &e, &self.store)),
            (Ok((Err(refusal),)), None) => Err(Error::Host {
                stage: name.to_string(),
                message: format!("the stage refused the state: {refusal}"),
            }),
            (Ok((Ok(()),)), None) => Ok(true),
        }
    }

    /// Arms the budgets of one call: the epoch deadline and, if metered, the fuel.
    fn arm(&mut self) {
        self.store.set_epoch_deadline(FIRST_CHECK_TICKS);
        if let Some(fuel) = self.fuel {
            // Only fails when the engine does not meter fuel, which `fuel` rules out.
            let _ = self.store.set_fuel(fuel);
        }
    }
}

/// A call in progress on a stage: its `Inner`, and the R1 flag, cleared when the call ends
/// (also if the host panics, which poisons the lock instead).
struct InCall<'a> {
    inner: MutexGuard<'a, Inner>,
    in_call: &'a AtomicBool,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
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

enum Lifecycle {
    Created,
    Suspended,
    Exhausted,
    Closed,
    Faulted(Box<Error>),
    Bypassed,
}

impl Stage {
    pub(crate) fn instantiate(
        engine: &Engine,
        pre: &StageWorldPre<StageCtx>,
        digest: &Arc<str>,
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
        let live = recipe.spawn(pre, &name, upstream, false)?;
        Ok(Stage {
            shared: Arc::new(Shared {
                name,
                counters,
                recipe,
                swapping: AtomicBool::new(false),
                in_call: AtomicBool::new(false),
                inner: Mutex::new(Inner {
                    state: Lifecycle::Created,
                    live: Some(live),
                    pre: pre.clone(),
                    digest: digest.clone(),
                    salvage: None,
                    supervisor: Supervisor::new(options.policy, options.dead_letter),
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

    /// Resumes the stage with `credits` of demand (rules P1–P2, S1–S2, E1, D1, F1, R1).
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
                Err(error) if inner.salvage.is_some() => error,
                answer => return answer,
            };
            // Apply the fault policy; a fault while priming a restarted instance is one more
            // restart attempt, so this ends once the restart budget is spent.
            loop {
                match inner.recover(recipe, name, counters, error) {
                    Ok(()) => break,
                    Err(e) if inner.salvage.is_some() && inner.supervisor.may_restart() => {
                        error = e
                    }
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
        match self.shared.inner.lock() {
            Ok(inner) => inner.supervisor.recovered.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Closes the stage: runs its cleanup exactly once if it was primed (rules P3, S3, E2, D2,
    /// F2, R4). Idempotent.
    pub fn close(&self) -> Result<()> {
        let mut inner = self.lock()?;
        inner.close(&self.shared.name, &self.shared.counters)
    }

    /// Enters a call: refused with R1 if one is in progress (another thread's, or this
    /// thread's own through a pull); waits for a swap's cut-over or an observer's glance.
    fn lock(&self) -> Result<InCall<'_>> {
        // A swap is waiting for the chunk boundary: let it cut over first. (std's mutex is
        // not fair: without this the caller that just released the lock takes it straight
        // back, and a swap could wait for as long as the stream flows.)
        while self.shared.swapping.load(Ordering::Acquire) {
            std::thread::yield_now();
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
            Ok(inner) => Ok(InCall { inner, in_call }),
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
    fn pull(&mut self, credits: u32) -> Result<Option<Chunk>> {
        self.resume(credits)
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

impl Lifecycle {
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

impl Inner {
    fn resume(&mut self, name: &str, counters: &Counters, credits: u32) -> Result<Option<Chunk>> {
        let call = match &self.state {
            Lifecycle::Created if credits > 0 => {
                return Err(Error::NotPrimed {
                    stage: name.to_string(),
                    credits,
                });
            }
            Lifecycle::Created => Call::Prime,
            Lifecycle::Suspended => Call::Resume,
            Lifecycle::Exhausted => return Ok(None),
            Lifecycle::Closed => {
                return Err(Error::Closed {
                    stage: name.to_string(),
                });
            }
            Lifecycle::Faulted(cause) => return Err(faulted(name, cause)),
            Lifecycle::Bypassed => return self.pass_through(counters, credits),
        };
        let Some(live) = self.live.as_mut() else {
            return Err(self.fault(missing_store(name)));
        };
        let (chunk, upstream_fault) = match live.resume(name, call, credits, counters) {
            Ok(answer) => answer,
            Err(error) => return Err(self.fault(error)),
        };
        self.state = match chunk {
            Some(_) => Lifecycle::Suspended,
            None => Lifecycle::Exhausted,
        };
        match upstream_fault {
            // X4: nothing of this call is delivered; the stage itself stays usable for close.
            Some(cause) => Err(Error::UpstreamFaulted {
                stage: name.to_string(),
                cause: Box::new(cause),
            }),
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
        match &self.state {
            Lifecycle::Created => {
                // P3: never entered, so there is nothing to clean up.
                self.state = Lifecycle::Closed;
                self.live = None;
                return Ok(());
            }
            Lifecycle::Suspended | Lifecycle::Exhausted => {}
            Lifecycle::Closed => return Ok(()),
            Lifecycle::Faulted(cause) => return Err(faulted(name, cause)),
            Lifecycle::Bypassed => {
                self.state = Lifecycle::Closed;
                self.salvage = None;
                return Ok(());
            }
        }
        let Some(live) = self.live.as_mut() else {
            return Err(self.fault(missing_store(name)));
        };
        match live.close(name, counters) {
            Ok(()) => {
                self.state = Lifecycle::Closed;
                self.live = None;
                Ok(())
            }
            Err(error) => Err(self.fault(error)),
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

    /// Applies the fault policy after a fault in `resume`. `Ok` means "retry the call";
    /// `Err` is the fault, final.
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
            FaultPolicy::Restart { .. } if self.supervisor.may_restart() => {
                let quarantined = self.supervisor.quarantine(name, &salvage.inputs);
                counters.restarted(quarantined);
                std::thread::sleep(self.supervisor.backoff());
                self.supervisor.restarts += 1;
                self.supervisor.recovered.push(error);
                let live =
                    match recipe.spawn(&self.pre, name, salvage.upstream, salvage.upstream_done) {
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
                let records: Vec<Vec<u8>> = salvage
                    .inputs
                    .iter()
                    .flat_map(|chunk| chunk.records().map(<[u8]>::to_vec))
                    .collect();
                self.supervisor.bypass_queue.extend(records);
                self.supervisor.recovered.push(error);
                self.salvage = Some(Salvage {
                    inputs: Vec::new(),
                    ..salvage
                });
                self.state = Lifecycle::Bypassed;
                Ok(())
            }
            _ => {
                self.salvage = Some(salvage);
                Err(error)
            }
        }
    }

    /// A bypassed stage: its input passes through, at most `credits` records per call.
    fn pass_through(&mut self, counters: &Counters, credits: u32) -> Result<Option<Chunk>> {
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
            match salvage.upstream.pull(credits - chunk.len())? {
                Some(more) => more.records().for_each(|r| chunk.push(r)),
                None => salvage.upstream_done = true,
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

fn violation(name: &str, rule: Rule, detail: String) -> Error {
    Error::ProtocolViolation {
        stage: name.to_string(),
        rule,
        detail,
    }
}

fn missing_store(name: &str) -> Error {
    Error::Host {
        stage: name.to_string(),
        message: "the stage's store is gone although its state says it is live".into(),
    }
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

/// Names what ended a call: a budget that ran out (CPU, fuel, stack, memory, chunk bytes), or
/// else a trap, quoting what the guest last wrote to stderr (a Rust panic message).
fn fault_of(name: &str, call: Call, error: &wasmtime::Error, store: &Store<StageCtx>) -> Error {
    let budget = &store.data().budget;
    let limits = budget.limits();
    let exceeded = |limit, detail: String| Error::LimitExceeded {
        stage: name.to_string(),
        limit,
        call,
        detail,
    };
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => {
            return exceeded(
                Limit::Cpu,
                format!(
                    "the call ran past its CPU budget of {:?}",
                    limits.cpu_per_call
                ),
            );
        }
        Some(wasmtime::Trap::OutOfFuel) => {
            return exceeded(
                Limit::Fuel,
                format!(
                    "the call used up its fuel budget of {}",
                    limits.fuel_per_call.unwrap_or(u64::MAX)
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
    if let Some(denied) = budget.denied() {
        return exceeded(Limit::Memory, denied.to_string());
    }
    let text = format!("{error:#}");
    if text.contains("too much data is being copied") {
        return exceeded(
            Limit::ChunkBytes,
            format!(
                "the stage tried to hand over more than {} bytes in one call (if it was only \
                 answering the credits it was granted, clamp them with limits.max_chunk_records)",
                limits.hostcall_fuel()
            ),
        );
    }
    // One line: the trap, or the root cause without wasmtime's backtrace frames.
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
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
