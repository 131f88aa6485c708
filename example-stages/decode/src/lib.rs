//! A 1:1 map that may drop: decodes raw text ticks into 40-byte binary ticks and drops
//! malformed lines, logging how many at close. Shows [`Map`], logging and cleanup.

use sluicegate_guest::{Batch, Config, Level, Map, log_with};

#[derive(Default)]
struct Decode {
    decoded: u64,
    dropped: u64,
}

impl Map for Decode {
    fn init(_config: &Config) -> Result<Self, String> {
        Ok(Decode::default())
    }

    fn map(&mut self, record: &[u8], out: &mut Batch) {
        match market_data::decode_raw_tick(record) {
            Some(tick) => {
                self.decoded += 1;
                out.push(&tick.encode());
            }
            None => self.dropped += 1,
        }
    }

    fn close(&mut self) {
        let (decoded, dropped) = (self.decoded.to_string(), self.dropped.to_string());
        let fields = [("decoded", decoded.as_str()), ("dropped", dropped.as_str())];
        log_with(Level::Info, "decoder closed", &fields);
    }
}

sluicegate_guest::export_map!(Decode);
