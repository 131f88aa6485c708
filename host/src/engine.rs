//! The engine: one wasmtime `Engine` and one `Linker`, built once. Components are compiled and
//! type-checked against the `stage` world once ([`StageComponent`]) and instantiated many times.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;

use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_COMPILE_TIMEOUT, DEFAULT_MAX_COMPONENT_BYTES, DEFAULT_MAX_WASM_STACK, EPOCH_TICK,
};
use crate::sandbox::StageCtx;

/// Loads and compiles stage components. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: wasmtime::Engine,
    pub(crate) ticks: Arc<std::sync::atomic::AtomicU64>,
    pub(crate) live_instances: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) compile_timeout: Duration,
    pub(crate) linker: Arc<Linker<StageCtx>>,
    pub(crate) fuel: bool,
    pub(crate) max_component_bytes: usize,
    pub(crate) max_wasm_stack: usize,
    /// Whether components of the simple shape run as their core modules (`fast.rs`).
    pub(crate) core_fast_path: bool,
    /// The pooling allocator's instance slots: the live stage instances the engine allows,
    /// whichever path they run on (a stage on the fast path holds core instances only).
    pub(crate) pool_slots: Option<usize>,
}

/// Builds an [`Engine`]; every default is safe for untrusted stages.
#[derive(Debug, Clone)]
pub struct EngineBuilder {
    compile_timeout: Duration,
    fuel: bool,
    epochs: bool,
    pooling: Option<u32>,
    max_wasm_stack: usize,
    max_component_bytes: usize,
    compile_cache: Option<std::path::PathBuf>,
    core_fast_path: bool,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// Defaults: no fuel metering (epoch deadlines only, cheaper), a wasm stack of
    /// [`DEFAULT_MAX_WASM_STACK`] per stage, components up to [`DEFAULT_MAX_COMPONENT_BYTES`].
    pub fn new() -> Self {
        EngineBuilder {
            compile_timeout: DEFAULT_COMPILE_TIMEOUT,
            fuel: false,
            epochs: true,
            pooling: None,
            max_wasm_stack: DEFAULT_MAX_WASM_STACK,
            max_component_bytes: DEFAULT_MAX_COMPONENT_BYTES,
            compile_cache: None,
            // `SLUICEGATE_FAST_PATH=0` runs everything on the component path (the fast
            // path's reference; the test suite runs once more with it).
            core_fast_path: std::env::var_os("SLUICEGATE_FAST_PATH").is_none_or(|v| v != "0"),
        }
    }

    /// Runs stages of the simple shape the SDK and hand-written stages produce as their core
    /// modules, the canonical ABI done by the host (on by default, unless the environment
    /// variable `SLUICEGATE_FAST_PATH` is `0`; see [`ExecutionPath`](crate::ExecutionPath)).
    /// Off, every stage runs on wasmtime's component model: the reference the fast path is
    /// tested against.
    pub fn core_fast_path(mut self, enable: bool) -> Self {
        self.core_fast_path = enable;
        self
    }

    /// Meters fuel, so stages can be given deterministic per-call fuel budgets
    /// ([`Limits::fuel_per_call`](crate::Limits::fuel_per_call)). Costs throughput.
    pub fn fuel(mut self, enable: bool) -> Self {
        self.fuel = enable;
        self
    }

    /// Preallocates slots for `instances` stage instances (the pooling allocator): faster
    /// instantiation and hot swaps, memory zeroed between uses, a fixed capacity (an
    /// instantiation past it fails cleanly). Each slot reserves address space, not memory.
    pub fn pooling(mut self, instances: u32) -> Self {
        self.pooling = Some(instances);
        self
    }

    /// Turns CPU deadlines off entirely: a looping stage then hangs its caller. Only for
    /// measuring what the deadlines cost; never for untrusted stages.
    #[doc(hidden)]
    pub fn without_cpu_deadlines_for_benchmarks(mut self) -> Self {
        self.epochs = false;
        self
    }

    /// The wasm stack each stage may use, in bytes; deeper recursion faults the stage.
    pub fn max_wasm_stack(mut self, bytes: usize) -> Self {
        self.max_wasm_stack = bytes;
        self
    }

    /// How long compiling one component may take before the load is refused
    /// ([`DEFAULT_COMPILE_TIMEOUT`]). Compilation runs on a worker thread; one that overruns
    /// is left to finish in the background (Cranelift cannot be interrupted) and its result
    /// is discarded.
    pub fn compile_timeout(mut self, timeout: Duration) -> Self {
        self.compile_timeout = timeout;
        self
    }

