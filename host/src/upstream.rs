//! Where a stage's `pull` goes: the [`Upstream`] trait, implemented by [`crate::Stage`] (a wasm
//! stage upstream, delegated demand) and by host-native sources, and the [`Demand`] a pull
//! carries.

use crate::chunk::{Chunk, PREFIX_LEN};
use crate::error::Result;

/// What a pull asks for: at most `records` records, in at most `bytes` bytes (framing
/// included). The byte bound never stops the first record, so a pull always makes progress.
///
/// The host clamps every pull a guest makes before the upstream produces anything (records to
/// [`Limits::max_pull_records`](crate::Limits::max_pull_records), bytes to the puller's
/// [`Limits::max_chunk_bytes`](crate::Limits::max_chunk_bytes)), so a guest asking for
/// `u32::MAX` records cannot make the host build a chunk of billions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Demand {
    /// Most records to answer (the credits).
    pub records: u32,
    /// Most bytes to answer, framing included, unless the first record alone is larger.
    pub bytes: usize,
}

impl Demand {
    /// At most `records` records, in any number of bytes.
    pub fn records(records: u32) -> Self {
        Demand {
            records,
            bytes: usize::MAX,
        }
    }

    /// The same demand, held to at most `bytes` bytes.
    pub fn with_max_bytes(self, bytes: usize) -> Self {
        Demand { bytes, ..self }
    }

    /// True if `chunk` may take one more record of `len` bytes.
    pub fn admits(&self, chunk: &Chunk, len: usize) -> bool {
        chunk.len() < self.records
            && (chunk.is_empty()
                || chunk
                    .as_bytes()
                    .len()
                    .saturating_add(PREFIX_LEN)
                    .saturating_add(len)
                    <= self.bytes)
    }
}

/// Something a stage can pull records from.
///
/// The host calls [`Upstream::pull`] to answer a guest's `upstream.pull(credits)`. An
/// implementation must answer at most `demand.records` records and, after the first, at most
/// `demand.bytes` bytes (a record that does not fit waits for the next pull: nothing is
/// dropped), `Some(empty)` for "nothing now" and `None` for "exhausted"; the host never calls
/// it again after `None` (rule R5). An `Err` that is a fault of the upstream ends the puller's
/// input (rule X4); any other `Err` abandons the puller's call (rule X6).
pub trait Upstream: Send {
    /// Answers a pull.
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>>;

    /// The wasm stage this upstream is, if it is one: a puller's host function then has its
    /// answer delivered straight from the stage's memory into the puller's.
    #[doc(hidden)]
    fn as_stage(&self) -> Option<&crate::Stage> {
        None
    }
}

/// The upstream of a source stage: exhausted from the start.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn pull(&mut self, _demand: Demand) -> Result<Option<Chunk>> {
        Ok(None)
    }
}

/// A host-native upstream serving records from an iterator, honouring the demand exactly.
pub struct IterUpstream<I, R> {
    records: I,
    /// A record taken from the iterator that did not fit the last pull's bytes.
    held: Option<R>,
}

impl<I, R> IterUpstream<I, R> {
    /// Serves the records of `records`, as many per pull as the demand allows, then `None`.
    pub fn new(records: I) -> Self {
        IterUpstream {
            records,
            held: None,
        }
    }
}

impl<I, R> Upstream for IterUpstream<I, R>
where
    I: Iterator<Item = R> + Send,
    R: AsRef<[u8]> + Send,
{
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        let mut chunk = Chunk::empty();
        while chunk.len() < demand.records {
            let Some(record) = self.held.take().or_else(|| self.records.next()) else {
                if chunk.is_empty() && demand.records > 0 {
                    return Ok(None);
                }
                break;
            };
            if !demand.admits(&chunk, record.as_ref().len()) {
                self.held = Some(record);
                break;
            }
            chunk.push(record.as_ref());
        }
        Ok(Some(chunk))
    }
}

impl<F> Upstream for F
where
    F: FnMut(Demand) -> Result<Option<Chunk>> + Send,
{
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        self(demand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_is_held_to_its_bytes_and_the_record_that_does_not_fit_comes_next() {
        let records = ["aaaa", "bbbb", "cccc"];
        let mut upstream = IterUpstream::new(records.iter());
        // Room for two framed 4-byte records (16 bytes), not three.
        let demand = Demand::records(10).with_max_bytes(16);
        let first = upstream.pull(demand).ok().flatten().map(|c| c.len());
        assert_eq!(first, Some(2));
        let second: Vec<Vec<u8>> = upstream
            .pull(demand)
            .ok()
            .flatten()
            .map(|c| c.records().map(<[u8]>::to_vec).collect())
            .unwrap_or_default();
        assert_eq!(second, [b"cccc".to_vec()], "nothing is dropped");
        assert_eq!(upstream.pull(demand).ok().flatten(), None);
    }

    #[test]
    fn the_first_record_passes_whatever_its_size() {
        let mut upstream = IterUpstream::new(["a long record"].iter());
        let chunk = upstream.pull(Demand::records(1).with_max_bytes(1));
        assert_eq!(chunk.ok().flatten().map(|c| c.len()), Some(1));
    }
}
