//! One live instance of a stage: its store and the typed functions the host calls into it, and
//! the [`Recipe`] that makes a fresh one (at instantiation, after a fault under `restart`, for a
//! hot swap). Every call goes through [`entry::enter`].

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use wasmtime::Store;
use wasmtime::component::{Instance, TypedFunc};

use super::entry;
use crate::chunk::{Answered, Chunk, Deliver};
use crate::component::StageComponent;
use crate::counters::Counters;
use crate::engine::Engine;
use crate::error::{Call, Error, Result, Rule};
use crate::fast::CoreCalls;
use crate::limits::{Budget, Limits};
use crate::policy::InputKeeping;
use crate::sandbox::{Capabilities, Serving, StageCtx};
use crate::upstream::Upstream;

/// The interface every stage exports.
const GENERATOR: &str = "sluicegate:stage/generator@0.1.0";
/// The optional export through which a stage hands its state to its next version.
const STATE_INTERFACE: &str = "sluicegate:stage/state@0.1.0";

/// Everything needed to make a fresh instance of the stage.
pub(crate) struct Recipe {
    pub(crate) engine: Engine,
    pub(crate) config: Vec<(String, String)>,
    /// Fused mode: the configuration of each inner stage, most upstream first.
    pub(crate) inner_configs: Vec<Vec<(String, String)>>,
    pub(crate) limits: Limits,
    pub(crate) capabilities: Capabilities,
    /// Fuel to give each call when the engine meters fuel.
    pub(crate) fuel: Option<u64>,
    pub(crate) keep_inputs: InputKeeping,
    /// The stage's count of suppressed log lines, carried by every instance's log gate.
    pub(crate) log_lines_suppressed: Arc<AtomicU64>,
}

impl Recipe {
    /// Instantiates `component` in a fresh store on `upstream` (not primed). Instantiation
    /// runs start functions, so it is entered like any call, under the same budgets.
    pub(crate) fn spawn(
        &self,
        component: &StageComponent,
        name: &Arc<str>,
        upstream: Box<dyn Upstream>,
        upstream_done: bool,
    ) -> Result<Live> {
        if let Some(slots) = self.engine.pool_slots
            && self.engine.live_instances() >= slots
        {
            return Err(Error::Host {
                stage: name.to_string(),
                message: format!(
                    "no instance slot left: the engine's pool holds {slots} live stage \
                     instances (EngineBuilder::pooling)"
                ),
            });
        }
        let fused = component.fused_stages();
        let ctx = StageCtx::new(
            name.clone(),
            upstream,
            self.config.clone(),
            Budget::new(self.limits, self.engine.tick_counter(), 1 + fused.len()),
            self.capabilities,
            self.engine.instance_counter(),
            self.log_lines_suppressed.clone(),
        );
        let mut store = Store::new(self.engine.wasmtime(), ctx);
        store.data_mut().set_inner(
            fused
                .iter()
                .enumerate()
                .map(|(i, (_, inner))| {
                    let config = self.inner_configs.get(i).cloned().unwrap_or_default();
                    (crate::fuse::inner_stage_name(name, inner), config)
                })
                .collect(),
        );
        store.data_mut().set_upstream_done(upstream_done);
        store.data_mut().keep_inputs(self.keep_inputs);
        store.limiter(|ctx| &mut ctx.budget);
        store.epoch_deadline_callback(|mut ctx| Ok(ctx.data_mut().budget.on_deadline()));
        store.set_hostcall_fuel(self.limits.hostcall_fuel());
        if let Some(plan) = component.plan() {
            // The fast path: the component's core modules, wired as the component wires them.
            let (calls, _) = entry::enter(
                &mut store,
                name,
                Call::Instantiate,
                Serving::Nothing,
                self.fuel,
                |store| plan.instantiate(store),
            )?;
            return Ok(Live {
                store,
                calls: Calls::Core(Box::new(calls)),
                fuel: self.fuel,
            });
        }
        let pre = component.instance_pre();
        let (instance, _) = entry::enter(
            &mut store,
            name,
            Call::Instantiate,
            Serving::Nothing,
            self.fuel,
            |store| pre.instantiate(store),
        )?;
        let wrong_world = |reason: String| Error::WrongWorld {
            stage: name.to_string(),
            reason,
        };
        let generator = Generator::find(&mut store, &instance, GENERATOR)
            .ok_or_else(|| wrong_world(format!("its export `{GENERATOR}` is not a generator")))?;
        let state = StateFuncs::find(&mut store, &instance);
        let mut inner = Vec::with_capacity(fused.len());
        for (export, stage) in fused {
            let found = Generator::find(&mut store, &instance, export)
                .ok_or_else(|| wrong_world(format!("its export `{export}` is not a generator")))?;
            inner.push((crate::fuse::inner_stage_name(name, stage), found));
        }
        Ok(Live {
            store,
            calls: Calls::Component {
                generator,
                state,
                inner,
            },
            fuel: self.fuel,
        })
    }
}

