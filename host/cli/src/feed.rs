//! The `generate` source: the synthetic market feed of `market-data` (seeded, bursty ticks of
//! many symbols, one garbled line now and then), the same as the `tick-source` stage but
//! host-native. `records` (100000), `seed` (42), `symbols` (64).

use market_data::{Feed, FeedConfig};
use serde::Deserialize;
use sluicegate::config::SourceSpec;
use sluicegate::{Chunk, Demand, Error, Upstream};

/// The source kind, as a pipeline file names it.
pub(crate) const KIND: &str = "generate";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_records")]
    records: u64,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default = "default_symbols")]
    symbols: usize,
}

fn default_records() -> u64 {
    100_000
}
fn default_seed() -> u64 {
    42
}
fn default_symbols() -> usize {
    64
}

/// Opens a `generate` source from its settings.
pub(crate) fn open(spec: &SourceSpec) -> sluicegate::Result<Box<dyn Upstream>> {
    let settings: Settings = spec.settings().map_err(|message| Error::Io {
        stage: "source".into(),
        message,
    })?;
    Ok(Box::new(FeedSource {
        feed: Feed::new(FeedConfig {
            seed: settings.seed,
            symbols: settings.symbols,
            records: settings.records,
            ..FeedConfig::default()
        }),
        line: Vec::new(),
        held: false,
    }))
}

struct FeedSource {
    feed: Feed,
    line: Vec<u8>,
    /// `line` holds a tick that did not fit the last pull.
    held: bool,
}

impl Upstream for FeedSource {
    fn pull(&mut self, demand: Demand) -> sluicegate::Result<Option<Chunk>> {
        let mut chunk = Chunk::empty();
        while chunk.len() < demand.records {
            if !std::mem::take(&mut self.held) && !self.feed.next_into(&mut self.line) {
                return Ok((!chunk.is_empty()).then_some(chunk));
            }
            if !demand.admits(&chunk, self.line.len()) {
                self.held = true;
                break;
            }
            chunk.push(&self.line);
        }
        Ok(Some(chunk))
    }
}
