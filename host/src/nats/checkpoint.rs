//! Checkpoints: a partition's stages' states (the `state` export hot swap uses), taken
//! together between two resumes, with the input sequence they cover, in a JetStream key-value
//! bucket under `<consumer>.<partition>`, with the number of records the partition had
//! published (the ordinal of its next output's id). A partition starts from its checkpoint: its stages
//! restored, its consumer delivering from just after the sequence. Writes are compare-and-set
//! on the entry's revision, so a host that lost a partition cannot overwrite the checkpoint of
//! the host that took it over: its next write fails, and it stops.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;

use super::Nats;
use crate::error::{Error, Result};

/// The first bytes of an encoded checkpoint (and its format's version).
const MAGIC: &[u8; 5] = b"SGCK\x03";

/// What a checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The stream sequence of the last input message the states cover.
    pub(crate) sequence: u64,
    /// How many records the partition had published when it was taken: the ordinal of the
    /// next one, part of its deduplication id (a replay from here numbers them alike).
    pub(crate) outputs: u64,
    /// Taken when the partition's chain had ended (a stage answered `none`): it is done for
    /// good, and no host runs it again.
    pub(crate) ended: bool,
    /// Taken when the partition had read everything its stream held and its chain answered
    /// nothing more: no output is still held in a stage (what `drain` waits for).
    pub(crate) quiescent: bool,
    /// Each stage's name (without its replica suffix) and state, upstream first; an empty
    /// state for a stage that holds nothing.
    pub(crate) states: Vec<(String, Vec<u8>)>,
}

impl Checkpoint {
    fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.outputs.to_le_bytes());
        out.push(u8::from(self.quiescent) | (u8::from(self.ended) << 1));
        out.extend_from_slice(&(self.states.len() as u32).to_le_bytes());
        for (name, state) in &self.states {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(state.len() as u32).to_le_bytes());
            out.extend_from_slice(state);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Checkpoint> {
        let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let sequence = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let outputs = u64::from_le_bytes(take(8)?.try_into().ok()?);
        let flags = take(1)?[0];
        let (quiescent, ended) = (flags & 1 == 1, flags & 2 == 2);
        let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
        let mut states = Vec::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let name = String::from_utf8(take(len)?.to_vec()).ok()?;
            let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            states.push((name, take(len)?.to_vec()));
        }
        Some(Checkpoint {
            sequence,
            outputs,
            ended,
            quiescent,
            states,
        })
    }
}

/// One partition's checkpoint entry.
pub(crate) struct Checkpoints {
    nats: Arc<Nats>,
    store: kv::Store,
    key: String,
    /// The entry's revision as this host last read or wrote it (`None`: no entry yet).
    revision: Option<u64>,
    partition: u32,
}

impl Checkpoints {
    /// The checkpoint entry of `consumer`'s partition `partition` in `bucket` (created if the
    /// bucket does not exist).
    pub(crate) fn open(
        nats: Arc<Nats>,
        bucket: &str,
        consumer: &str,
        partition: u32,
    ) -> Result<Self> {
        let store = nats.bucket(bucket, Duration::ZERO, "a checkpoint")?;
        Ok(Checkpoints {
            nats,
            store,
            key: format!("{consumer}.{partition}"),
            revision: None,
            partition,
        })
    }

    /// The partition's last checkpoint, if it has one.
    pub(crate) fn load(&mut self) -> Result<Option<Checkpoint>> {
        let store = &self.store;
        let key = &self.key;
        let entry = self
            .nats
            .retry(&format!("reading checkpoint `{key}`"), || {
                store.entry(key.clone())
            })?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            self.revision = None;
            return Ok(None);
        };
        self.revision = Some(entry.revision);
        Checkpoint::decode(&entry.value).map(Some).ok_or_else(|| {
            self.nats.error(format!(
                "checkpoint `{key}` is not a sluicegate checkpoint (or from another version)"
            ))
        })
    }

    /// Writes `checkpoint`, if the entry is still the one this host last read or wrote:
    /// `Ok(false)` if another host wrote it since (it holds the partition now). Retried while
    /// the server does not answer, for up to the connection's timeout.
    pub(crate) fn save(&mut self, checkpoint: &Checkpoint) -> Result<bool> {
        let value = bytes::Bytes::from(checkpoint.encode());
        let deadline = self.nats.deadline();
        let mut backoff = std::time::Duration::from_millis(50);
        loop {
            let (store, key) = (&self.store, &self.key);
            let left = deadline
                .saturating_duration_since(std::time::Instant::now())
                .max(std::time::Duration::from_millis(100));
            let written = self.nats.block_on(async {
                let write =
                    async {
                        match self.revision {
                            Some(revision) => store
                                .update(key, value.clone(), revision)
                                .await
                                .map_err(|e| {
                                    (
                                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                                        e.to_string(),
                                    )
                                }),
                            None => store.create(key, value.clone()).await.map_err(|e| {
                                (
                                    e.kind() == kv::CreateErrorKind::AlreadyExists,
                                    e.to_string(),
                                )
                            }),
                        }
                    };
                tokio::time::timeout(left, write)
                    .await
                    .unwrap_or_else(|_| Err((false, "timed out".into())))
            });
            match written {
                Ok(revision) => {
                    self.revision = Some(revision);
                    return Ok(true);
                }
                // Ours after all, if an attempt that timed out was applied.
                Err((true, _)) => return self.holds(&value),
                Err((false, e)) if std::time::Instant::now() + backoff < deadline => {
                    tracing::warn!(
                        "partition {}: checkpoint not written ({e}); retrying",
                        self.partition
                    );
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                }
                Err((false, e)) => {
                    return Err(Error::Io {
                        stage: format!("partition#{}", self.partition),
                        message: format!("checkpoint `{key}` was not written: {e}"),
                    });
                }
            }
        }
    }
}

impl Checkpoints {
    /// True (and the revision taken) if the entry holds `value`.
    fn holds(&mut self, value: &[u8]) -> Result<bool> {
        let (store, key) = (&self.store, &self.key);
        let entry = self
            .nats
            .retry(&format!("reading checkpoint `{key}`"), || {
                store.entry(key.clone())
            })?;
        match entry {
            Some(entry) if entry.value.as_ref() == value => {
                self.revision = Some(entry.revision);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Acknowledges the input up to a checkpoint's sequence. Losing an acknowledgement loses
    /// nothing: the position is the checkpoint's, and the server only keeps more messages.
    pub(crate) fn acknowledge(&self, acker: async_nats::jetstream::message::Acker) {
        if !matches!(self.nats.quick(acker.ack()), Some(Ok(()))) {
            tracing::warn!(
                "partition {}: its input was not acknowledged up to the checkpoint (the next \
                 checkpoint will)",
                self.partition
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_decodes_to_what_was_encoded_and_garbage_is_refused() {
        let checkpoint = Checkpoint {
            sequence: 1234,
            outputs: 56,
            ended: false,
            quiescent: true,
            states: vec![("decode".into(), vec![]), ("vwap".into(), vec![1, 2, 3])],
        };
        assert_eq!(
            Checkpoint::decode(&checkpoint.encode()),
            Some(checkpoint.clone())
        );
        let encoded = checkpoint.encode();
        assert_eq!(Checkpoint::decode(&encoded[..encoded.len() - 1]), None);
        assert_eq!(Checkpoint::decode(b"not one"), None);
    }
}
