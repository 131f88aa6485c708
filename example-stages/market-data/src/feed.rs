//! A synthetic, seeded tick feed: many symbols with skewed activity, random-walk prices and
//! bursty timestamps, like a real trade feed. Same seed, same feed, byte for byte.

use std::io::Write as _;

use crate::records::Symbol;
use crate::state::{Reader, Writer};

/// Names of the most active symbols; the rest are `SYM0008`, `SYM0009`, ...
const NAMED: [&str; 8] = [
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOG", "META", "TSLA", "JPM",
];

/// How the feed is generated.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// Seed of the generator.
    pub seed: u64,
    /// Number of symbols (at least 1).
    pub symbols: usize,
    /// Ticks to emit.
    pub records: u64,
    /// Longest burst of back-to-back ticks.
    pub max_burst: u32,
    /// Emit a garbled line every this many ticks (0: never), to exercise decoders.
    pub garble_every: u64,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            seed: 42,
            symbols: 64,
            records: 100_000,
            max_burst: 64,
            garble_every: 0,
        }
    }
}

/// The feed generator. Each call to [`Feed::next_into`] writes one raw tick line.
#[derive(Debug, Clone)]
pub struct Feed {
    config: FeedConfig,
    rng: u64,
    seq: u64,
    ts_ns: u64,
    burst_left: u32,
    symbols: Vec<(Symbol, i64)>,
}

impl Feed {
    /// Starts a feed.
    pub fn new(config: FeedConfig) -> Feed {
        let mut rng = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        let symbols = (0..config.symbols.max(1))
            .map(|i| {
                let name = NAMED
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("SYM{i:04}"));
                let start = 50_0000 + (splitmix(&mut rng) % 450_0000) as i64;
                (Symbol::parse(&name).unwrap_or_default(), start)
            })
            .collect();
        Feed {
            config,
            rng,
            seq: 0,
            ts_ns: 1_700_000_000_000_000_000,
            burst_left: 0,
            symbols,
        }
    }

    /// Ticks emitted so far.
    pub fn emitted(&self) -> u64 {
        self.seq
    }

    /// Serialises where the feed is (format version 1): its random state, sequence number,
    /// clock, burst and every symbol's price, for handing over in a hot swap. The
    /// configuration (how many records, garbling) is the next version's own.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Writer::new(1);
        out.u64(self.rng)
            .u64(self.seq)
            .u64(self.ts_ns)
            .u32(self.burst_left)
            .len(self.symbols.len());
        for (symbol, price) in &self.symbols {
            out.symbol(symbol).i64(*price);
        }
        out.finish()
    }

    /// Continues from a position serialised by [`Feed::to_bytes`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut state = Reader::new(bytes, "feed", 1)?;
        let (rng, seq, ts_ns, burst_left) =
            (state.u64()?, state.u64()?, state.u64()?, state.u32()?);
        let mut symbols = Vec::new();
        for _ in 0..state.u32()? {
            symbols.push((state.symbol()?, state.i64()?));
        }
        state.finish()?;
        if symbols.is_empty() {
            return Err("feed state has no symbols".into());
        }
        (
            self.rng,
            self.seq,
            self.ts_ns,
            self.burst_left,
            self.symbols,
        ) = (rng, seq, ts_ns, burst_left, symbols);
        Ok(())
    }

    /// Writes the next raw tick (no newline) into `out`, replacing its content. Returns
    /// `false` once the configured number of ticks has been emitted.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        if self.seq >= self.config.records {
            return false;
        }
        self.seq += 1;
        out.clear();
        if self.config.garble_every > 0 && self.seq.is_multiple_of(self.config.garble_every) {
            let _ = write!(out, "{},garbled line", self.seq);
            return true;
        }
        // Bursts: back-to-back ticks a few hundred ns apart, then a quiet gap of milliseconds.
        if self.burst_left == 0 {
            self.burst_left = 1 + (self.next() % u64::from(self.config.max_burst.max(1))) as u32;
            self.ts_ns += 1_000_000 + self.next() % 4_000_000;
        } else {
            self.ts_ns += 100 + self.next() % 900;
        }
        self.burst_left -= 1;
        // Skewed activity: low indices (the named symbols) trade far more often.
        let n = self.symbols.len() as u64;
        let (a, b) = (self.next() % n, self.next() % n);
        let index = (a * b / n.max(1)) as usize;
        let step = (self.next() % 201) as i64 - 100;
        let qty = 1 + (self.next() % 50) as u32 * 100;
        let side = if self.next().is_multiple_of(2) {
            'B'
        } else {
            'S'
        };
        let (symbol, price) = &mut self.symbols[index];
        *price = (*price + step).max(1_0000);
        let _ = write!(
            out,
            "{},{},{},{}.{:04},{},{}",
            self.seq,
            self.ts_ns,
            symbol.as_str(),
            *price / 10_000,
            *price % 10_000,
            qty,
            side
        );
        true
    }

    fn next(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode_raw_tick;

    #[test]
    fn a_feed_restored_from_its_state_continues_exactly_where_it_was() {
        let config = FeedConfig {
            records: 300,
            garble_every: 7,
            ..FeedConfig::default()
        };
        let mut whole = Feed::new(config.clone());
        let mut first = Feed::new(config.clone());
        let mut line = Vec::new();
        let mut expected = Vec::new();
        while whole.next_into(&mut line) {
            expected.push(line.clone());
        }
        let mut seen = Vec::new();
        for _ in 0..120 {
            assert!(first.next_into(&mut line));
            seen.push(line.clone());
        }
        let mut second = Feed::new(FeedConfig {
            seed: 9, // the next version's seed does not matter: the state carries the position
            ..config
        });
        second.restore(&first.to_bytes()).expect("restore");
        while second.next_into(&mut line) {
            seen.push(line.clone());
        }
        assert_eq!(seen, expected);
        assert!(
            second.restore(&[2]).is_err(),
            "an unknown version is refused"
        );
        assert!(second.restore(&first.to_bytes()[..9]).is_err(), "truncated");
    }

    #[test]
    fn same_seed_same_feed_and_every_line_decodes() {
        let config = FeedConfig {
            records: 500,
            ..FeedConfig::default()
        };
        let (mut a, mut b) = (Feed::new(config.clone()), Feed::new(config));
        let (mut la, mut lb) = (Vec::new(), Vec::new());
        let mut count = 0;
        while a.next_into(&mut la) {
            assert!(b.next_into(&mut lb));
            assert_eq!(la, lb);
            assert!(
                decode_raw_tick(&la).is_some(),
                "{}",
                String::from_utf8_lossy(&la)
            );
            count += 1;
        }
        assert_eq!(count, 500);
    }
}
