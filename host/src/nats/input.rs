//! A partition's input: its durable pull consumer, read with the chain's demand. A pull of
//! `n` records fetches at most `n` messages (what the stream has now), so nothing is taken
//! from the server that no stage asked for; when there is nothing, it waits up to
//! `fetch_wait_ms` for one message before it answers "nothing now". The last message handed
//! to the chain is the partition's [`Position`]: a checkpoint covers the input up to it and
//! then acknowledges it (the consumer acknowledges everything up to an acknowledged message).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::message::Acker;
use futures_util::StreamExt;

use super::{Hold, Nats};
use crate::chunk::Chunk;
use crate::config::NatsSource;
use crate::error::Result;
use crate::upstream::{Demand, Upstream};

/// How long the server keeps a message unacknowledged before it offers it again. A partition
/// has one reader, which acknowledges at every checkpoint; this is only the server's bound.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// The last input message of a partition handed to its chain: its stream sequence and the
/// handle that acknowledges it (and so every message before it).
#[derive(Default)]
pub(crate) struct Position {
    inner: Mutex<(u64, Option<Acker>)>,
    /// With `drain`: the last pull found nothing and the stream holds nothing more for the
    /// partition.
    drained: AtomicBool,
}

impl Position {
    /// Starts at `sequence` (a checkpoint's), with nothing to acknowledge.
    pub(crate) fn at(sequence: u64) -> Arc<Self> {
        Arc::new(Position {
            inner: Mutex::new((sequence, None)),
            drained: AtomicBool::new(false),
        })
    }

    /// The stream sequence of the last message handed to the chain.
    pub(crate) fn sequence(&self) -> u64 {
        self.inner.lock().map(|p| p.0).unwrap_or(0)
    }

    /// True once a `drain` partition has read everything its stream held: the chain then
    /// answers nothing, and the run ends without telling the stages the stream ended (more
    /// may be published; the next run goes on from the checkpoint).
    pub(crate) fn drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    fn advance(&self, sequence: u64, acker: Acker) {
        if let Ok(mut position) = self.inner.lock() {
            *position = (sequence, Some(acker));
        }
    }

    /// Takes the handle that acknowledges everything up to the current sequence.
    pub(crate) fn take_acker(&self) -> Option<Acker> {
        self.inner.lock().ok().and_then(|mut p| p.1.take())
    }
}

/// One message fetched and not yet handed to the chain (a pull's byte bound kept it back).
struct Held {
    sequence: u64,
    /// The consumer's own sequence of this delivery: one more than the last, unless
    /// deliveries were lost on the way (a connection that broke mid-fetch).
    delivery: u64,
    payload: bytes::Bytes,
    acker: Acker,
}

/// A partition's consumer as the upstream of the partition's first stage.
pub(crate) struct NatsInput {
    nats: Arc<Nats>,
    settings: NatsSource,
    consumer: Option<PullConsumer>,
    /// The consumer sequence the next delivery must have.
    next_delivery: u64,
    held: VecDeque<Held>,
    position: Arc<Position>,
    wait: Duration,
    partition: u32,
    /// This host's lease on the partition: nothing is fetched, and the consumer is not
    /// recreated, once it may have run out (N5).
    hold: Arc<Hold>,
}

impl NatsInput {
    /// Partition `partition`'s input, delivering from just after `position`'s sequence (the
    /// last checkpoint's).
    pub(crate) fn open(
        nats: Arc<Nats>,
        settings: &NatsSource,
        partition: u32,
        position: Arc<Position>,
        hold: Arc<Hold>,
    ) -> Result<Self> {
        let mut input = NatsInput {
            hold,
            nats,
            settings: settings.clone(),
            consumer: None,
            next_delivery: 1,
            held: VecDeque::new(),
            position,
            wait: Duration::from_millis(settings.fetch_wait_ms),
            partition,
        };
        input.reopen()?;
        Ok(input)
    }

