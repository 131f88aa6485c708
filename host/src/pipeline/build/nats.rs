//! A pipeline that reads NATS JetStream (`[source] kind = "nats"`): one replica of the stage
//! chain per partition of the stream, each reading its partition's durable consumer from its
//! last checkpoint, on a thread of its own, with no router between them (the stream's subject
//! transform partitioned the records when they were published).

use std::sync::Arc;
use std::time::Duration;

use super::super::Pipeline;
use super::super::checkpointer::Checkpointer;
use super::super::partitions::{Partitions, Shared};
use super::super::sink::Sink;
use super::super::source::{CountedSource, SOURCE};
use super::{Loaded, PipelineBuilder};
use crate::config::{NatsSource, PipelineSpec, SourceSpec};
use crate::error::{Error, Result};
use crate::nats::{Checkpoints, Nats, NatsInput, Position};

impl PipelineBuilder<'_> {
    /// Every partition of the stream `source` names, each with its checkpoint restored.
    pub(super) fn nats_partitions(
        &self,
        spec: &PipelineSpec,
        origin: &std::path::Path,
        components: &[Loaded],
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
        let names: Vec<String> = components.iter().map(|(s, _, _)| s.name.clone()).collect();
        let cadence = (
            settings.checkpoint_records,
            Duration::from_millis(settings.checkpoint_ms),
        );
        let mut replicas = Vec::new();
        for partition in 0..settings.partitions {
            let index = usize::try_from(partition).unwrap_or(usize::MAX);
            let mut checkpoints = Checkpoints::open(
                nats.clone(),
                &settings.checkpoint_bucket,
                &settings.consumer,
                partition,
            )?;
            let start = checkpoints.load()?;
            let position = Position::at(start.as_ref().map_or(0, |c| c.sequence));
            let input = NatsInput::open(nats.clone(), &settings, partition, position.clone())?;
            let input = CountedSource::wrap(Box::new(input));
            let counters = input.counters();
            let mut replica = self.chain(
                spec,
                origin,
                components,
                Some(input),
                sink.replica(index),
                Some(index),
            )?;
            // A quiet stream is not a stalled stage.
            replica.stall_timeout = None;
            replica.checkpointer = Some(Checkpointer::new(
                checkpoints,
                start,
                position,
                counters,
                names.clone(),
                cadence,
            ));
            replicas.push(replica);
        }
        let partitions = Partitions {
            replicas,
            router: None,
            shared: Arc::new(Shared::default()),
            source: None,
            key_stage: None,
        };
        Ok(self.partitioned(spec, sink, partitions))
    }
}
