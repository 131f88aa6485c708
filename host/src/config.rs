//! Pipeline files: the TOML an operator writes, deserialised with serde and validated before
//! anything runs (unknown keys, missing files, duplicate names, bad values), with errors that
//! name the file, the line where serde knows it, and the stage.
//!
//! ```toml
//! name = "market"
//!
//! [source]                      # optional: without it the first stage is the source
//! kind = "generate"             # generate | file | stdin
//! records = 100000
//!
//! [[stage]]
//! name = "decode"
//! component = "builtin:decode"  # or a path to a .wasm, relative to this file
//! config = { window = 32 }      # handed to the stage by host.config
//!
//! [sink]
//! kind = "discard"              # discard | file | stdout
//! credits = 256                 # the demand window the sink grants per resume
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::builtin;
use crate::error::{Error, Result};

/// Credits the sink grants per resume unless the file says otherwise.
pub const DEFAULT_CREDITS: u32 = 256;

/// A pipeline: an optional host-native source, stages in order, a sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// A name for reports; defaults to the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Where records come from; without it, the first stage is the source.
    #[serde(default)]
    pub source: Option<SourceSpec>,
    /// The stages, upstream first.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// Where records go, and how much demand is granted.
    #[serde(default)]
    pub sink: SinkSpec,
    /// Fused mode: compose every stage into one component (`docs/benchmarks.md` has what it
    /// buys; `host/src/fuse.rs` what the host stops checking between the stages). Each stage
    /// keeps its own configuration; they share one store and run under the last stage's
    /// limits; restart, bypass and dead letters are not available.
    #[serde(default)]
    pub fused: bool,
}

/// A host-native source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceSpec {
    /// The synthetic market feed (raw text ticks), the same as the `tick-source` stage.
    Generate {
        /// Ticks to emit (100000).
        #[serde(default = "default_records")]
        records: u64,
        /// Seed (42).
        #[serde(default = "default_seed")]
        seed: u64,
        /// Number of symbols (64).
        #[serde(default = "default_symbols")]
        symbols: usize,
    },
    /// Records read from a file.
    File {
        /// The file, relative to the pipeline file.
        path: PathBuf,
        /// How records are delimited.
        #[serde(default)]
        format: RecordFormat,
    },
    /// Records read from standard input.
    Stdin {
        /// How records are delimited.
        #[serde(default)]
        format: RecordFormat,
    },
}

fn default_records() -> u64 {
    100_000
}
fn default_seed() -> u64 {
    42
}
fn default_symbols() -> usize {
    64
}

/// How records are laid out in a file or stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordFormat {
    /// One record per line (the newline is not part of the record).
    #[default]
    Lines,
    /// Records framed with a little-endian u32 length, as in a chunk.
    Framed,
}

/// One stage of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique name, used in every log line, error and report about the stage.
    pub name: String,
    /// `builtin:NAME` for an embedded example stage, or a `.wasm` path relative to the file.
    pub component: String,
    /// Key/value configuration handed to the stage (`host.config`), in file order.
    #[serde(default)]
    pub config: toml::Table,
    /// Resource limits; anything not given takes the safe default.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Give the stage real clocks and host randomness instead of virtual, seeded ones.
    #[serde(default)]
    pub real_time_and_random: bool,
    /// What to do when the stage faults: `fail` (default), `restart`, or `bypass` (only for
    /// stages declared `optional`).
    #[serde(default)]
    pub on_fault: OnFault,
    /// Restarts allowed under `on_fault = "restart"` (3).
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// Backoff before the first restart, in milliseconds, doubled each time (10).
    #[serde(default = "default_restart_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// The pipeline is still correct without this stage (a monitor, an enricher): it may
    /// be bypassed after a fault.
    #[serde(default)]
    pub optional: bool,
    /// File receiving, framed, the input of calls that faulted before a restart (relative
    /// to the pipeline file). Without it such records are counted and logged only.
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
}

/// The fault policies a pipeline file can name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFault {
    /// Stop the pipeline cleanly, close the other stages, report.
    #[default]
    Fail,
    /// Replace the instance with a fresh one and go on.
    Restart,
    /// Take an optional stage out of the chain and go on.
    Bypass,
}

fn default_max_restarts() -> u32 {
    crate::stage::supervise::DEFAULT_MAX_RESTARTS
}

fn default_restart_backoff_ms() -> u64 {
    crate::stage::supervise::DEFAULT_RESTART_BACKOFF.as_millis() as u64
}

