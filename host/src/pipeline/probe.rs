//! Reading a running pipeline from another thread: [`Probe`] takes a [`HopSnapshot`] of every
//! hop (the native source, each stage, the sink) without entering any stage. A partitioned
//! pipeline's probe has the source, then each replica's hops (its input `partition#N`, its
//! stages `name#N`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::partitions::replica_name;
use super::source::SOURCE;
use crate::counters::{Counters, StageStats};
use crate::report::HopSnapshot;
use crate::stage::Stage;

/// Reads a running pipeline's counters from any thread.
#[derive(Clone)]
pub struct Probe {
    pub(super) pipeline: Arc<str>,
    pub(super) source: Option<Arc<Counters>>,
    /// A partitioned pipeline's key stage, if it has one.
    pub(super) key: Option<Stage>,
    /// One chain of stages, or one per partition.
    pub(super) chains: Chains,
    /// A routed partitioned pipeline's lanes, one per partition.
    pub(super) lanes: Vec<Arc<super::partitions::LaneStats>>,
}

/// The chains a probe reads: fixed when the pipeline is built, or, for a NATS pipeline, those
/// of the partitions this host runs at the moment of each reading.
#[derive(Clone)]
pub(super) enum Chains {
    Fixed(Vec<ChainProbe>),
    Live(Arc<super::fleet::Live>),
}

/// The hops of one chain: a partition's input (if partitioned), its stages, its sink.
#[derive(Clone)]
pub(super) struct ChainProbe {
    pub(super) input: Option<Arc<Counters>>,
    pub(super) stages: Vec<Stage>,
    pub(super) sink: Arc<Counters>,
}

impl Probe {
    /// The chains now, each with its partition's number.
    fn chains(&self) -> Vec<(usize, ChainProbe)> {
        match &self.chains {
            Chains::Fixed(chains) => chains.iter().cloned().enumerate().collect(),
            Chains::Live(live) => live.chains(),
        }
    }

    /// Every hop from source to sink, with records in and out.
    pub fn snapshot(&self) -> Vec<HopSnapshot> {
        let mut out = Vec::new();
        let mut source_out = 0;
        if let Some(source) = &self.source {
            let stats = source.snapshot();
            source_out = stats.records;
            out.push(HopSnapshot {
                name: SOURCE.to_string(),
                state: None,
                records_in: 0,
                stats,
                path: None,
            });
        }
        if let Some(key) = &self.key {
            out.push(stage_hop(key, source_out));
        }
        let chains = self.chains();
        let partitioned = chains.len() > 1 || chains.iter().any(|(_, c)| c.input.is_some());
        for (replica, chain) in &chains {
            let mut upstream_out = source_out;
            if let Some(input) = &chain.input {
                let stats = input.snapshot();
                out.push(HopSnapshot {
                    name: replica_name("partition", *replica),
                    state: None,
                    records_in: stats.records,
                    stats,
                    path: None,
                });
                upstream_out = stats.records;
            } else if partitioned {
                upstream_out = 0;
            }
            for stage in &chain.stages {
                let hop = stage_hop(stage, upstream_out);
                upstream_out = hop.stats.records;
                out.push(hop);
            }
        }
        out
    }

    /// The sink's counters (of every partition together): `records` is what reached it.
    pub fn sink(&self) -> StageStats {
        let mut total = StageStats::default();
        for (_, chain) in &self.chains() {
            let stats = chain.sink.snapshot();
            total.records += stats.records;
            total.chunks += stats.chunks;
            total.bytes += stats.bytes;
            total.resumes_entered += stats.resumes_entered;
            total.credits_granted += stats.credits_granted;
        }
        total
    }

    /// A partitioned pipeline's sink counters, per partition; empty for one chain.
    pub fn partition_sinks(&self) -> Vec<StageStats> {
        let chains = self.chains();
        if chains.iter().all(|(_, c)| c.input.is_none()) {
            return Vec::new();
        }
        chains.iter().map(|(_, c)| c.sink.snapshot()).collect()
    }

    /// A routed partitioned pipeline's spill files, per partition; empty for other pipelines.
    pub fn partition_spills(&self) -> Vec<crate::report::PartitionSpill> {
        self.lanes
            .iter()
            .map(|lane| crate::report::PartitionSpill {
                bytes: lane.spill_bytes.load(Ordering::Relaxed),
                chunks: lane.spilled_chunks.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
}

/// The hop of `stage`, which received `records_in` records.
pub(super) fn stage_hop(stage: &Stage, records_in: u64) -> HopSnapshot {
    HopSnapshot {
        name: stage.name().to_string(),
        state: Some(stage.state()),
        records_in,
        stats: stage.stats(),
        path: Some(stage.execution_path()),
    }
}
