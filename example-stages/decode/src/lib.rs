//! A 1:1 map that may drop: decodes raw text ticks into 40-byte binary ticks and drops
//! malformed lines, logging how many at close. Shows [`Map`], logging and cleanup. On a hot
//! swap its counts go to the next version as the text `decoded,dropped`, the same state the
//! JavaScript decoder (`example-stages/js-decode`) hands over, so either can replace the other
//! live.

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
        let message = format!("decoder closed: decoded {decoded}, dropped {dropped}");
        log_with(Level::Info, &message, &fields);
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(format!("{},{}", self.decoded, self.dropped).into_bytes())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let counts = std::str::from_utf8(state)
            .ok()
            .and_then(|text| text.split_once(','))
            .and_then(|(decoded, dropped)| Some((decoded.parse().ok()?, dropped.parse().ok()?)));
        let (decoded, dropped) = counts.ok_or("the state is not a decoder's `decoded,dropped`")?;
        (self.decoded, self.dropped) = (decoded, dropped);
        Ok(())
    }
}

sluicegate_guest::export_map!(Decode);