impl StageSpec {
    /// The fault policy these settings describe.
    pub fn fault_policy(&self) -> crate::stage::FaultPolicy {
        match self.on_fault {
            OnFault::Fail => crate::stage::FaultPolicy::Fail,
            OnFault::Restart => crate::stage::FaultPolicy::Restart {
                max_restarts: self.max_restarts,
                backoff: std::time::Duration::from_millis(self.restart_backoff_ms),
            },
            OnFault::Bypass => crate::stage::FaultPolicy::Bypass,
        }
    }
}

/// Per-stage resource limits, as written in the file. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// CPU budget of one call (the thread's CPU time), in milliseconds.
    pub cpu_ms: Option<u64>,
    /// Wall-clock time one call may spend blocked in WASI waits (a sleep, a poll), in
    /// milliseconds.
    pub wall_ms: Option<u64>,
    /// CPU budget of each half of a hot swap's state handoff, in milliseconds.
    pub handoff_cpu_ms: Option<u64>,
    /// Deterministic fuel budget of one call.
    pub fuel: Option<u64>,
    /// Linear memory cap, in MiB.
    pub memory_mib: Option<u64>,
    /// Largest chunk the stage may answer, in bytes.
    pub max_chunk_bytes: Option<u64>,
    /// Most records asked of the stage in one call (larger grants are clamped).
    pub max_chunk_records: Option<u32>,
    /// Most records one of the stage's pulls asks of its upstream (larger pulls are clamped).
    pub max_pull_records: Option<u32>,
    /// Log lines per second the stage may emit (the rest are counted, not logged).
    pub log_lines_per_s: Option<u32>,
}

/// Where records end up.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
pub enum SinkKind {
    /// Count and checksum the records, keep nothing.
    #[default]
    Discard,
    /// Write the records to `path`.
    File,
    /// Write the records to standard output.
    Stdout,
}

impl LimitsSpec {
    /// The limits these settings describe, defaults filled in.
    pub fn to_limits(&self) -> crate::limits::Limits {
        let d = crate::limits::Limits::default();
        crate::limits::Limits {
            cpu_per_call: self
                .cpu_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(d.cpu_per_call),
            fuel_per_call: self.fuel,
            memory_bytes: self
                .memory_mib
                .map(|mib| usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX))
                .unwrap_or(d.memory_bytes),
            max_chunk_bytes: self
                .max_chunk_bytes
                .map(|b| usize::try_from(b).unwrap_or(usize::MAX))
                .unwrap_or(d.max_chunk_bytes),
            max_chunk_records: self.max_chunk_records,
            max_pull_records: self.max_pull_records.unwrap_or(d.max_pull_records),
            log_lines_per_s: self.log_lines_per_s.unwrap_or(d.log_lines_per_s),
            wall_per_call: self
                .wall_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(d.wall_per_call),
            cpu_per_handoff: self
                .handoff_cpu_ms
                .map(std::time::Duration::from_millis)
                .unwrap_or(d.cpu_per_handoff),
        }
    }
}

impl PipelineSpec {
    /// True if any stage has a fuel budget (the engine must then meter fuel).
    pub fn needs_fuel(&self) -> bool {
        self.stages.iter().any(|s| s.limits.fuel.is_some())
    }

    /// Reads and validates a pipeline file.
    pub fn from_file(path: &Path) -> Result<PipelineSpec> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let mut spec = Self::from_toml(&text, path)?;
        if spec.name.is_none() {
            spec.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(spec)
    }