/// A live instance.
pub(crate) struct Live {
    pub(crate) store: Store<StageCtx>,
    calls: Calls,
    /// Fuel to give each call when the engine meters fuel.
    fuel: Option<u64>,
}

/// The functions the host calls into a live instance, on the path it runs on.
enum Calls {
    /// wasmtime's component model.
    Component {
        generator: Generator,
        /// The optional `state` interface (hot-swap state handoff), if the component exports
        /// it.
        state: Option<StateFuncs>,
        /// Fused mode: the stages composed ahead of this one in the same component, most
        /// upstream first, named `fused/inner` in errors; primed and closed by the host,
        /// upstream-first.
        inner: Vec<(String, Generator)>,
    },
    /// The fast path (`fast.rs`).
    Core(Box<CoreCalls>),
}

/// What a resume answered that passed every check, and the upstream's fault if one happened
/// while it served this stage's pulls (X4).
pub(crate) type Answer = (Option<Chunk>, Option<Box<Error>>);

/// [`Answer`], delivered already where the path allows it.
pub(crate) type Delivery<T> = (Option<Answered<T>>, Option<Box<Error>>);

impl Live {
    /// Calls `resume(credits)` and checks everything the guest did and answered (C1-C3, P1,
    /// S1, R3, the limits). An `Err` is a fault: the store must not be entered again.
    pub(crate) fn resume(
        &mut self,
        name: &str,
        call: Call,
        credits: u32,
        counters: &Counters,
    ) -> Result<Answer> {
        let (answer, upstream_fault) =
            self.resume_with::<Infallible>(name, call, credits, counters, None)?;
        let chunk = answer.map(|answer| match answer {
            Answered::Lifted(chunk) => chunk,
            // Nothing was given to deliver to.
            Answered::Delivered { value, .. } => match value {},
        });
        Ok((chunk, upstream_fault))
    }

