//! The binary records exchanged between stages, and the raw text tick decoder.

/// A symbol: up to 8 ASCII bytes, zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Symbol(pub [u8; 8]);

impl Symbol {
    /// Parses a symbol of 1 to 8 ASCII alphanumeric bytes.
    pub fn parse(text: &str) -> Option<Symbol> {
        let bytes = text.trim().as_bytes();
        if bytes.is_empty() || bytes.len() > 8 || !bytes.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut out = [0u8; 8];
        out[..bytes.len()].copy_from_slice(bytes);
        Some(Symbol(out))
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(8);
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Buy.
    Buy,
    /// Sell.
    Sell,
}

impl Side {
    fn to_byte(self) -> u8 {
        match self {
            Side::Buy => b'B',
            Side::Sell => b'S',
        }
    }
    fn from_byte(b: u8) -> Option<Side> {
        match b {
            b'B' => Some(Side::Buy),
            b'S' => Some(Side::Sell),
            _ => None,
        }
    }
}

/// A decoded, normalised trade tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Feed sequence number.
    pub seq: u64,
    /// Exchange timestamp, nanoseconds.
    pub ts_ns: u64,
    /// Instrument.
    pub symbol: Symbol,
    /// Price in 1e-4 units.
    pub price_e4: i64,
    /// Quantity.
    pub qty: u32,
    /// Aggressor side.
    pub side: Side,
}

impl Tick {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Encodes the tick.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.ts_ns.to_le_bytes());
        out[16..24].copy_from_slice(&self.symbol.0);
        out[24..32].copy_from_slice(&self.price_e4.to_le_bytes());
        out[32..36].copy_from_slice(&self.qty.to_le_bytes());
        out[36] = self.side.to_byte();
        out
    }

    /// Decodes a tick; `None` if the record is not one.
    pub fn decode(bytes: &[u8]) -> Option<Tick> {
        let b: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Tick {
            seq: u64::from_le_bytes(b[0..8].try_into().ok()?),
            ts_ns: u64::from_le_bytes(b[8..16].try_into().ok()?),
            symbol: Symbol(b[16..24].try_into().ok()?),
            price_e4: i64::from_le_bytes(b[24..32].try_into().ok()?),
            qty: u32::from_le_bytes(b[32..36].try_into().ok()?),
            side: Side::from_byte(b[36])?,
        })
    }

    /// The symbol of an encoded tick, without decoding the rest.
    pub fn symbol_of(bytes: &[u8]) -> Option<Symbol> {
        bytes.get(16..24)?.try_into().ok().map(Symbol)
    }
}

/// Parses a price like `189.2512` into 1e-4 units (at most 4 decimals).
fn parse_price_e4(text: &[u8]) -> Option<i64> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &b""[..]),
    };
    if frac.len() > 4 || int.is_empty() {
        return None;
    }
    let int = parse_i64(int)?;
    let mut frac_e4 = if frac.is_empty() { 0 } else { parse_i64(frac)? };
    for _ in frac.len()..4 {
        frac_e4 *= 10;
    }
    int.checked_mul(10_000)?.checked_add(frac_e4)
}

/// `str::parse::<u64>` on ASCII bytes, without its overflow-checked multiplies where the
/// digits cannot overflow (up to 19 of them): on wasm32 each checked 64-bit multiply is a call
/// to a 128-bit multiply routine, which the profile of the decode stage showed at 9%.
fn parse_u64(field: &[u8]) -> Option<u64> {
    let digits = field.strip_prefix(b"+").unwrap_or(field);
    if digits.is_empty() || digits.len() > 19 {
        return std::str::from_utf8(field).ok()?.parse().ok();
    }
    let mut value = 0u64;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value * 10 + u64::from(digit);
    }
    Some(value)
}

/// `str::parse::<i64>` on ASCII bytes, fast for up to 18 digits (see [`parse_u64`]).
fn parse_i64(field: &[u8]) -> Option<i64> {
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 18 || digits.first() == Some(&b'+') {
        return std::str::from_utf8(field).ok()?.parse().ok();
    }
    let magnitude = i64::try_from(parse_u64(digits)?).ok()?;
    Some(if negative { -magnitude } else { magnitude })
}

