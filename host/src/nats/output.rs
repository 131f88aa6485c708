//! Publishing a partition's output to JetStream. Every record is published with a
//! `Nats-Msg-Id` that a replay of the same input gives again: the consumer, the partition, and
//! the record's ordinal among everything the partition ever published (a checkpoint keeps the
//! count it had reached). Stages are deterministic (virtual clocks, seeded randomness), so a
//! partition that replays from a checkpoint republishes the same records under the same ids,
//! wherever its later checkpoints fall, and the stream's duplicate window drops them. A publish counts only once the server acknowledged
//! it; [`NatsOutput::flush`] waits for every acknowledgement (a checkpoint calls it first).

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::stream;

use super::Nats;
use crate::chunk::Chunk;
use crate::config::NatsSink;
use crate::error::Result;

/// Publishes awaited together: more in flight wait for the oldest first.
const MAX_IN_FLIGHT: usize = 1024;

/// How long the stream remembers a message id (JetStream's own default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A record published and not yet acknowledged: kept to publish again if the server lost it.
struct InFlight {
    subject: String,
    id: String,
    payload: bytes::Bytes,
    ack: Option<PublishAckFuture>,
}

/// A sink's (or one partition's) publisher.
pub(crate) struct NatsOutput {
    nats: Arc<Nats>,
    subject: String,
    key: Option<(u8, usize)>,
    /// `<run or consumer>.<partition>`: the part of every id this publisher shares.
    ids: String,
    /// The ordinal of the next record: how many this publisher's partition published before.
    ordinal: u64,
    in_flight: VecDeque<InFlight>,
}

impl NatsOutput {
    /// Connects, creating the sink's stream if it names one that does not exist.
    pub(crate) fn open(settings: &NatsSink) -> Result<NatsOutput> {
        let nats = Nats::connect(
            &settings.url,
            "sink",
            Duration::from_millis(settings.server_timeout_ms),
        )?;
        if let Some(name) = &settings.stream {
            let subjects = match settings.key {
                Some(_) => vec![format!("{}.*", settings.subject)],
                None => vec![settings.subject.clone(), format!("{}.>", settings.subject)],
            };
            let subject_transform = settings.partitions.map(|n| stream::SubjectTransform {
                source: format!("{}.*", settings.subject),
                destination: format!(
                    "{}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}",
                    settings
                        .partitioned
                        .clone()
                        .unwrap_or_else(|| format!("{}.p", settings.subject))
                ),
            });
            let config = stream::Config {
                name: name.clone(),
                subjects,
                subject_transform,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            let js = nats.js.clone();
            nats.retry(&format!("creating stream `{name}`"), || {
                js.get_or_create_stream(config.clone())
            })?;
        }
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Ok(NatsOutput {
            nats,
            subject: settings.subject.clone(),
            key: settings
                .key
                .as_ref()
                .map(|key| (settings.delimiter(), key.field)),
            ids: format!("run{run:x}"),
            ordinal: 0,
            in_flight: VecDeque::new(),
        })
    }

    /// Ids start with `prefix` instead of this run's own: a pipeline that reads NATS names its
    /// consumer, so that a replay on any host publishes the same ids.
    pub(crate) fn name_ids(&mut self, prefix: &str) {
        self.ids = prefix.to_string();
    }

    /// The same connection and subject, publishing ids of its own: `<prefix>.<replica>`.
    pub(crate) fn replica(&self, replica: usize) -> NatsOutput {
        NatsOutput {
            nats: self.nats.clone(),
            subject: self.subject.clone(),
            key: self.key,
            ids: format!("{}.{replica}", self.ids),
            ordinal: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// The next record is the partition's `ordinal`-th (a checkpoint's count, when the
    /// partition starts from it).
    pub(crate) fn count_from(&mut self, ordinal: u64) {
        self.ordinal = ordinal;
    }

    /// How many records the partition has published (or handed over to publish).
    pub(crate) fn published(&self) -> u64 {
        self.ordinal
    }

    /// Publishes every record of `chunk` (waiting for the oldest acknowledgements once
    /// [`MAX_IN_FLIGHT`] are outstanding).
    pub(crate) fn publish(&mut self, chunk: &Chunk) -> Result<()> {
        for record in chunk.records() {
            let subject = match self.key {
                Some((delimiter, field)) => {
                    format!(
                        "{}.{}",
                        self.subject,
                        subject_token(record, delimiter, field)
                    )
                }
                None => self.subject.clone(),
            };
            let id = format!("{}.{}", self.ids, self.ordinal);
            self.ordinal += 1;
            let mut message = InFlight {
                subject,
                id,
                payload: bytes::Bytes::copy_from_slice(record),
                ack: None,
            };
            self.send(&mut message)?;
            self.in_flight.push_back(message);
            while self.in_flight.len() > MAX_IN_FLIGHT {
                self.settle_oldest()?;
            }
        }
        Ok(())
    }

    /// Waits until the server acknowledged every record published so far.
    pub(crate) fn flush(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_oldest()?;
        }
        Ok(())
    }

    fn send(&self, message: &mut InFlight) -> Result<()> {
        let js = self.nats.js.clone();
        let ack = self
            .nats
            .retry(&format!("publishing to `{}`", message.subject), || {
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, message.id.as_str());
                js.publish_with_headers(message.subject.clone(), headers, message.payload.clone())
            })?;
        message.ack = Some(ack);
        Ok(())
    }

    /// Waits for the oldest publish's acknowledgement, publishing it again (same id: the
    /// stream keeps one) while the server does not acknowledge it.
    fn settle_oldest(&mut self) -> Result<()> {
        let Some(mut message) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let deadline = self.nats.deadline();
        loop {
            let Some(ack) = message.ack.take() else {
                self.send(&mut message)?;
                continue;
            };
            match self.nats.block_on(ack.into_future()) {
                Ok(_) => return Ok(()),
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::warn!(
                        "sink: no acknowledgement for a record published to `{}` ({e}); \
                         publishing it again",
                        message.subject
                    );
                    self.send(&mut message)?;
                }
                Err(e) => {
                    return Err(self.nats.error(format!(
                        "the server did not acknowledge a record published to `{}`: {e}",
                        message.subject
                    )));
                }
            }
        }
    }
}

/// The record's subject token: field `field` between `delimiter`s, with what NATS does not
/// allow in a token (dots, spaces, wildcards) replaced by `_`, and `_` for an empty key.
fn subject_token(record: &[u8], delimiter: u8, field: usize) -> String {
    let key = record.split(|&b| b == delimiter).nth(field).unwrap_or(&[]);
    if key.is_empty() {
        return "_".into();
    }
    String::from_utf8_lossy(key)
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>') {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_token_is_the_field_with_what_nats_refuses_replaced() {
        assert_eq!(subject_token(b"1,2,AAPL,3", b',', 2), "AAPL");
        assert_eq!(subject_token(b"1,2,BRK.B,3", b',', 2), "BRK_B");
        assert_eq!(subject_token(b"1,2", b',', 2), "_");
        assert_eq!(subject_token(b"a b>*", b',', 0), "a_b__");
    }
}
