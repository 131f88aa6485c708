//! A moving-average crossover strategy on VWAP updates: when the fast average of a symbol's
//! VWAP crosses above the slow one, buy; when it crosses below, sell.

use std::collections::{BTreeMap, VecDeque};

use crate::records::{Order, Side, Symbol, Vwap};
use crate::state::{Reader, Writer};

/// Per-symbol crossover state.
#[derive(Debug, Clone)]
pub struct Crossover {
    fast: usize,
    slow: usize,
    qty: u32,
    state: BTreeMap<Symbol, Averages>,
}

#[derive(Debug, Clone, Default)]
struct Averages {
    history: VecDeque<i64>,
    fast_above: Option<bool>,
}

impl Crossover {
    /// A strategy with `fast` and `slow` window lengths (fast < slow) and an order size.
    pub fn new(fast: usize, slow: usize, qty: u32) -> Self {
        let fast = fast.max(1);
        Crossover {
            fast,
            slow: slow.max(fast + 1),
            qty,
            state: BTreeMap::new(),
        }
    }

    /// Serialises the per-symbol averages (format version 1), for handing over in a hot swap.
    /// The window lengths and order size are configuration, not state.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Writer::new(1);
        out.len(self.state.len());
        for (symbol, averages) in &self.state {
            let above = match averages.fast_above {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            };
            out.symbol(symbol).u8(above).len(averages.history.len());
            for &vwap in &averages.history {
                out.i64(vwap);
            }
        }
        out.finish()
    }

    /// Takes over averages serialised by [`Crossover::to_bytes`] (keeping this version's
    /// window lengths: a longer slow window fills up as updates arrive).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut state = Reader::new(bytes, "strategy", 1)?;
        let mut symbols = BTreeMap::new();
        for _ in 0..state.u32()? {
            let symbol = state.symbol()?;
            let fast_above = match state.u8()? {
                0 => None,
                1 => Some(false),
                2 => Some(true),
                other => return Err(format!("strategy state: bad crossing flag {other}")),
            };
            let mut history = VecDeque::new();
            for _ in 0..state.u32()? {
                history.push_back(state.i64()?);
            }
            while history.len() > self.slow {
                history.pop_front();
            }
            symbols.insert(
                symbol,
                Averages {
                    history,
                    fast_above,
                },
            );
        }
        state.finish()?;
        self.state = symbols;
        Ok(())
    }

    /// Feeds one VWAP update; returns an order when the averages cross.
    pub fn update(&mut self, v: &Vwap) -> Option<Order> {
        let s = self.state.entry(v.symbol).or_default();
        s.history.push_back(v.vwap_e4);
        if s.history.len() > self.slow {
            s.history.pop_front();
        }
        if s.history.len() < self.slow {
            return None;
        }
        let avg = |n: usize| s.history.iter().rev().take(n).sum::<i64>() / n as i64;
        let above = avg(self.fast) > avg(self.slow);
        let crossed = s.fast_above.is_some_and(|was| was != above);
        s.fast_above = Some(above);
        crossed.then_some(Order {
            seq: v.seq,
            symbol: v.symbol,
            price_e4: v.last_e4,
            qty: self.qty,
            side: if above { Side::Buy } else { Side::Sell },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feed, FeedConfig, VwapWindow, decode_raw_tick};

    /// VWAP updates of a seeded feed.
    fn updates(n: u64) -> Vec<Vwap> {
        let mut feed = Feed::new(FeedConfig {
            records: n,
            symbols: 4,
            ..FeedConfig::default()
        });
        let mut window = VwapWindow::new(8);
        let mut line = Vec::new();
        let mut out = Vec::new();
        while feed.next_into(&mut line) {
            if let Some(tick) = decode_raw_tick(&line) {
                out.push(window.update(&tick));
            }
        }
        out
    }

    #[test]
    fn a_strategy_restored_from_its_state_places_the_same_orders() {
        let updates = updates(3000);
        let mut whole = Crossover::new(5, 20, 100);
        let expected: Vec<Order> = updates.iter().filter_map(|v| whole.update(v)).collect();
        assert!(expected.len() > 10, "the feed makes the averages cross");
        let mut first = Crossover::new(5, 20, 100);
        let (before, after) = updates.split_at(1234);
        let mut seen: Vec<Order> = before.iter().filter_map(|v| first.update(v)).collect();
        let mut second = Crossover::new(5, 20, 100);
        second.restore(&first.to_bytes()).expect("restore");
        seen.extend(after.iter().filter_map(|v| second.update(v)));
        assert_eq!(seen, expected);
        assert!(second.restore(&[1, 1, 0, 0, 0]).is_err(), "truncated");
    }
}
