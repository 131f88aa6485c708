//! Partitions: one pipeline on every core. A `[partitions]` pipeline runs N replicas of its
//! stage chain, each on a thread of its own, and a router that reads the source once and hands
//! each record to the replica its key hashes to (`router.rs`), through a lane (`lane.rs`: a
//! bounded queue in memory that overflows to spill files on disk, `spill.rs`) that the
//! replica's first stage pulls from like any source (`input.rs`). Records with the same key
//! reach the same replica in source order, so per-key order holds end to end; records of
//! different keys may reach the sink in another order than the source's. Every replica follows
//! docs/protocol.md on its own: its own demand, its own faults and supervision, its own state.

mod input;
mod key_stage;
mod lane;
mod router;
mod spill;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub(crate) use self::input::PartitionInput;
pub(crate) use self::key_stage::KeyStage;
pub(crate) use self::lane::LaneStats;
pub(crate) use self::router::{Key, Keys, Router, Shared};
pub(crate) use self::spill::SpillSettings;
use super::{Pipeline, Probe};
use crate::counters::Counters;
use crate::error::Error;
use crate::report::{FailureReport, RunReport, RunStatus, SinkReport};
use crate::stage::SwapReport;

/// The name a replica's stage takes: `decode#2` is stage `decode` of replica 2.
pub(crate) fn replica_name(stage: &str, replica: usize) -> String {
    format!("{stage}#{replica}")
}

/// A partitioned pipeline, built by [`PipelineBuilder::build`](crate::PipelineBuilder::build)
/// from a file with `[partitions]`; run it with [`Pipeline::run`].
pub(crate) struct Partitions {
    pub(crate) replicas: Vec<Pipeline>,
    pub(crate) router: Option<Router>,
    pub(crate) shared: Arc<Shared>,
    /// The source's counters (what the router pulled); `None` when every partition reads a
    /// source of its own (a NATS stream's partitions).
    pub(crate) source: Option<Arc<Counters>>,
    /// The key stage, if the key is a stage's answer.
    pub(crate) key_stage: Option<crate::stage::Stage>,
    /// Each replica's lane (empty when every partition reads a source of its own).
    pub(crate) lanes: Vec<Arc<LaneStats>>,
    /// Where the lanes spill.
    pub(crate) spill_dir: std::path::PathBuf,
}

