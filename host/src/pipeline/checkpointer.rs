//! The checkpoints of a partition that reads NATS JetStream (docs/scale-out.md, rules N1–N4):
//! between two resumes of the sink, once `checkpoint_records` input records or
//! `checkpoint_ms` have passed, the sink waits for every publish's acknowledgement (N1), every
//! stage hands over its state (N3), the states are written with the input sequence they cover
//! and the number of records the partition published (N2), and only then is the input
//! acknowledged up to that sequence (N2). At the start, the partition's stages are given the
//! last checkpoint's states before their first resume, its consumer delivers from just after
//! its sequence, and its outputs are numbered on from its count (N4). Nothing is written once
//! the partition's lease may have run out (N5).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sink::Sink;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::nats::{Checkpoint, Checkpoints, Hold, Position};
use crate::stage::Stage;

/// How a partition's run stands when a checkpoint is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Running (or stopped, handed back): more may come.
    Going,
    /// Drained: it read all its stream held and its chain answered nothing more.
    Quiescent,
    /// Its chain ended (a stage answered `none`): done for good.
    Ended,
}

/// One partition's checkpoints.
pub(crate) struct Checkpointer {
    checkpoints: Checkpoints,
    position: Arc<Position>,
    /// The partition's input, counted: how many records came in since the last checkpoint.
    input: Arc<Counters>,
    /// The stages' names in the pipeline file, upstream first (a checkpoint's are compared).
    names: Vec<String>,
    /// The checkpoint loaded at build time, given to the stages once they are primed.
    start: Option<Checkpoint>,
    every_records: u64,
    every: Duration,
    last_records: u64,
    last_at: Instant,
    /// What the last checkpoint written (or loaded) said: its sequence, count and standing.
    last: (u64, u64, Standing),
    /// This host's lease on the partition.
    hold: Arc<Hold>,
}

impl Checkpointer {
    pub(crate) fn new(
        checkpoints: Checkpoints,
        start: Option<Checkpoint>,
        position: Arc<Position>,
        input: Arc<Counters>,
        names: Vec<String>,
        (every_records, every): (u64, Duration),
        hold: Arc<Hold>,
    ) -> Self {
        let last = start.as_ref().map_or((0, 0, Standing::Going), |c| {
            let standing = match (c.ended, c.quiescent) {
                (true, _) => Standing::Ended,
                (_, true) => Standing::Quiescent,
                _ => Standing::Going,
            };
            (c.sequence, c.outputs, standing)
        });
        Checkpointer {
            checkpoints,
            position,
            input,
            names,
            start,
            every_records,
            every,
            last_records: 0,
            last_at: Instant::now(),
            last,
            hold,
        }
    }

    /// Gives the primed stages the states of the checkpoint the partition starts from, and
    /// numbers the sink's records on from its count.
    pub(crate) fn restore(&mut self, stages: &[Stage], sink: &mut Sink) -> Result<()> {
        let Some(start) = self.start.take() else {
            return Ok(());
        };
        let names: Vec<&str> = start.states.iter().map(|(n, _)| n.as_str()).collect();
        if names != self.names {
            return Err(Error::Host {
                stage: stages.first().map_or("-", |s| s.name()).to_string(),
                message: format!(
                    "the partition's checkpoint was taken with the stages [{}] and this \
                     pipeline has [{}]; a checkpoint is restored into the pipeline that took it",
                    names.join(", "),
                    self.names.join(", ")
                ),
            });
        }
        for (stage, (_, state)) in stages.iter().zip(start.states) {
            stage.restore_checkpoint(state)?;
        }
        sink.count_from(start.outputs);
        Ok(())
    }

    /// True once the partition's input is drained (`drain = true`) and its chain answered
    /// nothing: the replica's run ends there.
    pub(crate) fn drained(&self) -> bool {
        self.position.drained()
    }

    /// After a resume of the sink: takes a checkpoint if one is due.
    pub(crate) fn after_resume(&mut self, stages: &[Stage], sink: &mut Sink) -> Result<()> {
        let records = self.input.records();
        if records.saturating_sub(self.last_records) >= self.every_records
            || self.last_at.elapsed() >= self.every
        {
            self.take(stages, sink, Standing::Going)?;
        }
        Ok(())
    }

    /// Takes a checkpoint now (also at the end of a run), if anything came in or went out since
    /// the last, or the partition's standing changed.
    pub(crate) fn take(
        &mut self,
        stages: &[Stage],
        sink: &mut Sink,
        standing: Standing,
    ) -> Result<()> {
        self.last_at = Instant::now();
        self.last_records = self.input.records();
        let (sequence, outputs) = (self.position.sequence(), sink.published());
        if (sequence, outputs, standing) == self.last || self.hold.lost() {
            return Ok(());
        }
        // N1: every output derived from the input so far is in the stream before the
        // checkpoint says the input is done with.
        sink.flush()?;
        let states = stages
            .iter()
            .zip(&self.names)
            .map(|(stage, name)| Ok((name.clone(), stage.checkpoint_state()?)))
            .collect::<Result<Vec<_>>>()?;
        // N5: nothing is written once the lease may have run out.
        let written = self.hold.valid()
            && self.checkpoints.save(&Checkpoint {
                sequence,
                outputs,
                ended: standing == Standing::Ended,
                quiescent: standing == Standing::Quiescent,
                states,
            })?;
        if !written {
            self.hold.lose();
            return Err(Error::Io {
                stage: stages.first().map_or("-", |s| s.name()).to_string(),
                message: "this host no longer holds the partition (its lease ran out, or \
                          another host wrote its checkpoint); the partition stops here"
                    .into(),
            });
        }
        self.last = (sequence, outputs, standing);
        if let Some(acker) = self.position.take_acker() {
            self.checkpoints.acknowledge(acker);
        }
        Ok(())
    }
}
