//! Rolling volume-weighted average price per symbol over the last N ticks.

use std::collections::{BTreeMap, VecDeque};

use crate::records::{Symbol, Tick, Vwap};

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
        let mut out = vec![1u8];
        out.extend_from_slice(&(self.size as u32).to_le_bytes());
        out.extend_from_slice(&(self.windows.len() as u32).to_le_bytes());
        for (symbol, window) in &self.windows {
            out.extend_from_slice(&symbol.0);
            out.extend_from_slice(&(window.ticks.len() as u32).to_le_bytes());
            for (price, qty) in &window.ticks {
                out.extend_from_slice(&price.to_le_bytes());
                out.extend_from_slice(&qty.to_le_bytes());
            }
        }
        out
    }

    /// Restores windows serialised by [`VwapWindow::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let (head, tail) = rest
                .split_at_checked(n)
                .ok_or_else(|| "VWAP state is truncated".to_string())?;
            rest = tail;
            Ok(head)
        };
        let u32_of = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if take(1)? != [1] {
            return Err("unknown VWAP state version".into());
        }
        let size = u32_of(take(4)?) as usize;
        let mut windows = BTreeMap::new();
        for _ in 0..u32_of(take(4)?) {
            let symbol = Symbol(take(8)?.try_into().map_err(|_| "bad symbol")?);
            let mut window = Window::default();
            for _ in 0..u32_of(take(4)?) {
                let price = i64::from_le_bytes(take(8)?.try_into().map_err(|_| "bad price")?);
                let qty = u32_of(take(4)?);
                window.ticks.push_back((price, qty));
                window.notional += i128::from(price) * i128::from(qty);
                window.volume += u64::from(qty);
            }
            windows.insert(symbol, window);
        }
        Ok(VwapWindow { size, windows })
    }

    /// Symbols seen so far.
    pub fn symbols(&self) -> usize {
        self.windows.len()
    }
}
