//! The router of a partitioned pipeline: one thread pulls the source, reads each record's key,
//! and hands the record to the replica the key hashes to, through a lane per replica
//! (`lane.rs`: a bounded queue in memory that overflows to spill files on disk). A full lane
//! blocks the router (nothing is held without bound): a replica that falls behind holds the
//! source back only once its spill is full, and the others go on until then. A replica whose
//! chain ended (a stage answered `none` before its input did) takes no more records: they are
//! counted, not routed, and the others go on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::key_stage::KeyStage;
use super::lane::{LaneReceiver, LaneSender, LaneStats, Offer, lane};
use super::spill::SpillSettings;
use crate::chunk::Chunk;
use crate::config::ROUTE_RECORDS;
use crate::error::{Error, Result};
use crate::limits::DEFAULT_MAX_CHUNK_BYTES;
use crate::upstream::{Demand, Upstream};

/// Longest the router sleeps on a full lane, or after the source had nothing, before it
/// looks again (a replica taking a chunk wakes it sooner).
const WAIT: Duration = Duration::from_millis(1);

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

/// What replicas and router share.
#[derive(Default)]
pub(crate) struct Shared {
    /// The router's thread, woken when a replica takes a chunk.
    router: OnceLock<Thread>,
    /// Set when a replica failed: the router stops routing.
    pub(crate) abandoned: AtomicBool,
    /// Set when the router stopped because the run was stopped (Ctrl-C): a replica's input
    /// then answers "nothing now", not the end of its stream, so no stage flushes as if the
    /// stream had ended.
    pub(crate) stopped: AtomicBool,
    /// The source's (or the key stage's) error, for every replica to report as its input's.
    pub(crate) failure: Mutex<Option<Error>>,
    /// Records not routed because their replica's chain had ended.
    pub(crate) unrouted: AtomicU64,
}

impl Shared {
    /// Wakes the router if it waits for room in a queue.
    pub(crate) fn wake_router(&self) {
        if let Some(router) = self.router.get() {
            router.unpark();
        }
    }

    /// Records the router's error, for the replicas and the report.
    pub(crate) fn fail(&self, error: Error) {
        if let Ok(mut failure) = self.failure.lock() {
            failure.get_or_insert(error);
        }
    }
}

/// The routing half: the source, the key, a queue per replica.
pub(crate) struct Router {
    source: Box<dyn Upstream>,
    keys: Keys,
    /// `None` once the replica's chain ended.
    queues: Vec<Option<LaneSender>>,
    shared: Arc<Shared>,
    /// How long the source may have nothing before the run is called stalled.
    stall_timeout: Option<Duration>,
}

impl Router {
    /// A router over `source` for `replicas` replicas whose lanes hold `queue_chunks` chunks
    /// in memory and spill as `spill` says, with each replica's receiving end and its lane's
    /// stats.
    pub(crate) fn new(
        source: Box<dyn Upstream>,
        keys: Keys,
        (replicas, queue_chunks, spill): (usize, usize, SpillSettings),
        shared: Arc<Shared>,
        stall_timeout: Option<Duration>,
    ) -> (Router, Vec<(LaneReceiver, Arc<LaneStats>)>) {
        let (queues, receivers): (Vec<_>, Vec<_>) = (0..replicas)
            .map(|_| {
                let (sender, receiver, stats) = lane(queue_chunks, spill.clone());
                (Some(sender), (receiver, stats))
            })
            .unzip();
        (
            Router {
                source,
                keys,
                queues,
                shared,
                stall_timeout,
            },
            receivers,
        )
    }

    /// Routes every record of the source, then closes the queues (each replica then sees the
    /// end of its input). Stops early, closing the queues too, when a replica failed or the
    /// run was stopped; an error of the source or the key stage goes to every replica.
    pub(crate) fn run(mut self, stop: &AtomicBool) {
        let _ = self.shared.router.set(std::thread::current());
        let mut outcome = match &self.keys {
            Keys::Stage(stage) => stage.prime(),
            Keys::Field(_) => Ok(()),
        };
        if outcome.is_ok() {
            outcome = self.route(stop);
        }
        if stop.load(Ordering::Relaxed) {
            self.shared.stopped.store(true, Ordering::Relaxed);
        }
        if let Keys::Stage(stage) = &self.keys
            && let Err(error) = stage.close()
            && outcome.is_ok()
        {
            outcome = Err(error);
        }
        if let Err(error) = outcome {
            self.shared.fail(error);
        }
        // Dropping the senders ends every replica's input.
    }

    fn route(&mut self, stop: &AtomicBool) -> Result<()> {
        let replicas = self.queues.len();
        let mut progress = Instant::now();
        loop {
            if self.over(stop) {
                return Ok(());
            }
            let demand = Demand::records(ROUTE_RECORDS).with_max_bytes(DEFAULT_MAX_CHUNK_BYTES);
            let Some(chunk) = self.source.pull(demand)? else {
                return Ok(());
            };
            if chunk.is_empty() {
                // Nothing now: wait a little rather than spin, and call a source that has had
                // nothing for the whole stall timeout stalled, as a single chain would.
                if let Some(after) = self.stall_timeout
                    && progress.elapsed() >= after
                {
                    return Err(Error::Stalled {
                        stage: super::super::source::SOURCE.into(),
                        after,
                    });
                }
                std::thread::park_timeout(WAIT);
                continue;
            }
            progress = Instant::now();
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
            drop(chunk);
            for (replica, part) in parts.into_iter().enumerate() {
                if !part.is_empty() && !self.send(replica, part, stop) {
                    return Ok(());
                }
            }
            if self.queues.iter().all(Option::is_none) {
                return Ok(());
            }
        }
    }

    fn over(&self, stop: &AtomicBool) -> bool {
        stop.load(Ordering::Relaxed) || self.shared.abandoned.load(Ordering::Relaxed)
    }

    /// Hands `part` to `replica`, waiting while its lane is full; false if the run is over
    /// (stopped, or a replica failed) before it could. A replica whose chain ended takes
    /// nothing more: its records are counted as unrouted.
    fn send(&mut self, replica: usize, mut part: Chunk, stop: &AtomicBool) -> bool {
        loop {
            let Some(Some(queue)) = self.queues.get(replica) else {
                self.shared
                    .unrouted
                    .fetch_add(u64::from(part.len()), Ordering::Relaxed);
                return true;
            };
            match queue.offer(part) {
                Offer::Taken => return true,
                Offer::Gone(back) => {
                    if let Some(slot) = self.queues.get_mut(replica) {
                        *slot = None;
                    }
                    part = back;
                }
                Offer::Full(back) => {
                    if self.over(stop) {
                        return false;
                    }
                    part = back;
                    std::thread::park_timeout(WAIT);
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
