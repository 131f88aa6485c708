//! A strategy: moving-average crossover on VWAP updates, emitting a 32-byte order when a
//! symbol's fast average (`fast`, default 5) crosses its slow one (`slow`, default 20).
//! Order size: `qty` (default 100). Hot-swappable: its averages go to the next version.

use market_data::{Crossover, Vwap};
use sluicegate_guest::{Batch, Config, Map};

struct Strategy {
    crossover: Crossover,
}

impl Map for Strategy {
    fn init(config: &Config) -> Result<Self, String> {
        Ok(Strategy {
            crossover: Crossover::new(
                config.parse("fast", 5usize)?,
                config.parse("slow", 20usize)?,
                config.parse("qty", 100u32)?,
            ),
        })
    }

    fn map(&mut self, record: &[u8], out: &mut Batch) {
        if let Some(order) = Vwap::decode(record).and_then(|v| self.crossover.update(&v)) {
            out.push(&order.encode());
        }
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(self.crossover.to_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        self.crossover.restore(state)
    }
}

sluicegate_guest::export_map!(Strategy);
