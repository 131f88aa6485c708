//! Chaining stages: demand flows from the sink upstream through every stage (`yield from`),
//! data flows down, and every hop is a [`Stage`] that checks the protocol. The pipeline primes
//! upstream-first, and closes every primed stage exactly once, upstream-first (PEP 380 order),
//! whatever failed, reporting every error. `build.rs` makes one from a pipeline file.

mod build;
mod checkpointer;
mod control;
mod fleet;
mod partitions;
mod probe;
mod sink;
mod source;
mod stage_settings;
mod watchdog;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use self::build::PipelineBuilder;
pub use self::control::{Stopper, Swapper};
use self::probe::ChainProbe;
pub use self::probe::Probe;
use self::sink::Sink;
use self::watchdog::Watchdog;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_CHUNK_BYTES;
use crate::report::{FailureReport, HopReport, RunReport, RunStatus, SinkReport};
use crate::stage::{Stage, SwapReport};
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
    /// `[partitions]`: the replicas and their router; `stages` then holds every replica's.
    partitions: Option<partitions::Partitions>,
    /// A partition of a NATS stream: its checkpoints.
    checkpointer: Option<checkpointer::Checkpointer>,
    /// A NATS pipeline: this host's share of the stream's partitions.
    fleet: Option<fleet::Fleet>,
    /// The last run ended because the chain answered `none` (a NATS partition is then done).
    ended: bool,
}

impl Pipeline {
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, `build.rs`, names them all"
    )]
    fn new(
        name: String,
        credits: u32,
        source: Option<Arc<Counters>>,
        stages: Vec<Stage>,
        tail: Box<dyn Upstream>,
        sink: Sink,
        stall_timeout: Option<Duration>,
        max_wasm_stack: usize,
    ) -> Self {
        Pipeline {
            name,
            credits,
            source,
            stages,
            tail,
            sink,
            primed: false,
            stall_timeout,
            swaps: Arc::default(),
            stop: Arc::default(),
            max_wasm_stack,
            partitions: None,
            checkpointer: None,
            fleet: None,
            ended: false,
        }
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
            partitioned: self.partitions.is_some(),
            live: self.fleet.as_ref().map(fleet::Fleet::live),
        }
    }

    /// A handle that stops a running pipeline at its next chunk boundary (Ctrl-C): the stages
    /// are closed as usual and the report says the run was stopped.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.stop.clone())
    }

    /// A handle for reading progress from another thread while the pipeline runs.
    pub fn probe(&self) -> Probe {
        if let Some(fleet) = &self.fleet {
            return fleet.probe(&self.name);
        }
        if let Some(partitions) = &self.partitions {
            return partitions.probe(&self.name);
        }
        Probe {
            pipeline: self.name.as_str().into(),
            source: self.source.clone(),
            key: None,
            lanes: Vec::new(),
            chains: probe::Chains::Fixed(vec![ChainProbe {
                input: None,
                stages: self.stages.clone(),
                sink: self.sink.counters(),
            }]),
        }
    }

    /// This pipeline as one replica of a partitioned one: its input, stages and sink.
    fn chain_probe(&self) -> ChainProbe {
        ChainProbe {
            input: self.source.clone(),
            stages: self.stages.clone(),
            sink: self.sink.counters(),
        }
    }

    /// The number of replicas of the stage chain: `[partitions]`'s, else 1.
    pub fn partitions(&self) -> usize {
        if let Some(fleet) = &self.fleet {
            return fleet.partitions();
        }
        self.partitions.as_ref().map_or(1, |p| p.replicas.len())
    }

    /// Primes every stage, upstream first (rule P1 on each). Idempotent.
    pub fn prime(&mut self) -> Result<()> {
        // A NATS pipeline's replicas are built and primed when their partitions are taken.
        if self.fleet.is_some() {
            return Ok(());
        }
        if let Some(partitions) = self.partitions.as_mut() {
            for replica in &mut partitions.replicas {
                replica.prime()?;
            }
            return Ok(());
        }
        if !self.primed {
            for stage in &self.stages {
                stage.prime()?;
            }
            self.primed = true;
            if let Some(checkpointer) = self.checkpointer.as_mut() {
                checkpointer.restore(&self.stages, &mut self.sink)?;
            }
        }
        Ok(())
    }

    /// One round of demand: the sink grants `credits` (0 pauses the whole chain) and writes
    /// what arrives. Returns the records delivered, or `None` once the stream has ended.
    /// A partitioned pipeline has no single chain to resume: it refuses, and runs with
    /// [`Pipeline::run`].
    pub fn resume(&mut self, credits: u32) -> Result<Option<u32>> {
        if self.partitions.is_some() || self.fleet.is_some() {
            return Err(Error::Host {
                stage: "-".into(),
                message: format!(
                    "pipeline `{}` is partitioned: its replicas run on threads of their own, \
                     with `run`",
                    self.name
                ),
            });
        }
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
        if let Some(fleet) = self.fleet.as_mut() {
            return fleet.run(&self.name, self.credits, &self.stop, &self.swaps);
        }
        if let Some(partitions) = self.partitions.as_mut() {
            let router_stack = run_stack(1, self.max_wasm_stack);
            return partitions.run(
                &self.name,
                self.credits,
                &self.stop,
                &self.swaps,
                router_stack,
            );
        }
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
        // A NATS partition's standing at the end: drained, or its chain ended.
        let mut standing = checkpointer::Standing::Going;
        if failure.is_none() {
            let mut watchdog = Watchdog::new(self.stall_timeout, self.probe());
            loop {
                if self.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                match self.resume(self.credits) {
                    Ok(Some(0)) if self.checkpointer.as_ref().is_some_and(|c| c.drained()) => {
                        standing = checkpointer::Standing::Quiescent;
                        break;
                    }
                    Ok(Some(records)) => {
                        if let Err(e) = watchdog.observe(records).and_then(|()| {
                            match self.checkpointer.as_mut() {
                                Some(c) => c.after_resume(&self.stages, &mut self.sink),
                                None => Ok(()),
                            }
                        }) {
                            failure = Some(e);
                            break;
                        }
                    }
                    Ok(None) => {
                        standing = checkpointer::Standing::Ended;
                        self.ended = true;
                        break;
                    }
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
        // The last checkpoint of a run that ended well (stopped, or its input drained): a
        // restart then has nothing to replay.
        if failure.is_none()
            && let Some(checkpointer) = self.checkpointer.as_mut()
            && let Err(e) = checkpointer.take(&self.stages, &mut self.sink, standing)
        {
            failure = Some(e);
        }
        let close_errors = self.close();
        self.report(started.elapsed().as_secs_f64(), failure, close_errors)
    }

    /// True if the last run ended because the chain answered `none`.
    fn ended(&self) -> bool {
        self.ended
    }

    /// Closes every stage exactly once, upstream first, even after a fault, and returns every
    /// error except the "faulted earlier" refusals of stages whose fault was already reported.
    pub fn close(&mut self) -> Vec<Error> {
        if let Some(partitions) = self.partitions.as_mut() {
            return partitions
                .replicas
                .iter_mut()
                .flat_map(Pipeline::close)
                .collect();
        }
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
        let checksum = self.sink.checksum();
        RunReport {
            pipeline: self.name.clone(),
            status: RunStatus::of(failure.is_some(), close_errors.len()),
            elapsed_s,
            records_per_s: crate::report::rate(
                hops.first().map_or(0, |head| head.stats.records),
                elapsed_s,
            ),
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
            partitions: Vec::new(),
        }
    }
}
