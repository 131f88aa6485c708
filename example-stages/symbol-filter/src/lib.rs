//! A filter: keeps the binary ticks whose symbol is in `symbols` (comma-separated; empty
//! keeps everything). Shows configuration and a [`Map`] that pushes nothing.

use market_data::{Symbol, Tick};
use sluicegate_guest::{Batch, Config, Map};

struct SymbolFilter {
    keep: Vec<Symbol>,
}

impl Map for SymbolFilter {
    fn init(config: &Config) -> Result<Self, String> {
        let keep = config
            .list("symbols")
            .iter()
            .map(|s| Symbol::parse(s).ok_or_else(|| format!("config `symbols`: bad symbol `{s}`")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SymbolFilter { keep })
    }

    fn map(&mut self, record: &[u8], out: &mut Batch) {
        let keep = match Tick::symbol_of(record) {
            Some(symbol) => self.keep.is_empty() || self.keep.contains(&symbol),
            None => false,
        };
        if keep {
            out.push(record);
        }
    }
}

sluicegate_guest::export_map!(SymbolFilter);