    /// The largest component the engine will compile, checked before compiling.
    pub fn max_component_bytes(mut self, bytes: usize) -> Self {
        self.max_component_bytes = bytes;
        self
    }

    /// Keeps compiled components on disk in `dir` (wasmtime's compilation cache, keyed by the
    /// component's bytes and the engine's settings), so loading the same component again skips
    /// Cranelift: a Python or JavaScript stage loads in well under a second instead of several.
    /// Off by default in the library; the CLI turns it on (`--no-cache` turns it off).
    pub fn compile_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.compile_cache = Some(dir.into());
        self
    }

    /// Builds the engine and starts its epoch ticker (one thread, stopped with the engine).
    pub fn build(self) -> Result<Engine> {
        let mut config = wasmtime::Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(self.epochs)
            .consume_fuel(self.fuel)
            .max_wasm_stack(self.max_wasm_stack)
            // wasmtime refuses a wasm stack larger than its async stack (2 MiB by default),
            // even for synchronous calls; stages never run on an async stack, so keep it above.
            .async_stack_size(self.max_wasm_stack.saturating_add(1 << 20).max(2 << 20));
        // `SLUICEGATE_PERF_MAP=1` writes /tmp/perf-PID.map, so `perf report` names the stages'
        // wasm functions (docs/authoring.md, "Profiling a stage").
        if std::env::var_os("SLUICEGATE_PERF_MAP").is_some_and(|v| v != "0") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Some(dir) = &self.compile_cache {
            let mut cache = wasmtime::CacheConfig::new();
            cache.with_directory(dir);
            let cache = wasmtime::Cache::new(cache).map_err(|e| Error::Host {
                stage: "-".into(),
                message: format!("compile cache in {}: {e:#}", dir.display()),
            })?;
            config.cache(Some(cache));
        }
        if let Some(instances) = self.pooling {
            let mut pool = wasmtime::PoolingAllocationConfig::new();
            pool.total_component_instances(instances)
                .total_core_instances(instances.saturating_mul(8))
                .total_memories(instances.saturating_mul(2))
                .total_tables(instances.saturating_mul(8))
                .max_memories_per_component(4)
                .max_memory_size(crate::limits::DEFAULT_MEMORY_BYTES * 4);
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let inner = wasmtime::Engine::new(&config).map_err(|e| host_error("-", e))?;
        let linker = crate::sandbox::linker(&inner).map_err(|e| host_error("-", e))?;
        let ticks = Arc::new(std::sync::atomic::AtomicU64::new(0));
        if self.epochs {
            start_ticker(&inner, EPOCH_TICK, ticks.clone());
        }
        Ok(Engine {
            inner,
            ticks,
            live_instances: Arc::default(),
            compile_timeout: self.compile_timeout,
            linker: Arc::new(linker),
            fuel: self.fuel,
            max_component_bytes: self.max_component_bytes,
            max_wasm_stack: self.max_wasm_stack,
            core_fast_path: self.core_fast_path,
            pool_slots: self.pooling.map(|slots| slots as usize),
        })
    }
}

/// Advances the engine's epoch every `tick` until the engine is dropped, and counts the ticks
/// in `ticks` (the host's cheap clock: see [`crate::limits::Budget`]).
fn start_ticker(
    engine: &wasmtime::Engine,
    tick: Duration,
    ticks: Arc<std::sync::atomic::AtomicU64>,
) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("sluicegate-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                ticks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(engine);
                std::thread::sleep(tick);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the epoch ticker; CPU limits will trip at once: {e}");
    }
}

impl Engine {
    /// An engine with the defaults of [`EngineBuilder::new`].
    pub fn new() -> Result<Self> {
        EngineBuilder::new().build()
    }

    /// Starts configuring an engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::new()
    }

    /// Stage instances (stores) alive right now, across all stages of this engine: what a
    /// swap storm or a restart loop must leave flat.
    pub fn live_instances(&self) -> usize {
        self.live_instances
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn instance_counter(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.live_instances.clone()
    }

    /// The epoch ticks counted so far: a clock of [`EPOCH_TICK`] resolution that costs one
    /// atomic load to read.
    pub(crate) fn tick_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.ticks.clone()
    }

    /// True if the engine meters fuel.
    pub fn fuel_enabled(&self) -> bool {
        self.fuel
    }

    /// The wasm stack each stage may use, in bytes ([`EngineBuilder::max_wasm_stack`]).
    pub fn max_wasm_stack(&self) -> usize {
        self.max_wasm_stack
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}

pub(crate) fn host_error(stage: &str, e: wasmtime::Error) -> Error {
    Error::Host {
        stage: stage.to_string(),
        message: format!("{e:#}"),
    }
}