impl Partitions {
    /// Runs the router and every replica, each on its own thread, until the stream ends, a
    /// replica fails (the router then stops and the others finish what they hold) or `stop`
    /// is set; reports the whole run, every replica's hops in it.
    pub(crate) fn run(
        &mut self,
        name: &str,
        credits: u32,
        stop: &Arc<AtomicBool>,
        swaps: &Mutex<Vec<SwapReport>>,
        router_stack: usize,
    ) -> RunReport {
        let started = Instant::now();
        // Stage logs go to the caller's subscriber, whichever thread runs them.
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        if let Some(router) = self.router.take() {
            // Not scoped: a router blocked in its source's read (an idle live feed) must not
            // keep the run from ending once every replica has; it ends with its read.
            let (stop, dispatch) = (stop.clone(), dispatch.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("sluicegate-{name}-router"))
                // A key stage runs on it: room for its wasm stack.
                .stack_size(router_stack)
                .spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || router.run(&stop));
                });
            if let Err(e) = spawned {
                self.shared.fail(Error::Host {
                    stage: "-".into(),
                    message: format!("cannot start the router thread: {e}"),
                });
            }
        }
        let shared = &self.shared;
        let reports: Vec<RunReport> = std::thread::scope(|scope| {
            let runs: Vec<_> = self
                .replicas
                .iter_mut()
                .enumerate()
                .map(|(index, replica)| {
                    let dispatch = dispatch.clone();
                    std::thread::Builder::new()
                        .name(format!("sluicegate-{name}-{index}"))
                        .spawn_scoped(scope, move || {
                            let report =
                                tracing::dispatcher::with_default(&dispatch, || replica.run());
                            if report.status == RunStatus::Failed {
                                shared.abandoned.store(true, Ordering::Relaxed);
                                shared.wake_router();
                            }
                            report
                        })
                        .map_err(|e| (index, e))
                })
                .collect();
            runs.into_iter()
                .map(|run| match run {
                    Ok(run) => run.join().unwrap_or_else(|_| panicked(name, credits)),
                    Err((index, e)) => {
                        shared.abandoned.store(true, Ordering::Relaxed);
                        let error = Error::Host {
                            stage: "-".into(),
                            message: format!("cannot start the thread of partition {index}: {e}"),
                        };
                        RunReport::failed(name, credits, &error)
                    }
                })
                .collect()
        });
        // The router stops when it next looks, if it has not ended already.
        self.shared.abandoned.store(true, Ordering::Relaxed);
        self.shared.wake_router();
        for (replica, lane) in self.lanes.iter().enumerate() {
            let chunks = lane.spilled_chunks.load(Ordering::Relaxed);
            if chunks > 0 {
                tracing::info!(
                    "{} fell behind: {chunks} chunk(s) went through its spill files in {} \
                     (at most {:.1} MiB at once)",
                    replica_name("partition", replica),
                    self.spill_dir.display(),
                    lane.peak_spill_bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
                );
            }
        }
        // Routed to a replica whose chain then ended, or not routed at all once it had.
        let never_taken: u64 = self
            .lanes
            .iter()
            .map(|lane| lane.abandoned_records.load(Ordering::Relaxed))
            .sum();
        let unrouted = self.shared.unrouted.load(Ordering::Relaxed) + never_taken;
        if unrouted > 0 {
            tracing::warn!(
                "{unrouted} record(s) never reached a stage: their partition's chain had ended \
                 (a stage answered none before its input did)"
            );
        }
        self.combine(name, credits, started, reports, stop, swaps)
    }

    /// One report of the whole run from the replicas' reports.
    fn combine(
        &self,
        name: &str,
        credits: u32,
        started: Instant,
        reports: Vec<RunReport>,
        stop: &AtomicBool,
        swaps: &Mutex<Vec<SwapReport>>,
    ) -> RunReport {
        let elapsed_s = started.elapsed().as_secs_f64();
        let mut hops = Vec::new();
        if let Some(source) = &self.source {
            hops.push(crate::report::HopReport::source(
                super::source::SOURCE,
                source.snapshot(),
            ));
        }
        let mut source_records = self.source.as_ref().map_or(0, |s| s.snapshot().records);
        let (mut records, mut chunks, mut bytes) = (0, 0, 0);
        let mut partition_sinks = Vec::with_capacity(reports.len());
        let mut failure: Option<FailureReport> = None;
        let (mut recovered, mut close_errors) = (Vec::new(), Vec::new());
        let mut stopped = stop.load(Ordering::Relaxed);
        let kind = self
            .replicas
            .first()
            .map(|r| r.sink.kind())
            .unwrap_or_default();
        for (replica, report) in reports.into_iter().enumerate() {
            for mut hop in report.hops {
                if hop.state.is_none() {
                    hop.name = replica_name("partition", replica);
                    hop.records_in = hop.records_out;
                    if self.source.is_none() {
                        source_records += hop.records_out;
                    }
                }
                hops.push(hop);
            }
            records += report.sink.records;
            chunks += report.sink.chunks;
            bytes += report.sink.bytes;
            partition_sinks.push(report.sink);
            if failure.is_none() {
                failure = report.failure;
            }
            recovered.extend(report.recovered);
            close_errors.extend(report.close_errors);
            stopped |= report.stopped;
        }
        if failure.is_none()
            && let Some(error) = self.shared.failure.lock().ok().and_then(|f| f.clone())
        {
            failure = Some(FailureReport::from(&error));
        }
        RunReport {
            pipeline: name.to_string(),
            status: RunStatus::of(failure.is_some(), close_errors.len()),
            elapsed_s,
            records_per_s: crate::report::rate(source_records, elapsed_s),
            credits,
            hops,
            sink: SinkReport {
                kind,
                records,
                chunks,
                bytes,
                // Order-independent: the same for any partition count on the same input.
                checksum: format!(
                    "{:016x}",
                    self.replicas
                        .iter()
                        .fold(0u64, |sum, r| sum.wrapping_add(r.sink.unordered()))
                ),
            },
            failure,
            close_errors,
            recovered,
            swaps: swaps.lock().map(|s| s.clone()).unwrap_or_default(),
            stopped,
            partitions: partition_sinks,
        }
    }

    /// A probe over the source and every replica.
    pub(crate) fn probe(&self, name: &str) -> Probe {
        Probe {
            pipeline: name.into(),
            source: self.source.clone(),
            key: self.key_stage.clone(),
            lanes: self.lanes.clone(),
            chains: super::probe::Chains::Fixed(
                self.replicas.iter().map(Pipeline::chain_probe).collect(),
            ),
        }
    }
}

/// The report of a replica whose thread panicked (a host bug).
fn panicked(name: &str, credits: u32) -> RunReport {
    let error = Error::Host {
        stage: "-".into(),
        message: "a replica's thread panicked (a host bug); its stages may not be closed".into(),
    };
    RunReport::failed(name, credits, &error)
}
