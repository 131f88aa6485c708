//! Reading a running pipeline from another thread: [`Probe`] takes a [`HopSnapshot`] of every
//! hop (the native source, each stage, the sink) without entering any stage.

use std::sync::Arc;

use super::source::SOURCE;
use crate::counters::{Counters, StageStats};
use crate::report::HopSnapshot;
use crate::stage::Stage;

/// Reads a running pipeline's counters from any thread.
#[derive(Clone)]
pub struct Probe {
    pub(super) pipeline: Arc<str>,
    pub(super) source: Option<Arc<Counters>>,
    pub(super) stages: Vec<Stage>,
    pub(super) sink: Arc<Counters>,
}

impl Probe {
    /// Every hop from source to sink, with records in and out.
    pub fn snapshot(&self) -> Vec<HopSnapshot> {
        let mut hops = Vec::with_capacity(self.stages.len() + 2);
        if let Some(source) = &self.source {
            hops.push((SOURCE.to_string(), None, source.snapshot(), None));
        }
        for stage in &self.stages {
            hops.push((
                stage.name().to_string(),
                Some(stage.state()),
                stage.stats(),
                Some(stage.execution_path()),
            ));
        }
        let mut upstream_out = 0;
        let mut out = Vec::with_capacity(hops.len() + 1);
        for (name, state, stats, path) in hops {
            out.push(HopSnapshot {
                name,
                state,
                records_in: upstream_out,
                stats,
                path,
            });
            upstream_out = stats.records;
        }
        out
    }

    /// The sink's counters: `records` is what reached it.
    pub fn sink(&self) -> StageStats {
        self.sink.snapshot()
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
}
