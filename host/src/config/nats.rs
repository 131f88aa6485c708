//! The NATS JetStream ends of a pipeline file (docs/scale-out.md, "Across hosts"):
//! `[source] kind = "nats"`, one durable pull consumer per partition of a stream, and
//! `[sink] kind = "nats"`, publishing each record to a subject with its publish acknowledged.
//!
//! ```toml
//! [source]
//! kind = "nats"
//! url = "nats://127.0.0.1:4222"
//! stream = "MD"              # the input stream
//! subjects = "md.p"          # partition i is the subjects `md.p.<i>.>`
//! partitions = 8             # the stream's partitions (its subject transform's count)
//! consumer = "market"        # durable consumers `market-0` … `market-7`, checkpoints
//! checkpoint_records = 10000 # a checkpoint at least every 10,000 input records …
//! checkpoint_ms = 1000       # … and every second
//! drain = false              # true: end once every partition has read what the stream holds
//! lease_ms = 3000            # a dead host's partitions are taken over within about this
//!
//! [sink]
//! kind = "nats"
//! url = "nats://127.0.0.1:4222"
//! subject = "orders"         # or with `key`: `md.in.<the record's key>`
//! stream = "ORDERS"          # created if missing, on `subject` (and `subject.>`)
//! ```

use serde::{Deserialize, Serialize};

/// The source kind that reads a JetStream stream.
pub(crate) const NATS: &str = "nats";

/// Default of `checkpoint_records`.
pub const CHECKPOINT_RECORDS: u64 = 10_000;
/// Default of `checkpoint_ms`.
pub const CHECKPOINT_MS: u64 = 1_000;
/// Default of `server_timeout_ms`: how long the pipeline waits for an unreachable server
/// before it fails.
pub const SERVER_TIMEOUT_MS: u64 = 30_000;
/// Default of `lease_ms`: a dead host's partitions are taken over within about 3 s.
pub const LEASE_MS: u64 = 3_000;
/// The shortest `lease_ms`: a host renews three times per lease, and the server sweeps expired
/// entries about every 100 ms.
pub const MIN_LEASE_MS: u64 = 500;
/// The most `checkpoint_ms + lease_ms` may be: a replay after a host's death covers up to
/// that much time of output, which must fall within the output stream's duplicate window
/// (2 minutes, the JetStream default the sink creates streams with), with room to spare.
pub const MAX_REPLAY_MS: u64 = 100_000;
/// Default of `fetch_wait_ms`: how long a pull with nothing to fetch waits for a message before
/// it answers "nothing now".
pub const FETCH_WAIT_MS: u64 = 100;

/// The settings of a `nats` source.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSource {
    /// The server, `nats://host:port`.
    pub url: String,
    /// The stream holding the input.
    pub stream: String,
    /// The subjects' prefix: partition `i` reads `<subjects>.<i>.>`.
    pub subjects: String,
    /// How many partitions the stream has (its subject transform's `partition(N, …)`).
    pub partitions: u32,
    /// The name of this pipeline's consumers (`<consumer>-<i>`) and of its checkpoints.
    pub consumer: String,
    /// The key-value bucket of the checkpoints; default `sluicegate-checkpoints`.
    #[serde(default = "default_bucket")]
    pub checkpoint_bucket: String,
    /// Input records between two checkpoints of a partition, at most.
    #[serde(default = "default_checkpoint_records")]
    pub checkpoint_records: u64,
    /// Milliseconds between two checkpoints of a partition, at most.
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_ms: u64,
    /// End the run once every partition has read everything the stream held (a backfill);
    /// otherwise the run goes on until it is stopped.
    #[serde(default)]
    pub drain: bool,
    /// How long a pull waits for a message when there is none.
    #[serde(default = "default_fetch_wait_ms")]
    pub fetch_wait_ms: u64,
    /// How long the pipeline waits for an unreachable server before it fails.
    #[serde(default = "default_server_timeout_ms")]
    pub server_timeout_ms: u64,
    /// The key-value bucket of the hosts' leases; default `sluicegate-leases`.
    #[serde(default = "default_lease_bucket")]
    pub lease_bucket: String,
    /// How long a host's lease on a partition lasts unless renewed (it is renewed three times
    /// as often): a dead host's partitions are taken over within about this long.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
}