    /// [`Live::resume`], the answer handed to `deliver` straight from the guest's memory on
    /// the fast path once it passed every check (one copy, into the puller); lifted into a
    /// chunk otherwise (the component path, or a call that already broke a rule).
    pub(crate) fn resume_with<T>(
        &mut self,
        name: &str,
        call: Call,
        credits: u32,
        counters: &Counters,
        deliver: Option<Deliver<'_, T>>,
    ) -> Result<Delivery<T>> {
        if call == Call::Prime {
            self.prime_inner()?;
        }
        // The latency histogram samples (`Counters::entered_resume`): most calls read no clock.
        let started = counters.entered_resume(credits).then(Instant::now);
        let serving = Serving::Resume(credits);
        let max_bytes = self.store.data().budget.limits().max_chunk_bytes;
        let outcome = match &self.calls {
            Calls::Component { generator, .. } => {
                let resume = generator.resume;
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    resume.call(store, (credits,)).map(|(answer,)| answer)
                })
                .map(|(answer, upstream_fault)| {
                    let answer = answer
                        .map(|bytes| entry::chunk(name, call, credits, bytes, max_bytes))
                        .transpose()
                        .map(|chunk| chunk.map(Answered::Lifted));
                    (answer, upstream_fault)
                })
            }
            Calls::Core(core) => {
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    let check = |bytes: &[u8]| entry::check(name, call, credits, bytes, max_bytes);
                    core.resume_with(store, credits, check, deliver)
                })
            }
        };
        if let Some(started) = started {
            counters.resume_took(started.elapsed());
        }
        if let Some(bytes) = self.store.data_mut().budget.take_memory_growth() {
            counters.memory_reached(bytes);
        }
        let (answer, upstream_fault) = outcome?;
        Ok((answer?, upstream_fault))
    }

    /// Fused mode: primes every inner stage, upstream-first, under the same checks as the
    /// stage itself (its answer is checked by P1 and C1, traps and limits are named after the
    /// inner stage, `fused/inner`).
    fn prime_inner(&mut self) -> Result<()> {
        let Calls::Component { inner, .. } = &self.calls else {
            return Ok(());
        };
        let max_bytes = self.store.data().budget.limits().max_chunk_bytes;
        for (name, inner) in inner {
            let resume = inner.resume;
            let (answer, upstream_fault) = entry::enter(
                &mut self.store,
                name,
                Call::Prime,
                Serving::Resume(0),
                self.fuel,
                |store| resume.call(store, (0,)).map(|(answer,)| answer),
            )?;
            if let Some(cause) = upstream_fault {
                return Err(Error::UpstreamFaulted {
                    stage: name.clone(),
                    cause,
                });
            }
            if let Some(bytes) = answer {
                entry::chunk(name, Call::Prime, 0, bytes, max_bytes)?;
            }
        }
        Ok(())
    }

    /// Calls `close()` (the stage's cleanup), and first every fused inner stage's,
    /// upstream-first; an `Err` is a fault (R4, a trap, a limit). A cleanup that pulled (R4)
    /// does not stop the others, which still run; after a trap the store is dead and nothing
    /// more can run. The first error is returned.
    pub(crate) fn close(&mut self, name: &str, counters: &Counters) -> Result<()> {
        let (generator, inner) = match &self.calls {
            Calls::Component {
                generator, inner, ..
            } => (generator, inner),
            Calls::Core(core) => {
                counters.entered_close();
                return entry::enter(
                    &mut self.store,
                    name,
                    Call::Close,
                    Serving::Close,
                    self.fuel,
                    |store| core.close(store),
                )
                .map(|_| ());
            }
        };
        let mut first_error = None;
        let inner_count = inner.len();
        let inner: Vec<(String, TypedFunc<(), ()>)> = inner
            .iter()
            .map(|(inner_name, g)| (inner_name.clone(), g.close))
            .collect();
        let outer = (name.to_string(), generator.close);
        for (i, (stage, close)) in inner.into_iter().chain([outer]).enumerate() {
            if i == inner_count {
                counters.entered_close();
            }
            let closed = entry::enter(
                &mut self.store,
                &stage,
                Call::Close,
                Serving::Close,
                self.fuel,
                |store| close.call(store, ()),
            );
            if let Err(error) = closed {
                let went_on = error.rule() == Some(Rule::PullWhileClosing);
                first_error.get_or_insert(error);
                if !went_on {
                    break;
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Asks the stage for its state (hot swap), under the handoff budget; `None` if it has no
    /// `state` interface or nothing to hand over. It may not pull meanwhile (X5).
    pub(crate) fn snapshot(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let (call, serving) = (Call::Snapshot, Serving::Nothing);
        let (state, _) = match &self.calls {
            Calls::Component { state, .. } => {
                let Some(snapshot) = state.as_ref().map(|s| s.snapshot) else {
                    return Ok(None);
                };
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    snapshot.call(store, ()).map(|(state,)| state)
                })?
            }
            Calls::Core(core) => {
                if !core.has_state() {
                    return Ok(None);
                }
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    core.snapshot(store)
                })?
            }
        };
        Ok(state)
    }

    /// Gives a freshly primed stage its predecessor's state, under the handoff budget;
    /// `Ok(false)` if it has no `state` interface to take it with.
    pub(crate) fn restore(&mut self, name: &str, bytes: Vec<u8>) -> Result<bool> {
        let (call, serving) = (Call::Restore, Serving::Nothing);
        let (answer, _) = match &self.calls {
            Calls::Component { state, .. } => {
                let Some(restore) = state.as_ref().map(|s| s.restore) else {
                    return Ok(false);
                };
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    restore.call(store, (bytes,)).map(|(answer,)| answer)
                })?
            }
            Calls::Core(core) => {
                if !core.has_state() {
                    return Ok(false);
                }
                entry::enter(&mut self.store, name, call, serving, self.fuel, |store| {
                    core.restore(store, &bytes)
                })?
            }
        };
        answer.map(|()| true).map_err(|refusal| Error::Host {
            stage: name.to_string(),
            message: format!("the stage refused the state: {refusal}"),
        })
    }
}

/// The `generator` functions of a stage (or of a fused inner stage).
#[derive(Clone, Copy)]
struct Generator {
    resume: TypedFunc<(u32,), (Option<Vec<u8>>,)>,
    close: TypedFunc<(), ()>,
}

impl Generator {
    fn find(store: &mut Store<StageCtx>, instance: &Instance, export: &str) -> Option<Self> {
        let iface = instance.get_export_index(&mut *store, None, export)?;
        Some(Generator {
            resume: typed_export(store, instance, &iface, "resume")?,
            close: typed_export(store, instance, &iface, "close")?,
        })
    }
}

/// The typed functions of the optional `sluicegate:stage/state@0.1.0` export.
#[derive(Clone, Copy)]
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
