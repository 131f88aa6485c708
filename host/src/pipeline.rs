//! Chaining stages: demand flows from the sink upstream through every stage (`yield from`),
//! data flows down, and every hop is a [`Stage`] that checks the protocol. The pipeline primes
//! upstream-first, and closes every primed stage exactly once, upstream-first (PEP 380 order),
//! whatever failed, reporting every error.

mod sink;
mod source;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use market_data::Checksum;

use self::sink::Sink;
use self::source::{CountedSource, SOURCE};
use crate::builtin;
use crate::config::{ComponentRef, PipelineSpec, StageSpec, base_dir, resolve, stage_config};
use crate::engine::{Engine, StageComponent};
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_CHUNK_BYTES;
use crate::metrics::{Counters, StageStats};
use crate::report::{FailureReport, HopReport, RunReport, RunStatus, SinkReport};
use crate::stage::{Capabilities, Stage, StageOptions, StageState, SwapReport};
use crate::upstream::{Demand, Upstream};

/// Native stack reserved per stage for host frames between nested wasm calls.
const HOST_FRAMES_PER_STAGE: usize = 256 << 10;
/// Smallest stack a pipeline thread gets.
const MIN_RUN_STACK: usize = 4 << 20;

/// The native stack a pipeline thread needs for `stages` nested stages, each allowed
/// `max_wasm_stack` bytes of wasm stack by its engine (plus room for the host's frames).
fn run_stack(stages: usize, max_wasm_stack: usize) -> usize {
    (stages + 2)
        .saturating_mul(max_wasm_stack.saturating_add(HOST_FRAMES_PER_STAGE))
        .max(MIN_RUN_STACK)
}

/// A built pipeline, ready to prime and run.
pub struct Pipeline {
    name: String,
    credits: u32,
    source: Option<Arc<Counters>>,
    stages: Vec<Stage>,
    /// What the sink pulls from: the last stage, or the native source when there is none.
    tail: Box<dyn Upstream>,
    sink: Sink,
    primed: bool,
    stall_timeout: Option<Duration>,
    swaps: Arc<std::sync::Mutex<Vec<SwapReport>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// The engine's wasm stack per stage: the pipeline thread's native stack is sized from it.
    max_wasm_stack: usize,
}

impl Pipeline {
    /// Loads every component of `spec` (type-checked against the world), instantiates the
    /// stages chained upstream to downstream, and opens the source and sink. `origin` is the
    /// pipeline file: relative paths are resolved against its directory.
    pub fn build(engine: &Engine, spec: &PipelineSpec, origin: &Path) -> Result<Pipeline> {
        spec.validate(origin)?;
        let base = base_dir(origin);
        let mut source = match &spec.source {
            Some(source) => Some(CountedSource::open(source, origin)?),
            None => None,
        };
        let source_counters = source.as_ref().map(CountedSource::counters);
        let fused = if spec.fused {
            Some(fuse_stages(engine, spec, origin, &base)?)
        } else {
            None
        };
        let specs: Vec<&StageSpec> = match &fused {
            Some((_, spec)) => vec![spec],
            None => spec.stages.iter().collect(),
        };
        let mut stages: Vec<Stage> = Vec::with_capacity(specs.len());
        let config_of = |stage_spec: &StageSpec| {
            stage_config(stage_spec).map_err(|message| Error::Config {
                file: origin.display().to_string(),
                message: format!("stage `{}`: {message}", stage_spec.name),
            })
        };
        for &stage_spec in &specs {
            // Fused: the last stage's configuration is the fused stage's; each inner stage
            // gets its own through `inner_config`.
            let (component, config, inner) = match &fused {
                Some((component, _)) => {
                    let inner = spec.stages[..spec.stages.len().saturating_sub(1)]
                        .iter()
                        .map(config_of)
                        .collect::<Result<Vec<_>>>()?;
                    (component.clone(), config_of(stage_spec)?, inner)
                }
                None => {
                    let component = load(engine, &stage_spec.name, &stage_spec.component, &base)?;
                    (component, config_of(stage_spec)?, Vec::new())
                }
            };
            let mut options = StageOptions::new()
                .limits(stage_spec.limits.to_limits())
                .capabilities(Capabilities {
                    real_time_and_random: stage_spec.real_time_and_random,
                })
                .on_fault(stage_spec.fault_policy());
            if let Some(path) = &stage_spec.dead_letter {
                let path = base.join(path);
                let file = std::fs::File::create(&path).map_err(|e| Error::Io {
                    stage: stage_spec.name.clone(),
                    message: format!("cannot create dead-letter file {}: {e}", path.display()),
                })?;
                options = options.dead_letter(std::io::BufWriter::new(file));
            }
            for (key, value) in config {
                options = options.config(key, value);
            }
            for (index, config) in inner.into_iter().enumerate() {
                for (key, value) in config {
                    options = options.inner_config(index, key, value);
                }
            }
            options = match (stages.last(), source.take()) {
                (Some(previous), _) => options.upstream(previous.clone()),
                (None, Some(native)) => options.upstream(native),
                (None, None) => options,
            };
            stages.push(component.instantiate(&stage_spec.name, options)?);
        }
        let tail: Box<dyn Upstream> = match (stages.last(), source) {
            (Some(last), _) => Box::new(last.clone()),
            (None, Some(native)) => Box::new(native),
            (None, None) => {
                return Err(Error::Config {
                    file: origin.display().to_string(),
                    message: "the pipeline has neither a source nor a stage".into(),
                });
            }
        };
        Ok(Pipeline {
            name: spec.name.clone().unwrap_or_else(|| "pipeline".into()),
            credits: spec.sink.credits,
            source: source_counters,
            stages,
            tail,
            sink: Sink::open(&spec.sink, origin)?,
            primed: false,
            max_wasm_stack: engine.max_wasm_stack(),
            swaps: Arc::default(),
            stop: Arc::default(),
            stall_timeout: (spec.sink.stall_timeout_ms > 0)
                .then(|| Duration::from_millis(spec.sink.stall_timeout_ms)),
        })
    }