/// The NATS settings of a `[sink]` of kind `nats`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsSink {
    /// The server, `nats://host:port`.
    pub url: String,
    /// The subject records are published to; with `key`, the prefix of `<subject>.<key>`.
    pub subject: String,
    /// Publish each record to `<subject>.<key>`, its key read as `[partitions]` reads one:
    /// a field between delimiters (`{ delimiter = ",", field = 2 }`).
    #[serde(default)]
    pub key: Option<SubjectKey>,
    /// Create this stream if it does not exist, on `subject` (and `subject.>`).
    #[serde(default)]
    pub stream: Option<String>,
    /// With `stream` and `key`: the stream partitions its subjects into this many partitions,
    /// `<subject>.<key>` stored as `<partitioned>.<partition>.<key>`.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// With `partitions`: the prefix of the partitioned subjects; default `<subject>.p`.
    #[serde(default)]
    pub partitioned: Option<String>,
    /// How long the pipeline waits for an unreachable server before it fails.
    #[serde(default = "default_server_timeout_ms")]
    pub server_timeout_ms: u64,
}

/// Where in a text record its subject's last token is.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SubjectKey {
    /// The one-byte character between fields; default `,`.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// The key's field, counted from 0.
    pub field: usize,
}

fn default_bucket() -> String {
    "sluicegate-checkpoints".into()
}

fn default_lease_bucket() -> String {
    "sluicegate-leases".into()
}

fn default_lease_ms() -> u64 {
    LEASE_MS
}

fn default_checkpoint_records() -> u64 {
    CHECKPOINT_RECORDS
}

fn default_checkpoint_ms() -> u64 {
    CHECKPOINT_MS
}

fn default_fetch_wait_ms() -> u64 {
    FETCH_WAIT_MS
}

fn default_server_timeout_ms() -> u64 {
    SERVER_TIMEOUT_MS
}

impl NatsSource {
    /// What is wrong with the settings, in one sentence.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_url(&self.url, "[source]")?;
        check_name(&self.stream, "[source] stream")?;
        check_name(&self.consumer, "[source] consumer")?;
        check_name(&self.checkpoint_bucket, "[source] checkpoint_bucket")?;
        check_name(&self.lease_bucket, "[source] lease_bucket")?;
        if self.lease_bucket == self.checkpoint_bucket {
            return Err(
                "[source] lease_bucket and checkpoint_bucket must differ (leases expire, \
                        checkpoints must not)"
                    .into(),
            );
        }
        check_subject(&self.subjects, "[source] subjects")?;
        if !(1..=super::MAX_PARTITIONS).contains(&self.partitions) {
            return Err(format!(
                "[source] partitions is {}; it must be from 1 to {}",
                self.partitions,
                super::MAX_PARTITIONS
            ));
        }
        if self.lease_ms < MIN_LEASE_MS {
            return Err(format!(
                "[source] lease_ms is {}; it must be at least {MIN_LEASE_MS}",
                self.lease_ms
            ));
        }
        if self.checkpoint_ms.saturating_add(self.lease_ms) > MAX_REPLAY_MS {
            return Err(format!(
                "[source] checkpoint_ms + lease_ms is {} ms; at most {MAX_REPLAY_MS} ms: a host's \
                 death is replayed from up to that far back, and the replay must fall within the \
                 output stream's 2-minute duplicate window, or the stream keeps repeats",
                self.checkpoint_ms.saturating_add(self.lease_ms)
            ));
        }
        for (key, value) in [
            ("checkpoint_records", self.checkpoint_records),
            ("checkpoint_ms", self.checkpoint_ms),
            ("fetch_wait_ms", self.fetch_wait_ms),
            ("server_timeout_ms", self.server_timeout_ms),
            ("lease_ms", self.lease_ms),
        ] {
            if value == 0 {
                return Err(format!("[source] {key} must be greater than 0"));
            }
        }
        Ok(())
    }
}

