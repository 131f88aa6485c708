//! Turns the author-facing traits into the wire protocol: priming, pauses, overflow carried
//! to the next resume, and `none` only after every pending record is delivered.

use std::collections::VecDeque;

use crate::batch::Batch;
use crate::host::{Config, Level, Upstream, log};
use crate::stage::{Flow, Map, RawStage, Stage};

/// Runs a [`Stage`] behind the wire protocol.
pub struct StageDriver<S> {
    stage: Option<S>,
    done: bool,
    pending: VecDeque<Vec<u8>>,
    /// The buffer of the last chunk answered, once the host has read it: the next chunk is
    /// written into it (see [`RawStage::reuse`]).
    spare: Vec<u8>,
}

/// The largest answered buffer kept for the next chunk; a larger one is freed.
const SPARE_MAX: usize = 64 * 1024;

impl<S: Stage> RawStage for StageDriver<S> {
    fn new() -> Self {
        StageDriver {
            stage: None,
            done: false,
            pending: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    fn resume(&mut self, credits: u32) -> Option<Vec<u8>> {
        let Some(stage) = self.stage.as_mut() else {
            // The priming call: initialise and suspend without producing anything.
            match S::init(&Config::from_host()) {
                Ok(stage) => self.stage = Some(stage),
                Err(message) => {
                    log(Level::Error, &format!("init failed: {message}"));
                    panic!("stage init failed: {message}");
                }
            }
            return Some(Vec::new());
        };
        if credits == 0 {
            // A pause: let it reach upstream, answer nothing.
            if !self.done {
                let _ = Upstream::new().pull(0);
            }
            return (!self.done || !self.pending.is_empty()).then(Vec::new);
        }
        let spare = std::mem::take(&mut self.spare);
        let mut out = Batch::new(credits, std::mem::take(&mut self.pending), spare);
        if !self.done && !out.is_full() {
            self.done = stage.resume(credits, &mut Upstream::new(), &mut out) == Flow::Done;
        }
        let (bytes, pending) = out.finish();
        // `self.pending` is the empty queue `take` left, which owns no memory: forgetting it
        // spares dropping it on every resume.
        std::mem::forget(std::mem::replace(&mut self.pending, pending));
        if self.done && bytes.is_empty() && self.pending.is_empty() {
            None
        } else {
            Some(bytes)
        }
    }

    fn close(&mut self) {
        if let Some(stage) = self.stage.as_mut() {
            stage.close();
        }
    }

    fn reuse(&mut self, answered: Vec<u8>) {
        // The larger buffer is kept: a pause answers an empty chunk that owns no memory. The
        // next batch clears it (`Batch::new`).
        if answered.capacity() > self.spare.capacity() && answered.capacity() <= SPARE_MAX {
            self.spare = answered;
        }
    }

    /// The envelope handed to the next version: the records still pending (pushed past the
    /// credits), whether the stage had finished, and the author's own state. Carrying the
    /// pending records is what makes a swap lose nothing even mid flat-map.
    fn snapshot(&self) -> Option<Vec<u8>> {
        let stage = self.stage.as_ref()?;
        let user = stage.snapshot();
        if self.pending.is_empty() && !self.done && user.is_none() {
            return None;
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(self.pending.len() as u32).to_le_bytes());
        for record in &self.pending {
            out.extend_from_slice(&(record.len() as u32).to_le_bytes());
            out.extend_from_slice(record);
        }
        out.push(u8::from(self.done));
        if let Some(user) = user {
            out.push(1);
            out.extend_from_slice(&user);
        } else {
            out.push(0);
        }
        Some(out)
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let bad = || "state envelope is truncated or not from sluicegate-guest".to_string();
        let mut rest = state;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let (head, tail) = rest.split_at_checked(n).ok_or_else(bad)?;
            rest = tail;
            Ok(head)
        };
        let u32_at = |bytes: &[u8]| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let count = u32_at(take(4)?);
        let mut pending = VecDeque::new();
        for _ in 0..count {
            let len = u32_at(take(4)?) as usize;
            pending.push_back(take(len)?.to_vec());
        }
        let done = take(1)?[0] == 1;
        let has_user = take(1)?[0] == 1;
        let user = rest;
        if has_user {
            let stage = self
                .stage
                .as_mut()
                .ok_or("restore before priming: the host primes a new version first")?;
            stage.restore(user)?;
        }
        self.pending = pending;
        self.done = done;
        Ok(())
    }
}

/// Adapts a [`Map`] to a [`Stage`].
pub struct MapDriver<M>(M);

impl<M: Map> Stage for MapDriver<M> {
    fn init(config: &Config) -> Result<Self, String> {
        M::init(config).map(MapDriver)
    }

    fn resume(&mut self, _credits: u32, upstream: &mut Upstream, out: &mut Batch) -> Flow {
        // Pull until something is written, upstream has nothing now, or it is exhausted; so a
        // filter that drops a whole chunk does not answer an empty chunk for no reason.
        while !out.is_full() {
            let Some(input) = upstream.pull(out.remaining()) else {
                self.0.finish(out);
                return Flow::Done;
            };
            if input.is_empty() {
                break;
            }
            out.reserve(input.byte_len());
            for record in input.records() {
                self.0.map(record, out);
            }
            if !out.is_empty() {
                break;
            }
        }
        Flow::More
    }

    fn close(&mut self) {
        self.0.close();
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        self.0.snapshot()
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.0.restore(state)
    }
}
