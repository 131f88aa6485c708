//! The market-data logic behind the example stages, in plain Rust so that the wasm stages,
//! the native benchmark variants and the tests all run the same code.
//!
//! Records on the wire:
//! - a raw tick is text, as a feed handler would receive it: `seq,ts_ns,SYMBOL,price,qty,side`;
//! - a [`Tick`] is the decoded, normalised form: 40 bytes, little-endian, prices in 1e-4 units;
//! - a [`Vwap`] is a per-symbol volume-weighted average price update: 40 bytes;
//! - an [`Order`] is what the strategy emits: 32 bytes.

mod feed;
mod records;
mod state;
mod strategy;
mod vwap;

pub use feed::{Feed, FeedConfig};
pub use records::{Order, Side, Symbol, Tick, Vwap, decode_raw_tick};
pub use strategy::Crossover;
pub use vwap::VwapWindow;

/// FNV-1a, 64 bits: the checksum the sinks and the benchmark compare across runs and variants.
#[derive(Debug, Clone, Copy)]
pub struct Checksum(u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    /// Folds one record (its length first, so record boundaries count).
    pub fn add(&mut self, record: &[u8]) {
        for byte in (record.len() as u32).to_le_bytes().iter().chain(record) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The checksum so far.
    pub fn value(&self) -> u64 {
        self.0
    }
}
