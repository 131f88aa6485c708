//! A key stage: a stage of the author's choosing that names each record's key, so that keys
//! never depend on a format the host knows. The contract (rule Q4 of docs/scale-out.md): for
//! every record it pulls, it answers exactly one record, the key, in order; it is an ordinary
//! stage of the same world (a 1:1 map), primed, resumed and closed by the protocol, under its
//! own limits. The router feeds it each chunk from the source and reads the keys back.

use std::sync::{Arc, Mutex};

use crate::chunk::Chunk;
use crate::error::{Error, Result};
use crate::stage::Stage;
use crate::upstream::{Demand, Upstream};

/// Consecutive answers without a key the router accepts while records are still waiting,
/// before it calls the stage broken (a key stage has no reason to answer "nothing now").
const IDLE_ANSWERS: u32 = 3;

/// The longest key a key stage may answer (a key names a record; it is not the record).
pub(crate) const MAX_KEY_BYTES: usize = 4096;

/// The records of the current chunk that the key stage has not pulled yet.
#[derive(Default)]
struct Feed {
    records: std::collections::VecDeque<Vec<u8>>,
}

/// The upstream the key stage pulls: the chunk the router is routing.
struct Feeder(Arc<Mutex<Feed>>);

impl Upstream for Feeder {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        let mut feed = self.0.lock().map_err(|_| Error::Host {
            stage: "-".into(),
            message: "the key stage's feed was poisoned by a panic".into(),
        })?;
        let mut chunk = Chunk::empty();
        while chunk.len() < demand.records {
            let Some(record) = feed.records.front() else {
                break;
            };
            if !demand.admits(&chunk, record.len()) {
                break;
            }
            chunk.push(record);
            feed.records.pop_front();
        }
        Ok(Some(chunk))
    }
}

/// A primed key stage and its feed.
pub(crate) struct KeyStage {
    stage: Stage,
    feed: Arc<Mutex<Feed>>,
}

impl KeyStage {
    /// The upstream to instantiate the key stage with, and the handle its keys are read by.
    pub(crate) fn feeder() -> (impl Upstream + 'static, KeyFeed) {
        let feed = Arc::new(Mutex::new(Feed::default()));
        (Feeder(feed.clone()), KeyFeed(feed))
    }

    /// The key stage `stage`, instantiated on the upstream of `feeder`.
    pub(crate) fn new(stage: Stage, feed: KeyFeed) -> Self {
        KeyStage {
            stage,
            feed: feed.0,
        }
    }

    /// The key of every record of `chunk`, in order.
    pub(crate) fn keys(&mut self, chunk: &Chunk) -> Result<Vec<Vec<u8>>> {
        let wanted = chunk.len();
        {
            let mut feed = self.feed();
            feed.records.clear();
            feed.records.extend(chunk.records().map(<[u8]>::to_vec));
        }
        let mut keys = Vec::with_capacity(wanted as usize);
        let mut idle = 0;
        while keys.len() < wanted as usize {
            let missing = wanted - keys.len() as u32;
            let Some(answer) = self.stage.resume(missing)? else {
                return Err(self.broken(format!(
                    "it ended after {} key(s) of a chunk of {wanted} record(s)",
                    keys.len()
                )));
            };
            if answer.is_empty() {
                idle += 1;
                if idle >= IDLE_ANSWERS {
                    return Err(self.broken(format!(
                        "it answered no key {IDLE_ANSWERS} times with {missing} record(s) \
                         waiting"
                    )));
                }
            } else {
                idle = 0;
            }
            for key in answer.records() {
                if key.len() > MAX_KEY_BYTES {
                    return Err(self.broken(format!(
                        "it answered a key of {} bytes; a key may have at most {MAX_KEY_BYTES}",
                        key.len()
                    )));
                }
                keys.push(key.to_vec());
            }
            // Never more keys than records pulled so far: checked on every answer, so a stage
            // answering keys it never pulled cannot make the host hold them.
            let pulled = wanted as usize - self.feed().records.len();
            if keys.len() > pulled {
                return Err(self.broken(format!(
                    "it answered {} key(s) for the {pulled} record(s) it pulled",
                    keys.len()
                )));
            }
        }
        // Here keys == wanted, and keys <= pulled <= wanted: one key per record.
        Ok(keys)
    }

    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn broken(&self, detail: String) -> Error {
        Error::Nonconforming {
            stage: self.stage.name().to_string(),
            check: "Q4 one key per record",
            detail,
        }
    }

    /// The key stage itself, for the probe and the report.
    pub(crate) fn stage(&self) -> Stage {
        self.stage.clone()
    }

    /// Primes the key stage.
    pub(crate) fn prime(&self) -> Result<()> {
        self.stage.prime().map(drop)
    }

    /// Closes the key stage (once the routing is over).
    pub(crate) fn close(&self) -> Result<()> {
        self.stage.close()
    }
}

/// The key stage's side of its feed, held until the stage is made.
pub(crate) struct KeyFeed(Arc<Mutex<Feed>>);
