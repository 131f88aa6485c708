//! The checkpoints of a partition that reads NATS JetStream (docs/scale-out.md, rules N1–N4):
//! between two resumes of the sink, once `checkpoint_records` input records or
//! `checkpoint_ms` have passed, the sink waits for every publish's acknowledgement (N1), every
//! stage hands over its state (N3), the states are written with the input sequence they cover
//! (N2), and only then is the input acknowledged up to that sequence (N2). At the start, the
//! partition's stages are given the last checkpoint's states before their first resume and
//! its consumer delivers from just after its sequence (N4).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::sink::Sink;
use crate::counters::Counters;
use crate::error::{Error, Result};
use crate::nats::{Checkpoint, Checkpoints, Position};
use crate::stage::Stage;

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
    last_sequence: u64,
    last_quiescent: bool,
    /// Set when this host lost the partition's lease: no checkpoint is written any more (the
    /// host that took it over owns the checkpoint now).
    abandoned: Arc<AtomicBool>,
}

impl Checkpointer {
    pub(crate) fn new(
        checkpoints: Checkpoints,
        start: Option<Checkpoint>,
        position: Arc<Position>,
        input: Arc<Counters>,
        names: Vec<String>,
        (every_records, every): (u64, Duration),
        abandoned: Arc<AtomicBool>,
    ) -> Self {
        let last_sequence = position.sequence();
        let last_quiescent = start.as_ref().is_some_and(|c| c.quiescent);
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
            last_sequence,
            last_quiescent,
            abandoned,
        }
    }

    /// Gives the primed stages the states of the checkpoint the partition starts from, and
    /// makes the sink's ids derive from it.
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
        sink.rebase(start.sequence);
        Ok(())
    }

    /// True once the partition's input is drained (`drain = true`) and its chain answered
    /// nothing: the replica's run ends there.
    pub(crate) fn drained(&self) -> bool {
        self.position.drained()
    }

    /// After a resume of the sink: takes a checkpoint if one is due.
    pub(crate) fn after_resume(&mut self, stages: &[Stage], sink: &mut Sink) -> Result<()> {
        let records = self.input.snapshot().records;
        if records.saturating_sub(self.last_records) >= self.every_records
            || self.last_at.elapsed() >= self.every
        {
            self.take(stages, sink, false)?;
        }
        Ok(())
    }

    /// Takes a checkpoint now (also at the end of a run), if any input came in since the last
    /// or the partition just became `quiescent` (drained, its chain answering nothing).
    pub(crate) fn take(
        &mut self,
        stages: &[Stage],
        sink: &mut Sink,
        quiescent: bool,
    ) -> Result<()> {
        self.last_at = Instant::now();
        self.last_records = self.input.snapshot().records;
        let sequence = self.position.sequence();
        if (sequence, quiescent) == (self.last_sequence, self.last_quiescent)
            || (sequence == self.last_sequence && !quiescent)
            || self.abandoned.load(Ordering::Relaxed)
        {
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
        let written = self.checkpoints.save(&Checkpoint {
            sequence,
            quiescent,
            states,
        })?;
        if !written {
            // N5: another host holds the partition now; it owns the checkpoint.
            self.abandoned.store(true, Ordering::Relaxed);
            return Err(Error::Io {
                stage: stages.first().map_or("-", |s| s.name()).to_string(),
                message: "another host took this partition over (its checkpoint changed under \
                          this one); the partition stops here"
                    .into(),
            });
        }
        self.last_sequence = sequence;
        self.last_quiescent = quiescent;
        if let Some(acker) = self.position.take_acker() {
            self.checkpoints.acknowledge(acker);
        }
        sink.rebase(sequence);
        Ok(())
    }
}
