//! A source stage: a seeded, bursty synthetic trade feed. Shows a [`Stage`] that produces
//! exactly as many records as it is granted credits, and pulls nothing.
//!
//! Config: `seed` (42), `universe` (64: how many symbols trade), `records` (100000),
//! `max_burst` (64), `garble_every` (0: never). Hot-swappable: the next version continues the
//! feed where this one stopped.

use market_data::{Feed, FeedConfig};
use sluicegate_guest::{Batch, Config, Flow, Stage, Upstream};

struct TickSource {
    feed: Feed,
    line: Vec<u8>,
}

impl Stage for TickSource {
    fn init(config: &Config) -> Result<Self, String> {
        let d = FeedConfig::default();
        let feed = Feed::new(FeedConfig {
            seed: config.parse("seed", d.seed)?,
            symbols: config.parse("universe", d.symbols)?,
            records: config.parse("records", d.records)?,
            max_burst: config.parse("max_burst", d.max_burst)?,
            garble_every: config.parse("garble_every", d.garble_every)?,
        });
        Ok(TickSource {
            feed,
            line: Vec::with_capacity(64),
        })
    }

    fn resume(&mut self, _credits: u32, _upstream: &mut Upstream, out: &mut Batch) -> Flow {
        while !out.is_full() {
            if !self.feed.next_into(&mut self.line) {
                return Flow::Done;
            }
            out.push(&self.line);
        }
        Flow::More
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.feed.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.feed.restore(state)
    }
}

sluicegate_guest::export_stage!(TickSource);
