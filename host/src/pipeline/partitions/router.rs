//! The router of a partitioned pipeline: one thread pulls the source, reads each record's key,
//! and hands the record to the replica the key hashes to, through a bounded queue per replica.
//! A full queue blocks the router (nothing is buffered without bound): a replica that falls
//! behind holds the source back once the router reaches one of its records, and the others
//! drain what they already hold.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use super::key_stage::KeyStage;
use crate::chunk::Chunk;
use crate::config::{QUEUE_CHUNKS, ROUTE_RECORDS};
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_CHUNK_BYTES;
use crate::upstream::{Demand, Upstream};

/// Longest the router sleeps on a full queue before it looks again (it is woken sooner when
/// a replica takes a chunk).
const FULL_WAIT: Duration = Duration::from_millis(1);

/// How a record's key is read: field `field` between `delimiter` bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    pub(crate) delimiter: u8,
    pub(crate) field: usize,
}

impl Key {
    /// The key of `record`: its field, or empty if it has fewer fields.
    pub(crate) fn of<'a>(&self, record: &'a [u8]) -> &'a [u8] {
        record
            .split(|&b| b == self.delimiter)
            .nth(self.field)
            .unwrap_or_default()
    }

    /// The replica of `replicas` that `record` goes to.
    pub(crate) fn replica(&self, record: &[u8], replicas: usize) -> usize {
        replica_of(self.of(record), replicas)
    }
}

/// The replica of `replicas` that records with `key` go to: FNV-1a of the key, so that a key
/// goes to the same replica in every run.
pub(crate) fn replica_of(key: &[u8], replicas: usize) -> usize {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &byte in key {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % replicas.max(1) as u64).unwrap_or(0)
}

/// How the router reads keys: a field of text records, or a key stage.
pub(crate) enum Keys {
    Field(Key),
    Stage(KeyStage),
}

/// What replicas and router share: the router's thread (woken when a replica takes a chunk),
/// whether the run is over for the router, and the source's error if it failed.
#[derive(Default)]
pub(crate) struct Shared {
    router: OnceLock<Thread>,
    /// Set when a replica ended or the run was stopped: the router stops routing.
    pub(crate) abandoned: AtomicBool,
    /// The source's error, for every replica to report as its input's.
    pub(crate) failure: Mutex<Option<Error>>,
}

impl Shared {
    /// Wakes the router if it waits for room in a queue.
    pub(crate) fn wake_router(&self) {
        if let Some(router) = self.router.get() {
            router.unpark();
        }
    }
}

/// The routing half: the source, the key, a queue per replica.
pub(crate) struct Router {
    source: Box<dyn Upstream>,
    keys: Keys,
    queues: Vec<SyncSender<Chunk>>,
    shared: Arc<Shared>,
}

impl Router {
    /// A router over `source` for `replicas` replicas, with each replica's receiving end.
    pub(crate) fn new(
        source: Box<dyn Upstream>,
        keys: Keys,
        replicas: usize,
        shared: Arc<Shared>,
    ) -> (Router, Vec<Receiver<Chunk>>) {
        let (queues, receivers) = (0..replicas).map(|_| sync_channel(QUEUE_CHUNKS)).unzip();
        (
            Router {
                source,
                keys,
                queues,
                shared,
            },
            receivers,
        )
    }

    /// Routes every record of the source, then closes the queues (each replica then sees the
    /// end of its input). Stops early, closing the queues too, when the run is abandoned.
    pub(crate) fn run(mut self, stop: &AtomicBool) {
        let _ = self.shared.router.set(std::thread::current());
        let mut outcome = match &self.keys {
            Keys::Stage(stage) => stage.prime(),
            Keys::Field(_) => Ok(()),
        };
        if outcome.is_ok() {
            outcome = self.route(stop);
        }
        if let Keys::Stage(stage) = &self.keys
            && let Err(error) = stage.close()
            && outcome.is_ok()
        {
            outcome = Err(error);
        }
        if let Err(error) = outcome
            && let Ok(mut failure) = self.shared.failure.lock()
        {
            *failure = Some(error);
        }
        // Dropping the senders ends every replica's input.
    }

    fn route(&mut self, stop: &AtomicBool) -> Result<()> {
        let replicas = self.queues.len();
        loop {
            if self.over(stop) {
                return Ok(());
            }
            let demand = Demand::records(ROUTE_RECORDS).with_max_bytes(DEFAULT_MAX_CHUNK_BYTES);
            let Some(chunk) = self.source.pull(demand)? else {
                return Ok(());
            };
            let mut parts = vec![Chunk::empty(); replicas];
            match &mut self.keys {
                Keys::Field(key) => {
                    for record in chunk.records() {
                        if let Some(part) = parts.get_mut(key.replica(record, replicas)) {
                            part.push(record);
                        }
                    }
                }
                Keys::Stage(stage) => {
                    let keys = stage.keys(&chunk)?;
                    for (record, key) in chunk.records().zip(&keys) {
                        if let Some(part) = parts.get_mut(replica_of(key, replicas)) {
                            part.push(record);
                        }
                    }
                }
            }
            for (replica, part) in parts.into_iter().enumerate() {
                if !part.is_empty() && !self.send(replica, part, stop) {
                    return Ok(());
                }
            }
        }
    }

    fn over(&self, stop: &AtomicBool) -> bool {
        stop.load(Ordering::Relaxed) || self.shared.abandoned.load(Ordering::Relaxed)
    }

    /// Hands `part` to `replica`, waiting while its queue is full; false if the run is over
    /// (stopped, or a replica ended) before it could.
    fn send(&self, replica: usize, mut part: Chunk, stop: &AtomicBool) -> bool {
        let Some(queue) = self.queues.get(replica) else {
            return false;
        };
        loop {
            match queue.try_send(part) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if self.over(stop) {
                        return false;
                    }
                    part = back;
                    std::thread::park_timeout(FULL_WAIT);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_its_field_and_always_goes_to_the_same_replica() {
        let key = Key {
            delimiter: b',',
            field: 1,
        };
        assert_eq!(key.of(b"17,AAPL,101.5"), b"AAPL");
        assert_eq!(key.of(b"no-fields"), b"");
        let first = key.replica(b"1,AAPL,1", 4);
        assert_eq!(key.replica(b"2,AAPL,9", 4), first, "same key, same replica");
        let spread: std::collections::HashSet<usize> = ["A", "B", "C", "D", "E", "F", "G", "H"]
            .iter()
            .map(|s| key.replica(format!("0,{s},0").as_bytes(), 4))
            .collect();
        assert!(spread.len() > 1, "keys spread over replicas");
    }
}