impl NatsSink {
    /// What is wrong with the settings, in one sentence.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_url(&self.url, "[sink]")?;
        check_subject(&self.subject, "[sink] subject")?;
        if let Some(stream) = &self.stream {
            check_name(stream, "[sink] stream")?;
        }
        if let Some(key) = &self.key
            && key.delimiter.as_ref().is_some_and(|d| d.len() != 1)
        {
            return Err("[sink] key delimiter must be exactly one byte".into());
        }
        match (self.partitions, &self.stream, &self.key) {
            (Some(n), Some(_), Some(_)) if (1..=super::MAX_PARTITIONS).contains(&n) => {}
            (Some(n), Some(_), Some(_)) => {
                return Err(format!(
                    "[sink] partitions is {n}; it must be from 1 to {}",
                    super::MAX_PARTITIONS
                ));
            }
            (Some(_), _, _) => {
                return Err(
                    "[sink] partitions needs a `stream` to create and a `key` to partition by"
                        .into(),
                );
            }
            (None, _, _) => {}
        }
        if let Some(prefix) = &self.partitioned {
            check_subject(prefix, "[sink] partitioned")?;
        }
        if self.server_timeout_ms == 0 {
            return Err("[sink] server_timeout_ms must be greater than 0".into());
        }
        Ok(())
    }

    /// The key's delimiter as a byte.
    pub(crate) fn delimiter(&self) -> u8 {
        self.key
            .as_ref()
            .and_then(|k| k.delimiter.as_deref())
            .and_then(|d| d.as_bytes().first().copied())
            .unwrap_or(b',')
    }
}

fn check_url(url: &str, section: &str) -> Result<(), String> {
    if url.trim().is_empty() {
        return Err(format!(
            "{section} of kind \"nats\" needs a `url` (nats://host:port)"
        ));
    }
    Ok(())
}

/// A stream, consumer or bucket name: NATS refuses spaces, dots, `*`, `>`, slashes.
fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(format!(
            "{what} {name:?} is not a valid NATS name (no spaces, dots, `*`, `>` or slashes)"
        ));
    }
    Ok(())
}

/// A literal subject: dot-separated tokens without wildcards.
fn check_subject(subject: &str, what: &str) -> Result<(), String> {
    if subject.is_empty()
        || subject.split('.').any(|token| {
            token.is_empty()
                || token
                    .chars()
                    .any(|c| c.is_whitespace() || c == '*' || c == '>')
        })
    {
        return Err(format!(
            "{what} {subject:?} is not a literal NATS subject (dot-separated tokens, no \
             spaces or wildcards)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> NatsSource {
        toml::from_str(
            r#"url = "nats://127.0.0.1:4222"
stream = "MD"
subjects = "md.p"
partitions = 8
consumer = "market""#,
        )
        .expect("settings")
    }

    #[test]
    fn a_source_needs_valid_names_and_a_partition_count_in_range() {
        assert_eq!(source().check(), Ok(()));
        assert_eq!(source().checkpoint_records, CHECKPOINT_RECORDS);
        let mut bad = source();
        bad.partitions = 0;
        assert!(bad.check().is_err());
        let mut bad = source();
        bad.consumer = "my.consumer".into();
        assert!(bad.check().expect_err("refused").contains("consumer"));
        let mut bad = source();
        bad.subjects = "md.*".into();
        assert!(bad.check().expect_err("refused").contains("subjects"));
        let mut bad = source();
        bad.checkpoint_ms = 0;
        assert!(bad.check().expect_err("refused").contains("checkpoint_ms"));
        let mut bad = source();
        bad.checkpoint_ms = MAX_REPLAY_MS;
        assert!(
            bad.check()
                .expect_err("refused")
                .contains("duplicate window")
        );
        let mut bad = source();
        bad.lease_ms = MIN_LEASE_MS - 1;
        assert!(bad.check().expect_err("refused").contains("lease_ms"));
    }

    #[test]
    fn a_partitioned_sink_needs_a_stream_and_a_key() {
        let mut sink = NatsSink {
            url: "nats://127.0.0.1:4222".into(),
            subject: "md.in".into(),
            server_timeout_ms: SERVER_TIMEOUT_MS,
            partitions: Some(8),
            ..NatsSink::default()
        };
        assert!(sink.check().is_err());
        sink.stream = Some("MD".into());
        sink.key = Some(SubjectKey {
            delimiter: None,
            field: 2,
        });
        assert_eq!(sink.check(), Ok(()));
        sink.subject = "md in".into();
        assert!(sink.check().is_err());
    }
}
