//! A replica's input: the records the router routed to it, served to its first stage as a
//! source that honours every demand (records and bytes), so the replica's chain follows
//! docs/protocol.md as any pipeline's does.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::lane::LaneReceiver;
use super::router::Shared;
use crate::chunk::{Chunk, PREFIX_LEN};
use crate::error::{Error, Result};
use crate::upstream::{Demand, Upstream};

/// The receiving end of one replica's lane.
pub(crate) struct PartitionInput {
    queue: LaneReceiver,
    /// The partition, for errors.
    replica: usize,
    /// The chunk being served, and how far into it (bytes, records) the demands went.
    pending: Option<(Chunk, usize, u32)>,
    shared: Arc<Shared>,
}

impl PartitionInput {
    pub(crate) fn new(queue: LaneReceiver, replica: usize, shared: Arc<Shared>) -> Self {
        PartitionInput {
            queue,
            replica,
            pending: None,
            shared,
        }
    }
}

impl Upstream for PartitionInput {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        if demand.records == 0 {
            return Ok(Some(Chunk::empty()));
        }
        let (chunk, at, served) = match self.pending.take() {
            Some(pending) => pending,
            None => match self.queue.take() {
                Ok(Some(chunk)) => {
                    self.shared.wake_router();
                    (chunk, 0, 0)
                }
                Err(e) => {
                    return Err(Error::Io {
                        stage: super::replica_name("partition", self.replica),
                        message: format!(
                            "cannot read the partition's spill file in {}: {e}",
                            self.queue.spill_dir().display()
                        ),
                    });
                }
                // The router is done: its error, a stop (nothing now, not an end: no stage
                // flushes as if its stream had ended), or the end of the stream.
                Ok(None) => {
                    if let Some(error) = self.shared.failure.lock().ok().and_then(|f| f.clone()) {
                        return Err(error);
                    }
                    if self.shared.stopped.load(Ordering::Relaxed) {
                        return Ok(Some(Chunk::empty()));
                    }
                    return Ok(None);
                }
            },
        };
        if at == 0 && chunk.len() <= demand.records && chunk.as_bytes().len() <= demand.bytes {
            return Ok(Some(chunk));
        }
        let (now, end, records) = take(&chunk, at, demand);
        let served = served + records;
        if served < chunk.len() {
            self.pending = Some((chunk, end, served));
        }
        Ok(Some(now))
    }
}

/// The records of `chunk` from byte `at` on that `demand` allows (at least one), copied, with
/// the byte offset after them and their count.
fn take(chunk: &Chunk, at: usize, demand: Demand) -> (Chunk, usize, u32) {
    let bytes = chunk.as_bytes();
    let (mut end, mut records) = (at, 0u32);
    while records < demand.records && end < bytes.len() {
        let len = bytes
            .get(end..end + PREFIX_LEN)
            .map_or(0, |p| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize);
        let next = end + PREFIX_LEN + len;
        if records > 0 && next - at > demand.bytes {
            break;
        }
        end = next.min(bytes.len());
        records += 1;
    }
    let now = Chunk::from_checked(bytes.get(at..end).unwrap_or_default().to_vec(), records);
    (now, end, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demand_smaller_than_the_chunk_gets_the_first_records_and_the_rest_waits() {
        let chunk = Chunk::from_records([b"a".as_slice(), b"bb", b"ccc"]);
        let (now, at, n) = take(&chunk, 0, Demand::records(2));
        assert_eq!((now, n), (Chunk::from_records([b"a".as_slice(), b"bb"]), 2));
        let (rest, end, n) = take(&chunk, at, Demand::records(9));
        assert_eq!(
            (rest, end, n),
            (Chunk::from_records([b"ccc".as_slice()]), 18, 1)
        );
        let (now, _, n) = take(&chunk, 0, Demand::records(9).with_max_bytes(6));
        assert_eq!(
            (now, n),
            (Chunk::from_records([b"a".as_slice()]), 1),
            "5 + 6 > 6"
        );
        let (now, _, n) = take(&chunk, 5, Demand::records(9).with_max_bytes(1));
        assert_eq!(
            (now, n),
            (Chunk::from_records([b"bb".as_slice()]), 1),
            "the first record always"
        );
    }
}
