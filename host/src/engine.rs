//! The engine: one wasmtime `Engine` and one `Linker`, built once. Components are compiled and
//! type-checked against the `stage` world once ([`StageComponent`]) and instantiated many times.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};

use crate::bindings::{types_linker, upstream_linker};
use crate::error::{Error, Result};
use crate::limits::{
    DEFAULT_COMPILE_TIMEOUT, DEFAULT_MAX_COMPONENT_BYTES, DEFAULT_MAX_WASM_STACK, EPOCH_TICK,
};
use crate::stage::{Stage, StageCtx, StageOptions};

/// Loads and compiles stage components. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    inner: wasmtime::Engine,
    ticks: Arc<std::sync::atomic::AtomicU64>,
    live_instances: Arc<std::sync::atomic::AtomicUsize>,
    compile_timeout: Duration,
    linker: Arc<Linker<StageCtx>>,
    fuel: bool,
    max_component_bytes: usize,
    max_wasm_stack: usize,
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
        }
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
        let linker = stage_linker(&inner).map_err(|e| host_error("-", e))?;
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
        })
    }
}

/// Everything a stage may import: WASI (deny-by-default, its waits bounded), the `upstream`
/// and `types` interfaces, and the host services (`host`, and each fused inner stage's).
fn stage_linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<StageCtx>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    crate::stage::shadow_waits(&mut linker)?;
    upstream_linker::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |ctx| ctx)?;
    types_linker::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |ctx| ctx)?;
    crate::stage::add_host_services(&mut linker)?;
    Ok(linker)
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

    /// Loads a component from a file. The stage is named after the file stem until it is
    /// given a name at instantiation.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<StageComponent> {
        let path = path.as_ref();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let bytes = std::fs::read(path).map_err(|e| Error::Load {
            stage: name.clone(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        self.load_bytes(&name, &bytes)
    }

    /// Fused mode: composes `stages` (name, component bytes), most upstream first, into one
    /// component and loads it as a single stage named `name` (see [`crate::fuse`] for what the
    /// host stops checking inside). Its instances prime and close every inner stage,
    /// upstream-first; errors inside name the stage as `name/inner`.
    pub fn load_fused(&self, name: &str, stages: &[(String, Vec<u8>)]) -> Result<StageComponent> {
        let (bytes, inner) = crate::fuse::compose(name, stages)?;
        let mut component = self.load_bytes(name, &bytes)?;
        // Only a component composed here is fused: never inferred from export names.
        component.fused = inner.into();
        Ok(component)
    }

    /// Loads a component from bytes (binary, or WAT text), naming it `name` in errors.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<StageComponent> {
        if bytes.len() > self.max_component_bytes {
            return Err(Error::Load {
                stage: name.to_string(),
                reason: format!(
                    "the component is {} bytes, more than the {} the engine compiles",
                    bytes.len(),
                    self.max_component_bytes
                ),
            });
        }
        check_header(name, bytes)?;
        let component = self.compile(name, bytes)?;
        let wrong_world = |e: wasmtime::Error| Error::WrongWorld {
            stage: name.to_string(),
            reason: format!("{e:#}"),
        };
        // Imports first (something the host does not grant), then the exports' shape.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wrong_world)?;
        crate::world::check_exports(&self.inner, &component).map_err(|reason| {
            Error::WrongWorld {
                stage: name.to_string(),
                reason,
            }
        })?;
        Ok(StageComponent {
            name: name.into(),
            digest: digest(bytes).into(),
            engine: self.clone(),
            pre,
            fused: Arc::new([]),
        })
    }

    /// Compiles on a worker thread, giving up after the compile timeout (checklist #3: a
    /// "compile bomb" must not hold the caller hostage).
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<Component> {
        let (engine, bytes) = (self.inner.clone(), bytes.to_vec());
        let (done, outcome) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("sluicegate-compile-{name}"))
            .spawn(move || {
                let _ = done.send(Component::new(&engine, &bytes));
            })
            .map_err(|e| Error::Host {
                stage: name.to_string(),
                message: format!("cannot start a compile thread: {e}"),
            })?;
        let load = |reason: String| Error::Load {
            stage: name.to_string(),
            reason,
        };
        match outcome.recv_timeout(self.compile_timeout) {
            Ok(Ok(component)) => {
                let _ = worker.join();
                Ok(component)
            }
            Ok(Err(e)) => Err(load(format!("invalid component: {e:#}"))),
            Err(_) => Err(load(format!(
                "compiling took longer than {:?}; refused (the compile thread finishes in \
                 the background and its result is discarded)",
                self.compile_timeout
            ))),
        }
    }

    pub(crate) fn wasmtime(&self) -> &wasmtime::Engine {
        &self.inner
    }
}