/// Decodes a raw text tick `seq,ts_ns,SYMBOL,price,qty,side`; `None` if malformed. Works on
/// bytes (the fields are ASCII) after one UTF-8 check, so no field needs a `char` search.
pub fn decode_raw_tick(raw: &[u8]) -> Option<Tick> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut fields = text.trim_end().as_bytes().split(|&b| b == b',');
    let tick = Tick {
        seq: parse_u64(fields.next()?)?,
        ts_ns: parse_u64(fields.next()?)?,
        symbol: Symbol::parse(std::str::from_utf8(fields.next()?).ok()?)?,
        price_e4: parse_price_e4(fields.next()?)?,
        qty: u32::try_from(parse_u64(fields.next()?)?).ok()?,
        side: Side::from_byte(*fields.next()?.first()?)?,
    };
    fields.next().is_none().then_some(tick)
}

/// A per-symbol VWAP update, emitted for every tick of the symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vwap {
    /// Sequence number of the tick that produced the update.
    pub seq: u64,
    /// Instrument.
    pub symbol: Symbol,
    /// Volume-weighted average price over the window, 1e-4 units.
    pub vwap_e4: i64,
    /// Last traded price, 1e-4 units.
    pub last_e4: i64,
    /// Ticks in the window.
    pub window: u32,
}

impl Vwap {
    /// Encoded size in bytes.
    pub const SIZE: usize = 40;

    /// Encodes the update.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.symbol.0);
        out[16..24].copy_from_slice(&self.vwap_e4.to_le_bytes());
        out[24..32].copy_from_slice(&self.last_e4.to_le_bytes());
        out[32..36].copy_from_slice(&self.window.to_le_bytes());
        out
    }

    /// Decodes an update; `None` if the record is not one.
    pub fn decode(bytes: &[u8]) -> Option<Vwap> {
        let b: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Vwap {
            seq: u64::from_le_bytes(b[0..8].try_into().ok()?),
            symbol: Symbol(b[8..16].try_into().ok()?),
            vwap_e4: i64::from_le_bytes(b[16..24].try_into().ok()?),
            last_e4: i64::from_le_bytes(b[24..32].try_into().ok()?),
            window: u32::from_le_bytes(b[32..36].try_into().ok()?),
        })
    }
}

/// An order emitted by the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Sequence number of the tick that triggered it.
    pub seq: u64,
    /// Instrument.
    pub symbol: Symbol,
    /// Limit price, 1e-4 units.
    pub price_e4: i64,
    /// Quantity.
    pub qty: u32,
    /// Buy or sell.
    pub side: Side,
}

impl Order {
    /// Encoded size in bytes.
    pub const SIZE: usize = 32;