    /// The stages, upstream first (handles: read their state and counters at any time).
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The demand window the sink grants per resume.
    pub fn credits(&self) -> u32 {
        self.credits
    }

    /// A handle for hot-swapping stages from any thread, also while the pipeline runs.
    pub fn swapper(&self) -> Swapper {
        Swapper {
            stages: self.stages.clone(),
            swaps: self.swaps.clone(),
        }
    }

    /// A handle that stops a running pipeline at its next chunk boundary (Ctrl-C): the stages
    /// are closed as usual and the report says the run was stopped.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// A handle for reading progress from another thread while the pipeline runs.
    pub fn probe(&self) -> Probe {
        Probe {
            pipeline: self.name.as_str().into(),
            source: self.source.clone(),
            stages: self.stages.clone(),
            sink: self.sink.counters(),
        }
    }

    /// Primes every stage, upstream first (rule P1 on each). Idempotent.
    pub fn prime(&mut self) -> Result<()> {
        if !self.primed {
            for stage in &self.stages {
                stage.prime()?;
            }
            self.primed = true;
        }
        Ok(())
    }

    /// One round of demand: the sink grants `credits` (0 pauses the whole chain) and writes
    /// what arrives. Returns the records delivered, or `None` once the stream has ended.
    pub fn resume(&mut self, credits: u32) -> Result<Option<u32>> {
        self.prime()?;
        match self
            .tail
            .pull(Demand::records(credits).with_max_bytes(DEFAULT_MAX_CHUNK_BYTES))?
        {
            Some(chunk) => {
                self.sink.write(&chunk)?;
                Ok(Some(chunk.len()))
            }
            None => Ok(None),
        }
    }