/// Tells apart "not wasm at all", "a core module" and "a component" before compiling, so the
/// error says what to do.
fn check_header(name: &str, bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    let load = |reason: &str| Error::Load {
        stage: name.to_string(),
        reason: reason.to_string(),
    };
    match bytes.get(..8) {
        Some(header) if header.starts_with(MAGIC) => {
            if header[4..8] == CORE_VERSION {
                Err(load(
                    "this is a core WebAssembly module, not a component: build for \
                     `wasm32-wasip2`, or wrap it with `wasm-tools component new`",
                ))
            } else {
                Ok(())
            }
        }
        // WAT text is accepted (hand-written stages, tests); anything else is not wasm.
        _ if looks_like_wat(bytes) => Ok(()),
        _ => Err(load(
            "not a WebAssembly file (no `\\0asm` header); expected a component built for \
             `wasm32-wasip2`",
        )),
    }
}

/// FNV-1a 64 of the component's bytes, as 16 hex digits: tells versions apart in reports
/// (not a security hash).
fn digest(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// True if `bytes` start, after white space and `;;` line comments, with `(`.
fn looks_like_wat(bytes: &[u8]) -> bool {
    let mut rest = bytes.trim_ascii_start();
    while rest.starts_with(b";;") {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        rest = rest[end..].trim_ascii_start();
    }
    rest.starts_with(b"(")
}

pub(crate) fn host_error(stage: &str, e: wasmtime::Error) -> Error {
    Error::Host {
        stage: stage.to_string(),
        message: format!("{e:#}"),
    }
}

/// A compiled component, checked against the `stage` world. Instantiate it as many times as
/// needed; each instance gets its own store.
#[derive(Clone)]
pub struct StageComponent {
    name: Arc<str>,
    digest: Arc<str>,
    engine: Engine,
    pre: InstancePre<StageCtx>,
    /// Set by [`Engine::load_fused`] only: the inner stages' generator exports and names,
    /// most upstream first.
    fused: Arc<[(String, String)]>,
}

impl std::fmt::Debug for StageComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .finish()
    }
}

impl StageComponent {
    /// The name the component was loaded under (the file stem for files).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A digest of the component's bytes (FNV-1a, 64 bits, hex), to tell versions apart.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<StageCtx> {
        &self.pre
    }

    /// Fused mode: the inner stages' generator exports and names, most upstream first; empty
    /// unless the component was built by [`Engine::load_fused`].
    pub(crate) fn fused_stages(&self) -> &[(String, String)] {
        &self.fused
    }

    /// The names of the interfaces the component imports, in its own order.
    pub(crate) fn imports(&self) -> Vec<String> {
        let component = self.pre.component();
        component
            .component_type()
            .imports(self.engine.wasmtime())
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Instantiates a new stage named `name`. The stage starts **Created**: nothing in it
    /// has run except component start functions; call [`Stage::prime`] next.
    pub fn instantiate(&self, name: &str, options: StageOptions) -> Result<Stage> {
        Stage::instantiate(&self.engine, self, name, options)
    }
}