    /// Encodes the order.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut out = [0u8; Self::SIZE];
        out[0..8].copy_from_slice(&self.seq.to_le_bytes());
        out[8..16].copy_from_slice(&self.symbol.0);
        out[16..24].copy_from_slice(&self.price_e4.to_le_bytes());
        out[24..28].copy_from_slice(&self.qty.to_le_bytes());
        out[28] = self.side.to_byte();
        out
    }

    /// Decodes an order; `None` if the record is not one.
    pub fn decode(bytes: &[u8]) -> Option<Order> {
        let b: &[u8; Self::SIZE] = bytes.try_into().ok()?;
        Some(Order {
            seq: u64::from_le_bytes(b[0..8].try_into().ok()?),
            symbol: Symbol(b[8..16].try_into().ok()?),
            price_e4: i64::from_le_bytes(b[16..24].try_into().ok()?),
            qty: u32::from_le_bytes(b[24..28].try_into().ok()?),
            side: Side::from_byte(b[28])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoder before it was made byte-oriented: the oracle for the fast one.
    fn decode_with_str_parse(raw: &[u8]) -> Option<Tick> {
        fn price(text: &str) -> Option<i64> {
            let (int, frac) = text.split_once('.').unwrap_or((text, ""));
            if frac.len() > 4 || int.is_empty() {
                return None;
            }
            let int: i64 = int.parse().ok()?;
            let mut frac_e4: i64 = if frac.is_empty() {
                0
            } else {
                frac.parse().ok()?
            };
            for _ in frac.len()..4 {
                frac_e4 *= 10;
            }
            int.checked_mul(10_000)?.checked_add(frac_e4)
        }
        let text = std::str::from_utf8(raw).ok()?;
        let mut fields = text.trim_end().split(',');
        let tick = Tick {
            seq: fields.next()?.parse().ok()?,
            ts_ns: fields.next()?.parse().ok()?,
            symbol: Symbol::parse(fields.next()?)?,
            price_e4: price(fields.next()?)?,
            qty: fields.next()?.parse().ok()?,
            side: Side::from_byte(*fields.next()?.as_bytes().first()?)?,
        };
        fields.next().is_none().then_some(tick)
    }

    #[test]
    fn the_byte_decoder_agrees_with_str_parse_on_odd_input() {
        let cases: &[&str] = &[
            "1,2,AAPL,189.2512,100,B",
            "+1,+2,AAPL,+189.25,+100,S",
            "1,2,AAPL,-189.25,100,S",
            "1,2,AAPL,1.-5,100,S",
            "1,2,AAPL,1.+5,100,S",
            "1,2,AAPL,1.++5,100,S",
            "1,2,AAPL,++1,100,S",
            "1,2,AAPL,-,100,S",
            "1,2,AAPL,.5,100,S",
            "1,2,AAPL,5.,100,S",
            "1,2,AAPL,5.12345,100,S",
            "18446744073709551615,18446744073709551616,AAPL,1,1,B",
            "18446744073709551615,1,AAPL,1,1,B",
            "99999999999999999999,1,AAPL,1,1,B",
            "1,2,AAPL,922337203685477.5807,1,B",
            "1,2,AAPL,922337203685477.5808,1,B",
            "1,2,AAPL,-922337203685477.5808,1,B",
            "1,2,AAPL,999999999999999999,1,B",
            "1,2,AAPL,1,4294967295,B",
            "1,2,AAPL,1,4294967296,B",
            "1,2, AAPL ,1,1,B",
            "1,2,AAPL,1,1,B\u{a0}",
            "1,2,AAPL,1,1,Bx",
            "1,2,AAPL,1,1,",
            "1,2,AAPL,1,1,B,extra",
            "1,2,,1,1,B",
            "1,2,TOOLONGSYM,1,1,B",
            "1,,AAPL,1,1,B",
            "a,2,AAPL,1,1,B",
            "1,2,AAPL,1,1 ,B",
            "",
            "1,garbled line",
        ];
        for case in cases {
            assert_eq!(
                decode_raw_tick(case.as_bytes()),
                decode_with_str_parse(case.as_bytes()),
                "{case:?}"
            );
        }
        assert_eq!(
            decode_raw_tick(b"1,2,AAPL,1,1,B\xff"),
            decode_with_str_parse(b"1,2,AAPL,1,1,B\xff")
        );
        let mut feed = crate::Feed::new(crate::FeedConfig {
            records: 20_000,
            garble_every: 97,
            ..Default::default()
        });
        let mut line = Vec::new();
        while feed.next_into(&mut line) {
            assert_eq!(decode_raw_tick(&line), decode_with_str_parse(&line));
        }
    }

    #[test]
    fn raw_tick_decodes_and_round_trips() {
        let tick = decode_raw_tick(b"7,1000,AAPL,189.25,300,B").expect("valid tick");
        assert_eq!(tick.price_e4, 1_892_500);
        assert_eq!(tick.symbol.as_str(), "AAPL");
        assert_eq!(Tick::decode(&tick.encode()), Some(tick));
    }

    #[test]
    fn malformed_raw_ticks_are_rejected() {
        for bad in [
            &b"7,1000,AAPL,189.25,300"[..],
            b"x,1,A,1,1,B",
            b"1,1,A,1.23456,1,B",
            b"",
        ] {
            assert_eq!(
                decode_raw_tick(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
