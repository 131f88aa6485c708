//! The traits a stage author implements.

use crate::batch::Batch;
use crate::host::{Config, Upstream};

/// What a stage tells the SDK after a resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// More may come: the stage wants to be resumed again.
    More,
    /// The stage is finished; after the records already written, it answers `none`.
    Done,
}

/// A generator stage.
///
/// The SDK keeps the protocol: `init` runs on the priming call, a pause propagates to upstream
/// without calling you, and records pushed past the credits wait for the next resume.
pub trait Stage: Sized + 'static {
    /// Runs once, on the priming `resume(0)`. An error faults the stage (the host reports the
    /// message as a trap in priming).
    fn init(config: &Config) -> Result<Self, String>;

    /// Writes up to `out.remaining()` records, pulling input from `upstream` as needed.
    /// `credits` is the demand of this resume (always > 0 here).
    fn resume(&mut self, credits: u32, upstream: &mut Upstream, out: &mut Batch) -> Flow;

    /// Cleanup: runs exactly once, whether the stage finished or not. Must not pull.
    fn close(&mut self) {}

    /// The state to hand to the next version in a hot swap (`None`: start it fresh).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes over the previous version's snapshot; runs after `init`, before any resume.
    /// An error refuses the swap.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Err("this stage keeps no state to restore".into())
    }
}

/// A record-by-record stage: a map, a filter (push nothing), or a flat-map (push several).
///
/// The SDK pulls as many records from upstream as there are credits left, calls [`Map::map`]
/// on each, and [`Map::finish`] once upstream is exhausted.
pub trait Map: Sized + 'static {
    /// Runs once, on the priming call.
    fn init(config: &Config) -> Result<Self, String>;

    /// Handles one input record, pushing zero or more output records.
    fn map(&mut self, record: &[u8], out: &mut Batch);

    /// Called once when upstream is exhausted, to flush what the stage holds back.
    fn finish(&mut self, _out: &mut Batch) {}

    /// Cleanup: runs exactly once. Must not pull.
    fn close(&mut self) {}

    /// The state to hand to the next version in a hot swap (`None`: start it fresh).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes over the previous version's snapshot. An error refuses the swap.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Err("this stage keeps no state to restore".into())
    }
}

/// The wire-level protocol, with no rule kept for you: what `export_raw!` exports.
pub trait RawStage: 'static {
    /// The state before the priming call.
    fn new() -> Self;

    /// Answers `resume(credits)` with a framed chunk or `None`.
    fn resume(&mut self, credits: u32) -> Option<Vec<u8>>;

    /// Cleanup.
    fn close(&mut self);

    /// Takes back the chunk the last `resume` answered (only a `Some` answer), once the host
    /// has read it: at the start of the next call into the stage, whichever it is (`resume`,
    /// `close`, `snapshot`, `restore`). Keep it to write a later chunk into; dropped by default.
    fn reuse(&mut self, answered: Vec<u8>) {
        drop(answered);
    }

    /// The state to hand to the next version in a hot swap; `None` by default.
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }

    /// Takes over the previous version's state; refuses by default.
    fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Err("this stage keeps no state to restore".into())
    }
}
