//! The ends of a pipeline in a pipeline file: its `[source]` (the library's `file` and
//! `stdin`, or a kind the program adds) and its `[sink]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Credits the sink grants per resume unless the file says otherwise.
pub const DEFAULT_CREDITS: u32 = 256;

/// A host-native source: `kind` and the kind's settings (the table's other keys). The library
/// reads `file` and `stdin`; a program running pipelines may add kinds of its own
/// ([`PipelineBuilder::source_kind`](crate::PipelineBuilder::source_kind)): the `sluicegate`
/// command adds `generate`, the synthetic market feed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[non_exhaustive]
pub struct SourceSpec {
    /// `file`, `stdin`, or a kind added by the program running the pipeline.
    pub kind: String,
    /// The kind's settings.
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// The settings of a `file` source: `path` (relative to the pipeline file) and `format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileSource {
    pub(crate) path: PathBuf,
    #[serde(default)]
    pub(crate) format: RecordFormat,
}

/// The settings of a `stdin` source: `format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StdinSource {
    #[serde(default)]
    pub(crate) format: RecordFormat,
}

/// The source kinds the library reads itself.
pub(crate) const FILE: &str = "file";
/// See [`FILE`].
pub(crate) const STDIN: &str = "stdin";

impl SourceSpec {
    /// The settings as the typed settings `T` of a kind, naming the kind in an error.
    pub fn settings<T: serde::de::DeserializeOwned>(&self) -> std::result::Result<T, String> {
        toml::Value::Table(self.settings.clone())
            .try_into()
            .map_err(|e| format!("[source] of kind `{}`: {e}", self.kind))
    }
}

/// How records are laid out in a file or stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecordFormat {
    /// One record per line (the newline is not part of the record).
    #[default]
    Lines,
    /// Records framed with a little-endian u32 length, as in a chunk.
    Framed,
}

/// Where records end up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SinkSpec {
    /// What to do with records.
    #[serde(default)]
    pub kind: SinkKind,
    /// The output file (for `kind = "file"`), relative to the pipeline file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// How records are written (for `file` and `stdout`).
    #[serde(default)]
    pub format: RecordFormat,
    /// Credits granted per resume: the most records in flight at once.
    #[serde(default = "default_credits")]
    pub credits: u32,
    /// Fail the run when no record reaches the sink for this long although demand is granted
    /// (a stage answering empty chunks forever); 0 disables the watchdog.
    #[serde(default = "default_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// For `kind = "nats"`: the server, `nats://host:port`.
    #[serde(default)]
    pub url: Option<String>,
    /// For `kind = "nats"`: the subject, or with `key` the prefix of `<subject>.<key>`.
    #[serde(default)]
    pub subject: Option<String>,
    /// For `kind = "nats"`: where a text record's subject key is.
    #[serde(default)]
    pub key: Option<super::nats::SubjectKey>,
    /// For `kind = "nats"`: a stream to create on the subject if it does not exist.
    #[serde(default)]
    pub stream: Option<String>,
    /// For `kind = "nats"`, with `stream` and `key`: the stream's partitions.
    #[serde(default)]
    pub partitions: Option<u32>,
    /// For `kind = "nats"`, with `partitions`: the prefix of the partitioned subjects.
    #[serde(default)]
    pub partitioned: Option<String>,
    /// For `kind = "nats"`: how long to wait for an unreachable server before failing.
    #[serde(default)]
    pub server_timeout_ms: Option<u64>,
}

impl SinkSpec {
    /// The settings of a `nats` sink, or what is missing.
    pub(crate) fn nats(&self) -> std::result::Result<super::nats::NatsSink, String> {
        let need = |value: &Option<String>, key: &str| {
            value
                .clone()
                .ok_or_else(|| format!("a sink of kind \"nats\" needs a `{key}`"))
        };
        let sink = super::nats::NatsSink {
            url: need(&self.url, "url")?,
            subject: need(&self.subject, "subject")?,
            key: self.key.clone(),
            stream: self.stream.clone(),
            partitions: self.partitions,
            partitioned: self.partitioned.clone(),
            server_timeout_ms: self
                .server_timeout_ms
                .unwrap_or(super::nats::SERVER_TIMEOUT_MS),
        };
        sink.check()?;
        Ok(sink)
    }
}

/// Default of `sink.stall_timeout_ms`: 10 seconds.
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 10_000;

fn default_stall_timeout_ms() -> u64 {
    DEFAULT_STALL_TIMEOUT_MS
}

fn default_credits() -> u32 {
    DEFAULT_CREDITS
}

impl Default for SinkSpec {
    fn default() -> Self {
        SinkSpec {
            kind: SinkKind::default(),
            path: None,
            format: RecordFormat::default(),
            credits: DEFAULT_CREDITS,
            stall_timeout_ms: DEFAULT_STALL_TIMEOUT_MS,
            url: None,
            subject: None,
            key: None,
            stream: None,
            partitions: None,
            partitioned: None,
            server_timeout_ms: None,
        }
    }
}

/// The kinds of sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SinkKind {
    /// Count and checksum the records, keep nothing.
    #[default]
    Discard,
    /// Write the records to `path`.
    File,
    /// Write the records to standard output.
    Stdout,
    /// Publish every record to NATS JetStream, each publish acknowledged (docs/scale-out.md).
    Nats,
}