    /// (Re)creates the partition's durable consumer so that it delivers from just after the
    /// last message handed to the chain, whatever it delivered before: a new owner must not
    /// read newer messages ahead of those its predecessor never covered (N4), and after a
    /// broken connection nothing delivered into it may be skipped.
    fn reopen(&mut self) -> Result<()> {
        self.check_hold()?;
        let settings = &self.settings;
        let name = format!("{}-{}", settings.consumer, self.partition);
        let after = self.position.sequence();
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{}.{}.>", settings.subjects, self.partition),
            deliver_policy: if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ack_policy: AckPolicy::All,
            // Longer than two checkpoints apart: the server offers nothing again meanwhile.
            ack_wait: ACK_WAIT.max(Duration::from_millis(
                settings.checkpoint_ms.saturating_mul(2) + settings.lease_ms,
            )),
            // Acknowledgements wait for checkpoints: no bound on how many are pending.
            max_ack_pending: -1,
            ..Default::default()
        };
        let js = self.nats.js.clone();
        let stream = self
            .nats
            .retry(&format!("opening stream `{}`", settings.stream), || {
                js.get_stream(settings.stream.clone())
            })?;
        // Each attempt deletes the consumer first (that fails when there is none: fine), so
        // an attempt cut short between the two does not leave the old one in the way.
        let consumer: PullConsumer =
            self.nats
                .retry(&format!("creating consumer `{name}`"), || async {
                    let _ = stream.delete_consumer(&name).await;
                    stream.create_consumer(config.clone()).await
                })?;
        self.consumer = Some(consumer);
        self.next_delivery = 1;
        self.held.clear();
        Ok(())
    }

    /// Fetches up to `n` messages into `held`: what the stream has now, or else the first one
    /// to arrive within the wait. `false` if there were none. A fetch that fails is retried
    /// (for up to `server_timeout_ms`) on a consumer reopened at the position, so nothing
    /// that was delivered into a broken connection is skipped.
    fn fetch(&mut self, n: usize, bytes: usize) -> Result<bool> {
        self.check_hold()?;
        // A fetch's byte bound stops the server at the first message over it, so it never goes
        // below what one message may be; the demand's own bound is kept exactly when the
        // messages are handed over.
        let max_bytes = bytes.clamp(MIN_FETCH_BYTES, i32::MAX as usize);
        let deadline = self.nats.deadline();
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = match &self.consumer {
                Some(consumer) => {
                    let (wait, limit) = (self.wait, self.wait + FETCH_TIMEOUT);
                    self.nats
                        .block_on(async {
                            tokio::time::timeout(
                                limit,
                                fetch_now_or_wait(consumer, (n, max_bytes), wait),
                            )
                            .await
                        })
                        .unwrap_or_else(|_| Err("timed out".into()))
                }
                None => Err("no consumer".into()),
            };
            let error = match attempt {
                Ok(messages) => return self.accept(messages),
                Err(e) => e.to_string(),
            };
            if std::time::Instant::now() + backoff >= deadline {
                return Err(self.nats.error(format!(
                    "fetching partition {}'s messages: {error}",
                    self.partition
                )));
            }
            tracing::warn!(
                "source: fetching partition {}'s messages failed ({error}); retrying",
                self.partition
            );
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(1));
            self.consumer = None;
            self.reopen()?;
        }
    }

    /// Fails once this host may no longer hold the partition: another host may be reading it.
    fn check_hold(&self) -> Result<()> {
        if self.hold.valid() {
            return Ok(());
        }
        self.hold.lose();
        Err(crate::error::Error::Io {
            stage: format!("partition#{}", self.partition),
            message: format!(
                "this host no longer holds partition {} (its lease ran out); it stops reading",
                self.partition
            ),
        })
    }

    /// Keeps the fetched messages that come next: a gap in the consumer's deliveries (lost in
    /// a broken connection) reopens the consumer at the position and drops what came after it;
    /// a message already seen (offered again) is dropped.
    fn accept(&mut self, messages: Vec<Held>) -> Result<bool> {
        let mut found = false;
        for message in messages {
            if message.delivery != self.next_delivery {
                tracing::warn!(
                    "source: partition {}'s deliveries skipped from {} to {}; reading again \
                     from after stream sequence {}",
                    self.partition,
                    self.next_delivery,
                    message.delivery,
                    self.position.sequence()
                );
                self.reopen()?;
                return Ok(false);
            }
            self.next_delivery += 1;
            let seen = self
                .held
                .back()
                .map_or(self.position.sequence(), |last| last.sequence);
            if message.sequence > seen {
                self.held.push_back(message);
                found = true;
            }
        }
        Ok(found)
    }

    /// True when the consumer has delivered everything its stream holds for the partition.
    fn drained(&self) -> Result<bool> {
        let what = format!("reading partition {}'s consumer", self.partition);
        let Some(consumer) = &self.consumer else {
            return Ok(false);
        };
        let pending = self.nats.retry(&what, || {
            let mut consumer = consumer.clone();
            async move { consumer.info().await.map(|info| info.num_pending) }
        })?;
        Ok(pending == 0)
    }
}

