//! A pipeline that reads NATS JetStream (`[source] kind = "nats"`): a [`Fleet`] that, on every
//! host running the file, holds some of the stream's partitions and runs one replica of the
//! stage chain per partition held. [`Replicas`] builds a partition's replica when its lease is
//! taken: its checkpoint loaded, its consumer (re)created from the checkpoint's sequence, its
//! stages instantiated from the components loaded once (or the version a hot swap put in).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::super::Pipeline;
use super::super::checkpointer::Checkpointer;
use super::super::fleet::{Fleet, Live};
use super::super::sink::Sink;
use super::super::source::{CountedSource, SOURCE};
use super::{Loaded, PipelineBuilder};
use crate::config::{NatsSource, OnFault, PipelineSpec, SourceSpec};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::nats::{Checkpoint, Checkpoints, Hold, Nats, NatsInput, Position};
use crate::report::FailureReport;

impl PipelineBuilder<'_> {
    /// The fleet of the stream `source` names: nothing runs until the pipeline does.
    pub(super) fn nats_partitions(
        &self,
        spec: &PipelineSpec,
        origin: &std::path::Path,
        components: Vec<Loaded>,
        source: &SourceSpec,
        mut sink: Sink,
    ) -> Result<Pipeline> {
        let settings: NatsSource = source.settings().map_err(|message| Error::Config {
            file: origin.display().to_string(),
            message,
        })?;
        let nats = Nats::connect(
            &settings.url,
            SOURCE,
            Duration::from_millis(settings.server_timeout_ms),
        )?;
        // Ids of published records name the consumer: the same on every host and every run.
        sink.name_ids(&settings.consumer);
        let names = components.iter().map(|(s, _, _)| s.name.clone()).collect();
        // A stage's `restart` rolls its partition back to its last checkpoint (the fleet does
        // it); within the chain, its fault is final.
        let mut restarts = HashMap::new();
        let mut components = components;
        for (stage, _, _) in &mut components {
            if stage.on_fault == OnFault::Restart {
                restarts.insert(
                    stage.name.clone(),
                    (
                        stage.max_restarts,
                        Duration::from_millis(stage.restart_backoff_ms),
                    ),
                );
                stage.on_fault = OnFault::Fail;
            }
        }
        let live = Arc::new(Live::new(components));
        let replicas = Replicas {
            engine: self.engine.clone(),
            spec: spec.clone(),
            origin: origin.to_path_buf(),
            names,
            restarts,
            sink: Mutex::new({
                // The model of every partition's sink: ids `<consumer>.<partition>.<n>`.
                let mut model = sink.replica(0);
                model.name_ids(&settings.consumer);
                model
            }),
            nats: nats.clone(),
            settings: settings.clone(),
            live: live.clone(),
        };
        let mut pipeline = self.partitioned_top(spec, sink);
        pipeline.fleet = Some(Fleet::new(Arc::new(replicas), nats, settings, live));
        Ok(pipeline)
    }
}

/// Builds the replica of a partition this host took.
pub(crate) struct Replicas {
    engine: Engine,
    spec: PipelineSpec,
    origin: PathBuf,
    names: Vec<String>,
    /// The stages whose fault rolls their partition back: how often, how long apart.
    restarts: HashMap<String, (u32, Duration)>,
    /// A sink to make every replica's from (they share its connection).
    sink: Mutex<Sink>,
    nats: Arc<Nats>,
    settings: NatsSource,
    live: Arc<Live>,
}

impl Replicas {
    /// Partition `partition`'s replica, from its last checkpoint, for as long as `hold` says
    /// this host holds it; `None` if the partition's chain had ended (it is done for good) or
    /// another host wrote its checkpoint meanwhile. Before anything is read, the checkpoint is
    /// written back (N5): a host that lost the partition without knowing it can no longer write
    /// it. Registered with the live replicas (swaps, probes) under the same lock that reads the
    /// components, so a swap reaches it or it is built with the swapped version.
    pub(crate) fn build(&self, partition: u32, hold: Arc<Hold>) -> Result<Option<Pipeline>> {
        let settings = &self.settings;
        let index = usize::try_from(partition).unwrap_or(usize::MAX);
        let mut checkpoints = Checkpoints::open(
            self.nats.clone(),
            &settings.checkpoint_bucket,
            &settings.consumer,
            partition,
        )?;
        let start = checkpoints.load()?;
        if start.as_ref().is_some_and(|c| c.ended) {
            return Ok(None);
        }
        let fence = start.clone().unwrap_or_else(|| Checkpoint {
            states: self.names.iter().map(|n| (n.clone(), Vec::new())).collect(),
            ..Checkpoint::default()
        });
        // A rollback may come after the lease ran out: then the fence must not be written.
        if !hold.valid() || !checkpoints.save(&fence)? {
            hold.lose();
            return Ok(None);
        }
        let position = Position::at(fence.sequence);
        let input = NatsInput::open(
            self.nats.clone(),
            settings,
            partition,
            position.clone(),
            hold.clone(),
        )?;
        let input = CountedSource::wrap(Box::new(input));
        let counters = input.counters();
        let builder = PipelineBuilder::new(&self.engine);
        let mut replica = self.live.register(partition, |components| {
            builder.chain(
                &self.spec,
                &self.origin,
                components,
                Some(input),
                self.sink
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .replica(index),
                Some(index),
            )
        })?;
        // A quiet stream is not a stalled stage.
        replica.stall_timeout = None;
        replica.checkpointer = Some(Checkpointer::new(
            checkpoints,
            Some(fence),
            position,
            counters,
            self.names.clone(),
            (
                settings.checkpoint_records,
                Duration::from_millis(settings.checkpoint_ms),
            ),
            hold,
        ));
        Ok(Some(replica))
    }

    /// If `failure` is a fault of a stage whose policy is `restart`: how often its partition
    /// may be rolled back for it, and how long to wait first.
    pub(crate) fn restart_policy(&self, failure: &FailureReport) -> Option<(u32, Duration)> {
        if !matches!(
            failure.kind.as_str(),
            "trap" | "limit-exceeded" | "protocol-violation"
        ) {
            return None;
        }
        let base = failure
            .stage
            .rsplit_once('#')
            .map_or(failure.stage.as_str(), |(base, _)| base);
        self.restarts.get(base).copied()
    }
}
