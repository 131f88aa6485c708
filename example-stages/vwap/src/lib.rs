//! A stateful aggregate: rolling VWAP per symbol over the last `window` ticks (default 32),
//! one 40-byte update per input tick.

use market_data::{Tick, VwapWindow};
use sluicegate_guest::{Batch, Config, Map};

struct Vwap {
    window: VwapWindow,
}

impl Map for Vwap {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Vwap {
            window: VwapWindow::new(config.parse("window", 32usize)?),
        })
    }

    fn map(&mut self, record: &[u8], out: &mut Batch) {
        if let Some(tick) = Tick::decode(record) {
            out.push(&self.window.update(&tick).encode());
        }
    }
}

sluicegate_guest::export_map!(Vwap);
