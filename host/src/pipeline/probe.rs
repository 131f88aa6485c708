//! Reading a running pipeline from another thread: [`Probe`] takes a [`HopSnapshot`] of every
//! hop (the native source, each stage, the sink) without entering any stage. A partitioned
//! pipeline's probe has the source, then each replica's hops (its input `partition#N`, its
//! stages `name#N`).

use std::sync::Arc;

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
    /// One chain of stages, or one per partition.
    pub(super) chains: Vec<ChainProbe>,
}

/// The hops of one chain: a partition's input (if partitioned), its stages, its sink.
#[derive(Clone)]
pub(super) struct ChainProbe {
    pub(super) input: Option<Arc<Counters>>,
    pub(super) stages: Vec<Stage>,
    pub(super) sink: Arc<Counters>,
}

impl Probe {
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
        let partitioned = self.chains.len() > 1 || self.chains.iter().any(|c| c.input.is_some());
        for (replica, chain) in self.chains.iter().enumerate() {
            let mut upstream_out = source_out;
            if let Some(input) = &chain.input {
                let stats = input.snapshot();
                out.push(HopSnapshot {
                    name: replica_name("partition", replica),
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
                let stats = stage.stats();
                out.push(HopSnapshot {
                    name: stage.name().to_string(),
                    state: Some(stage.state()),
                    records_in: upstream_out,
                    stats,
                    path: Some(stage.execution_path()),
                });
                upstream_out = stats.records;
            }
        }
        out
    }

    /// The sink's counters (of every partition together): `records` is what reached it.
    pub fn sink(&self) -> StageStats {
        let mut total = StageStats::default();
        for chain in &self.chains {
            let stats = chain.sink.snapshot();
            total.records += stats.records;
            total.chunks += stats.chunks;
            total.bytes += stats.bytes;
            total.resumes_entered += stats.resumes_entered;
            total.credits_granted += stats.credits_granted;
        }
        total
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
}