    /// Parses and validates pipeline TOML; `origin` names it in errors and anchors relative
    /// paths (its parent directory).
    pub fn from_toml(text: &str, origin: &Path) -> Result<PipelineSpec> {
        let spec: PipelineSpec = toml::from_str(text).map_err(|e| Error::Config {
            file: origin.display().to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        spec.validate(origin)?;
        Ok(spec)
    }

    /// Sets how many records the source emits: the `generate` source's count, or else the
    /// first stage's `records` config (the convention of source stages).
    pub fn set_records(&mut self, records: u64) {
        match (&mut self.source, self.stages.first_mut()) {
            (Some(SourceSpec::Generate { records: r, .. }), _) => *r = records,
            (None, Some(first)) => {
                first
                    .config
                    .insert("records".into(), toml::Value::Integer(records as i64));
            }
            _ => {}
        }
    }

    /// Checks everything that can be checked before loading a component.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let file = origin.display().to_string();
        let fail = |message: String| Error::Config {
            file: file.clone(),
            message,
        };
        if self.source.is_none() && self.stages.is_empty() {
            return Err(fail(
                "the pipeline has neither a [source] nor any [[stage]]".into(),
            ));
        }
        let base = base_dir(origin);
        if self.fused {
            if let Some(stage) = self
                .stages
                .iter()
                .find(|s| s.dead_letter.is_some() || !matches!(s.on_fault, OnFault::Fail))
            {
                return Err(fail(format!(
                    "stage `{}`: a fused pipeline fails as one stage; `on_fault` other than \
                     \"fail\" and `dead_letter` are not available with `fused = true`",
                    stage.name
                )));
            }
            if self.stages.len() < 2 {
                return Err(fail("`fused = true` needs at least two stages".into()));
            }
        }
        let mut names = HashSet::new();
        for stage in &self.stages {
            if stage.name.trim().is_empty() {
                return Err(fail("a [[stage]] has an empty name".into()));
            }
            if !names.insert(stage.name.as_str()) {
                return Err(fail(format!(
                    "two stages are named `{}`; stage names must be unique",
                    stage.name
                )));
            }
            stage_config(stage).map_err(|m| fail(format!("stage `{}`: {m}", stage.name)))?;
            match resolve(&stage.component, &base) {
                ComponentRef::Builtin(name) if builtin::component(name).is_none() => {
                    let known: Vec<&str> = builtin::names().collect();
                    return Err(fail(format!(
                        "stage `{}`: no builtin stage `{name}`; builtins are {}",
                        stage.name,
                        known.join(", ")
                    )));
                }
                ComponentRef::File(path) if !path.is_file() => {
                    return Err(fail(format!(
                        "stage `{}`: component file {} does not exist",
                        stage.name,
                        path.display()
                    )));
                }
                _ => {}
            }
            if stage.on_fault == OnFault::Bypass && !stage.optional {
                return Err(fail(format!(
                    "stage `{}`: on_fault = \"bypass\" needs `optional = true`: only a stage the \
                     pipeline is correct without may be taken out",
                    stage.name
                )));
            }
            if stage.on_fault == OnFault::Restart && stage.max_restarts == 0 {
                return Err(fail(format!(
                    "stage `{}`: on_fault = \"restart\" with max_restarts = 0 never restarts",
                    stage.name
                )));
            }
            let limits = &stage.limits;
            for (key, value) in [
                ("cpu_ms", limits.cpu_ms),
                ("wall_ms", limits.wall_ms),
                ("handoff_cpu_ms", limits.handoff_cpu_ms),
                ("max_pull_records", limits.max_pull_records.map(u64::from)),
                ("fuel", limits.fuel),
                ("memory_mib", limits.memory_mib),
                ("max_chunk_bytes", limits.max_chunk_bytes),
                ("max_chunk_records", limits.max_chunk_records.map(u64::from)),
                ("log_lines_per_s", limits.log_lines_per_s.map(u64::from)),
            ] {
                if value == Some(0) {
                    return Err(fail(format!(
                        "stage `{}`: limits.{key} must be greater than 0",
                        stage.name
                    )));
                }
            }
        }
        if let Some(SourceSpec::File { path, .. }) = &self.source
            && !base.join(path).is_file()
        {
            return Err(fail(format!(
                "source file {} does not exist",
                base.join(path).display()
            )));
        }
        if self.sink.credits == 0 {
            return Err(fail(
                "sink.credits must be greater than 0 (it is the demand window)".into(),
            ));
        }
        if self.sink.kind == SinkKind::File && self.sink.path.is_none() {
            return Err(fail("a sink of kind \"file\" needs a `path`".into()));
        }
        Ok(())
    }
}

/// Where a stage's component comes from.
pub(crate) enum ComponentRef<'a> {
    Builtin(&'a str),
    File(PathBuf),
}

pub(crate) fn resolve<'a>(component: &'a str, base: &Path) -> ComponentRef<'a> {
    match component.strip_prefix(builtin::SCHEME) {
        Some(name) => ComponentRef::Builtin(name),
        None => ComponentRef::File(base.join(component)),
    }
}

/// The directory relative paths in a pipeline file are anchored to.
pub(crate) fn base_dir(origin: &Path) -> PathBuf {
    origin
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The stage's configuration as the key/value strings the guest receives: scalars as text,
/// arrays as comma-separated text; nested tables are refused.
pub(crate) fn stage_config(
    stage: &StageSpec,
) -> std::result::Result<Vec<(String, String)>, String> {
    stage
        .config
        .iter()
        .map(|(key, value)| Ok((key.clone(), config_value(key, value)?)))
        .collect()
}

fn config_value(key: &str, value: &toml::Value) -> std::result::Result<String, String> {
    Ok(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| config_value(key, item))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .join(","),
        toml::Value::Table(_) => {
            return Err(format!(
                "config `{key}` is a table; stage config values must be scalars or arrays"
            ));
        }
    })
}
