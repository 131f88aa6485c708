//! Rolling volume-weighted average price per symbol over the last N ticks.

use std::collections::{BTreeMap, VecDeque};

use crate::records::{Symbol, Tick, Vwap};
use crate::state::{Reader, Writer};

/// Per-symbol rolling windows.
#[derive(Debug, Clone)]
pub struct VwapWindow {
    size: usize,
    windows: BTreeMap<Symbol, Window>,
}

#[derive(Debug, Clone, Default)]
struct Window {
    ticks: VecDeque<(i64, u32)>,
    notional: i128,
    volume: u64,
}

impl VwapWindow {
    /// Windows of `size` ticks (at least 1).
    pub fn new(size: usize) -> Self {
        VwapWindow {
            size: size.max(1),
            windows: BTreeMap::new(),
        }
    }

    /// Adds a tick and returns the symbol's updated VWAP.
    pub fn update(&mut self, tick: &Tick) -> Vwap {
        let w = self.windows.entry(tick.symbol).or_default();
        w.ticks.push_back((tick.price_e4, tick.qty));
        w.notional += i128::from(tick.price_e4) * i128::from(tick.qty);
        w.volume += u64::from(tick.qty);
        if w.ticks.len() > self.size
            && let Some((price, qty)) = w.ticks.pop_front()
        {
            w.notional -= i128::from(price) * i128::from(qty);
            w.volume -= u64::from(qty);
        }
        let vwap_e4 = if w.volume == 0 {
            tick.price_e4
        } else {
            (w.notional / i128::from(w.volume)) as i64
        };
        Vwap {
            seq: tick.seq,
            symbol: tick.symbol,
            vwap_e4,
            last_e4: tick.price_e4,
            window: w.ticks.len() as u32,
        }
    }

    /// Serialises the windows (format version 1), for handing over in a hot swap.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Writer::new(1);
        out.len(self.size).len(self.windows.len());
        for (symbol, window) in &self.windows {
            out.symbol(symbol).len(window.ticks.len());
            for &(price, qty) in &window.ticks {
                out.i64(price).u32(qty);
            }
        }
        out.finish()
    }

    /// Restores windows serialised by [`VwapWindow::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut state = Reader::new(bytes, "VWAP", 1)?;
        let size = state.u32()? as usize;
        let mut windows = BTreeMap::new();
        for _ in 0..state.u32()? {
            let symbol = state.symbol()?;
            let mut window = Window::default();
            for _ in 0..state.u32()? {
                let (price, qty) = (state.i64()?, state.u32()?);
                window.ticks.push_back((price, qty));
                window.notional += i128::from(price) * i128::from(qty);
                window.volume += u64::from(qty);
            }
            windows.insert(symbol, window);
        }
        state.finish()?;
        Ok(VwapWindow { size, windows })
    }

    /// Symbols seen so far.
    pub fn symbols(&self) -> usize {
        self.windows.len()
    }
}
