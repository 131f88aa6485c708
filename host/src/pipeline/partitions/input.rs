//! A replica's input: the records the router routed to it, served to its first stage as a
//! source that honours every demand (records and bytes), so the replica's chain follows
//! docs/protocol.md as any pipeline's does.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use super::router::Shared;
use crate::chunk::Chunk;
use crate::error::Result;
use crate::upstream::{Demand, Upstream};

/// The receiving end of one replica's queue.
pub(crate) struct PartitionInput {
    queue: Receiver<Chunk>,
    /// What the last chunk had left after a demand smaller than it.
    pending: Option<Chunk>,
    shared: Arc<Shared>,
}

impl PartitionInput {
    pub(crate) fn new(queue: Receiver<Chunk>, shared: Arc<Shared>) -> Self {
        PartitionInput {
            queue,
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
        let chunk = match self.pending.take() {
            Some(chunk) => chunk,
            None => match self.queue.recv() {
                Ok(chunk) => {
                    self.shared.wake_router();
                    chunk
                }
                // The router is done: the end of the stream, or the source's error.
                Err(_) => {
                    return match self.shared.failure.lock().ok().and_then(|f| f.clone()) {
                        Some(error) => Err(error),
                        None => Ok(None),
                    };
                }
            },
        };
        let (now, later) = split(chunk, demand);
        self.pending = later;
        Ok(Some(now))
    }
}

/// The first records of `chunk` that `demand` allows (at least one), and the rest, if any.
fn split(chunk: Chunk, demand: Demand) -> (Chunk, Option<Chunk>) {
    if chunk.len() <= demand.records && chunk.as_bytes().len() <= demand.bytes {
        return (chunk, None);
    }
    let (mut now, mut later) = (Chunk::empty(), Chunk::empty());
    for record in chunk.records() {
        let fits = now.len() < demand.records
            && (now.is_empty() || now.as_bytes().len() + 4 + record.len() <= demand.bytes);
        if fits && later.is_empty() {
            now.push(record);
        } else {
            later.push(record);
        }
    }
    (now, (!later.is_empty()).then_some(later))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demand_smaller_than_the_chunk_gets_the_first_records_and_the_rest_waits() {
        let chunk = Chunk::from_records([b"a".as_slice(), b"bb", b"ccc"]);
        let (now, later) = split(chunk.clone(), Demand::records(2));
        assert_eq!(now, Chunk::from_records([b"a".as_slice(), b"bb"]));
        assert_eq!(later, Some(Chunk::from_records([b"ccc".as_slice()])));
        let (now, later) = split(chunk.clone(), Demand::records(9).with_max_bytes(6));
        assert_eq!(
            now,
            Chunk::from_records([b"a".as_slice()]),
            "5 + 6 bytes > 6"
        );
        assert_eq!(later.map(|c| c.len()), Some(2));
        let (now, later) = split(chunk.clone(), Demand::records(3));
        assert_eq!((now, later), (chunk, None));
    }
}
