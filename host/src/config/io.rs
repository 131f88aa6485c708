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
}
