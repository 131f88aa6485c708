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
}

impl<S: Stage> RawStage for StageDriver<S> {
    fn new() -> Self {
        StageDriver {
            stage: None,
            done: false,
            pending: VecDeque::new(),
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
        let mut out = Batch::new(credits, std::mem::take(&mut self.pending));
        if !self.done && !out.is_full() {
            self.done = stage.resume(credits, &mut Upstream::new(), &mut out) == Flow::Done;
        }
        let (bytes, pending) = out.finish();
        self.pending = pending;
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
}