    /// Primes, runs until the stream ends or something fails, closes every stage, and reports.
    ///
    /// Runs on a thread of its own whose native stack has room for every stage's wasm stack,
    /// since stages nest (a stage's pull runs its upstream on the same stack) and running out
    /// of native stack would abort the process instead of faulting the stage.
    pub fn run(&mut self) -> RunReport {
        let stack = run_stack(self.stages.len(), self.max_wasm_stack);
        let builder = std::thread::Builder::new()
            .name(format!("sluicegate-{}", self.name))
            .stack_size(stack);
        // Stage logs go to the caller's subscriber, whichever thread runs the pipeline.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let outcome = std::thread::scope(|scope| {
            builder
                .spawn_scoped(scope, || {
                    tracing::dispatcher::with_default(&dispatch, || self.run_here())
                })
                .ok()
                .map(|runner| runner.join())
        });
        match outcome {
            Some(Ok(report)) => report,
            Some(Err(_)) => self.panicked(),
            // No thread to be had: run here; the caller's stack is the only risk left.
            None => self.run_here(),
        }
    }

    fn panicked(&self) -> RunReport {
        let error = Error::Host {
            stage: "-".into(),
            message: "the pipeline thread panicked (a host bug); stages may not be closed".into(),
        };
        self.report(0.0, Some(error), Vec::new())
    }

    fn run_here(&mut self) -> RunReport {
        let started = Instant::now();
        let mut failure = self.prime().err();
        if failure.is_none() {
            let mut watchdog = Watchdog::new(self.stall_timeout, self.probe());
            loop {
                if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match self.resume(self.credits) {
                    Ok(Some(records)) => {
                        if let Err(e) = watchdog.observe(records) {
                            failure = Some(e);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        if let Err(e) = self.sink.flush()
            && failure.is_none()
        {
            failure = Some(e);
        }
        let close_errors = self.close();
        self.report(started.elapsed().as_secs_f64(), failure, close_errors)
    }

    /// Closes every stage exactly once, upstream first, even after a fault, and returns every
    /// error except the "faulted earlier" refusals of stages whose fault was already reported.
    pub fn close(&mut self) -> Vec<Error> {
        self.stages
            .iter()
            .map(Stage::close)
            .filter_map(Result::err)
            .filter(|e| !matches!(e, Error::Faulted { .. }))
            .collect()
    }

    fn report(
        &self,
        elapsed_s: f64,
        failure: Option<Error>,
        close_errors: Vec<Error>,
    ) -> RunReport {
        let hops = self.probe().snapshot();
        let sink = self.sink.counters().snapshot();
        let checksum = self
            .sink
            .checksum()
            .lock()
            .map(|c| c.value())
            .unwrap_or_else(|_| Checksum::default().value());
        let failed = failure.is_some() || !close_errors.is_empty();
        RunReport {
            pipeline: self.name.clone(),
            status: if failed {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            },
            elapsed_s,
            records_per_s: match hops.first() {
                Some(head) if elapsed_s > 0.0 => head.stats.records as f64 / elapsed_s,
                _ => 0.0,
            },
            credits: self.credits,
            hops: hops.into_iter().map(HopReport::from).collect(),
            sink: SinkReport {
                kind: self.sink.kind(),
                records: sink.records,
                chunks: sink.chunks,
                bytes: sink.bytes,
                checksum: format!("{checksum:016x}"),
            },
            failure: failure.as_ref().map(FailureReport::from),
            recovered: self
                .stages
                .iter()
                .flat_map(|stage| {
                    let name = stage.name().to_string();
                    stage.recovered_faults().into_iter().map(move |e| {
                        let mut report = FailureReport::from(&e);
                        report.stage = name.clone();
                        report
                    })
                })
                .collect(),
            close_errors: close_errors.iter().map(FailureReport::from).collect(),
            swaps: self.swaps.lock().map(|s| s.clone()).unwrap_or_default(),
            stopped: self.stop.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// Loads a stage's component, naming the stage (not the file) in every error.
fn load(engine: &Engine, stage: &str, component: &str, base: &Path) -> Result<StageComponent> {
    engine.load_bytes(stage, &component_bytes(stage, component, base)?)
}

fn component_bytes(stage: &str, component: &str, base: &Path) -> Result<Vec<u8>> {
    match resolve(component, base) {
        ComponentRef::Builtin(name) => {
            builtin::component(name)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| Error::Load {
                    stage: stage.to_string(),
                    reason: format!("no builtin stage `{name}`"),
                })
        }
        ComponentRef::File(path) => std::fs::read(&path).map_err(|e| Error::Load {
            stage: stage.to_string(),
            reason: format!("cannot read {}: {e}", path.display()),
        }),
    }
}

/// Fused mode: every stage composed into one component, run as one stage named after the
/// stages (`decode+filter+vwap`) with the last stage's settings.
fn fuse_stages(
    engine: &Engine,
    spec: &PipelineSpec,
    origin: &Path,
    base: &Path,
) -> Result<(StageComponent, StageSpec)> {
    let parts = spec
        .stages
        .iter()
        .map(|s| {
            Ok((
                s.name.clone(),
                component_bytes(&s.name, &s.component, base)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let name = spec
        .stages
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join("+");
    let component = engine.load_fused(&name, &parts)?;
    // Validation guarantees at least two stages.
    let mut fused = spec.stages.last().cloned().ok_or_else(|| Error::Config {
        file: origin.display().to_string(),
        message: "`fused = true` needs at least two stages".into(),
    })?;
    fused.name = name;
    Ok((component, fused))
}

/// Reads a running pipeline's counters from any thread.
#[derive(Clone)]
pub struct Probe {
    pipeline: Arc<str>,
    source: Option<Arc<Counters>>,
    stages: Vec<Stage>,
    sink: Arc<Counters>,
}

/// One hop's counters at a moment: a native source, a stage, or the sink.
#[derive(Debug, Clone)]
pub struct HopSnapshot {
    /// The hop's name (`source`, a stage's name, or `sink`).
    pub name: String,
    /// Where the hop is in the protocol (`None` for the native source and the sink).
    pub state: Option<StageState>,
    /// Records it received from upstream.
    pub records_in: u64,
    /// The host's counters for it (`records` is what it delivered downstream).
    pub stats: StageStats,
}

impl Probe {
    /// Every hop from source to sink, with records in and out.
    pub fn snapshot(&self) -> Vec<HopSnapshot> {
        let mut hops = Vec::with_capacity(self.stages.len() + 2);
        if let Some(source) = &self.source {
            hops.push((SOURCE.to_string(), None, source.snapshot()));
        }
        for stage in &self.stages {
            hops.push((stage.name().to_string(), Some(stage.state()), stage.stats()));
        }
        let mut upstream_out = 0;
        let mut out = Vec::with_capacity(hops.len() + 1);
        for (name, state, stats) in hops {
            out.push(HopSnapshot {
                name,
                state,
                records_in: upstream_out,
                stats,
            });
            upstream_out = stats.records;
        }
        out
    }

    /// The sink's counters: `records` is what reached it.
    pub fn sink(&self) -> StageStats {
        self.sink.snapshot()
    }

    /// Every hop's counters in the Prometheus text exposition format (version 0.0.4), for a
    /// scrape endpoint (`sluicegate run --metrics ADDR`).
    pub fn prometheus(&self) -> String {
        crate::metrics::prometheus(&self.pipeline, &self.snapshot(), &self.sink())
    }
}

/// Reads a pipeline file, applies overrides, and builds the pipeline.
pub fn build_from_file(
    engine: &Engine,
    path: &Path,
    records: Option<u64>,
    credits: Option<u32>,
) -> Result<Pipeline> {
    let mut spec = PipelineSpec::from_file(path)?;
    apply_overrides(&mut spec, records, credits);
    Pipeline::build(engine, &spec, path)
}

/// Builds the pipeline of TOML text (the embedded demo), anchored at `origin`.
pub fn build_from_toml(
    engine: &Engine,
    text: &str,
    origin: &Path,
    records: Option<u64>,
    credits: Option<u32>,
) -> Result<Pipeline> {
    let mut spec = PipelineSpec::from_toml(text, origin)?;
    if spec.name.is_none() {
        spec.name = origin.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    apply_overrides(&mut spec, records, credits);
    Pipeline::build(engine, &spec, origin)
}

fn apply_overrides(spec: &mut PipelineSpec, records: Option<u64>, credits: Option<u32>) {
    if let Some(records) = records {
        spec.set_records(records);
    }
    if let Some(credits) = credits {
        spec.sink.credits = credits;
    }
}

/// Declares the pipeline stalled when demand keeps being granted but no record reaches the
/// sink for a while (a stage answering empty chunks forever), and names the stage: the most
/// upstream one that was resumed with credits in that time and delivered nothing.
struct Watchdog {
    timeout: Option<Duration>,
    probe: Probe,
    last_progress: Instant,
    at_progress: Vec<HopSnapshot>,
}

impl Watchdog {
    fn new(timeout: Option<Duration>, probe: Probe) -> Self {
        let at_progress = probe.snapshot();
        Watchdog {
            timeout,
            probe,
            last_progress: Instant::now(),
            at_progress,
        }
    }

    fn observe(&mut self, records: u32) -> Result<()> {
        let Some(timeout) = self.timeout else {
            return Ok(());
        };
        if records > 0 {
            self.last_progress = Instant::now();
            self.at_progress.clear();
            return Ok(());
        }
        if self.at_progress.is_empty() {
            self.at_progress = self.probe.snapshot();
        }
        if self.last_progress.elapsed() < timeout {
            return Ok(());
        }
        let now = self.probe.snapshot();
        let culprit = now
            .iter()
            .zip(&self.at_progress)
            .find(|(n, then)| {
                n.stats.credits_granted > then.stats.credits_granted
                    && n.stats.records == then.stats.records
            })
            .map(|(n, _)| n.name.clone())
            .unwrap_or_else(|| "sink".into());
        Err(Error::Stalled {
            stage: culprit,
            after: timeout,
        })
    }
}

/// Hot-swaps the stages of a pipeline, from any thread (see [`Stage::swap`]). Swaps are
/// serialised per stage and recorded in the run's report.
#[derive(Clone)]
pub struct Swapper {
    stages: Vec<Stage>,
    swaps: Arc<std::sync::Mutex<Vec<SwapReport>>>,
}

impl Swapper {
    /// Replaces the component of the stage named `stage` at its next chunk boundary.
    pub fn swap(&self, stage: &str, component: &StageComponent) -> Result<SwapReport> {
        let target = self
            .stages
            .iter()
            .find(|s| s.name() == stage)
            .ok_or_else(|| Error::SwapRefused {
                stage: stage.to_string(),
                reason: "the pipeline has no stage of that name".into(),
            })?;
        let report = target.swap(component)?;
        if let Ok(mut swaps) = self.swaps.lock() {
            swaps.push(report.clone());
        }
        Ok(report)
    }
}

/// Stops a running pipeline at its next chunk boundary; see [`Pipeline::stopper`].
#[derive(Clone)]
pub struct Stopper(Arc<std::sync::atomic::AtomicBool>);

impl Stopper {
    /// Asks the pipeline to stop; returns `true` if it had already been asked.
    pub fn stop(&self) -> bool {
        self.0.swap(true, std::sync::atomic::Ordering::Relaxed)
    }
}