/// The least byte bound of a fetch: more than a NATS message may be by default (1 MiB).
const MIN_FETCH_BYTES: usize = 2 << 20;

/// What a fetch may take beyond its wait before it counts as failed.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Up to `n` messages (in about `max_bytes`) the stream has now, or else the first to arrive
/// within `wait`.
async fn fetch_now_or_wait(
    consumer: &PullConsumer,
    (n, max_bytes): (usize, usize),
    wait: Duration,
) -> std::result::Result<Vec<Held>, async_nats::Error> {
    let mut batch = consumer
        .fetch()
        .max_messages(n)
        .max_bytes(max_bytes)
        .messages()
        .await?;
    let now = collect(&mut batch).await?;
    if !now.is_empty() {
        return Ok(now);
    }
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(wait)
        .messages()
        .await?;
    collect(&mut batch).await
}

/// True when partition `partition`'s consumer exists and has neither a message to deliver nor
/// one delivered and unacknowledged: everything the stream holds for it is read and covered by
/// a checkpoint.
pub(crate) fn consumer_settled(nats: &Nats, settings: &NatsSource, partition: u32) -> bool {
    let name = format!("{}-{partition}", settings.consumer);
    nats.block_on(async {
        let Ok(stream) = nats.js.get_stream(settings.stream.clone()).await else {
            return false;
        };
        let Ok(info) = stream.consumer_info(&name).await else {
            return false;
        };
        info.num_pending == 0 && info.num_ack_pending == 0
    })
}

/// Every message of a fetched batch, with its stream sequence.
async fn collect(
    batch: &mut async_nats::jetstream::consumer::pull::Batch,
) -> std::result::Result<Vec<Held>, async_nats::Error> {
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        let message = message?;
        let info = message.info()?;
        let (sequence, delivery) = (info.stream_sequence, info.consumer_sequence);
        let (message, acker) = message.split();
        messages.push(Held {
            sequence,
            delivery,
            payload: message.payload,
            acker,
        });
    }
    Ok(messages)
}

impl Upstream for NatsInput {
    fn pull(&mut self, demand: Demand) -> Result<Option<Chunk>> {
        if demand.records == 0 {
            return Ok(Some(Chunk::empty()));
        }
        if self.held.is_empty() {
            let n = usize::try_from(demand.records).unwrap_or(usize::MAX);
            let found = self.fetch(n, demand.bytes)?;
            let drained = !found && self.settings.drain && self.drained()?;
            self.position.drained.store(drained, Ordering::Relaxed);
        }
        let mut chunk = Chunk::empty();
        while let Some(next) = self.held.front() {
            if !demand.admits(&chunk, next.payload.len()) {
                break;
            }
            let Some(message) = self.held.pop_front() else {
                break;
            };
            chunk.push(&message.payload);
            self.position.advance(message.sequence, message.acker);
        }
        Ok(Some(chunk))
    }
}
