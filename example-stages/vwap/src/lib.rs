//! A stateful aggregate: rolling VWAP per symbol over the last `window` ticks (default 32),
//! one 40-byte update per input tick. Hands its windows over in a hot swap.

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

    // Hot swap: the windows go to the next version, so no VWAP restarts from empty.
    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.window.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.window = VwapWindow::from_bytes(state)?;
        Ok(())
    }
}

sluicegate_guest::export_map!(Vwap);
