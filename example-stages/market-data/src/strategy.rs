//! A moving-average crossover strategy on VWAP updates: when the fast average of a symbol's
//! VWAP crosses above the slow one, buy; when it crosses below, sell.

use std::collections::{BTreeMap, VecDeque};

use crate::records::{Order, Side, Symbol, Vwap};

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
