//! Where a stage's `pull` goes: the [`Upstream`] trait, implemented by [`crate::Stage`] (a wasm
//! stage upstream, delegated demand) and by host-native sources.

use crate::chunk::Chunk;
use crate::error::Result;

/// Something a stage can pull records from.
///
/// The host calls [`Upstream::pull`] to answer a guest's `upstream.pull(credits)`. An
/// implementation must answer at most `credits` records, `Some(empty)` for "nothing now" and
/// `None` for "exhausted"; the host never calls it again after `None` (rule R5).
pub trait Upstream: Send {
    /// Answers a pull of at most `credits` records.
    fn pull(&mut self, credits: u32) -> Result<Option<Chunk>>;
}

/// The upstream of a source stage: exhausted from the start.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUpstream;

impl Upstream for NoUpstream {
    fn pull(&mut self, _credits: u32) -> Result<Option<Chunk>> {
        Ok(None)
    }
}

/// A host-native upstream serving records from an iterator, honouring credits exactly.
pub struct IterUpstream<I> {
    records: I,
}

impl<I> IterUpstream<I> {
    /// Serves the records of `records`, at most `credits` per pull, then `None`.
    pub fn new(records: I) -> Self {
        IterUpstream { records }
    }
}

impl<I, R> Upstream for IterUpstream<I>
where
    I: Iterator<Item = R> + Send,
    R: AsRef<[u8]>,
{
    fn pull(&mut self, credits: u32) -> Result<Option<Chunk>> {
        let mut chunk = Chunk::empty();
        while chunk.len() < credits {
            match self.records.next() {
                Some(record) => chunk.push(record.as_ref()),
                None if chunk.is_empty() && credits > 0 => return Ok(None),
                None => break,
            }
        }
        Ok(Some(chunk))
    }
}

impl<F> Upstream for F
where
    F: FnMut(u32) -> Result<Option<Chunk>> + Send,
{
    fn pull(&mut self, credits: u32) -> Result<Option<Chunk>> {
        self(credits)
    }
}
