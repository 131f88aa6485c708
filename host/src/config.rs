//! Pipeline files: the TOML an operator writes, deserialised with serde and validated before
//! anything runs (unknown keys, missing files, duplicate names, bad values), with errors that
//! name the file, the line where serde knows it, and the stage.
//!
//! ```toml
//! name = "market"
//!
//! [source]                      # optional: without it the first stage is the source
//! kind = "file"                 # file | stdin | a kind the program adds (`generate`)
//! path = "ticks.txt"
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

mod io;
mod nats;
mod partitions;
mod stage;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use self::io::{
    DEFAULT_CREDITS, DEFAULT_STALL_TIMEOUT_MS, RecordFormat, SinkKind, SinkSpec, SourceSpec,
};
pub(crate) use self::io::{FILE, FileSource, STDIN, StdinSource};
pub(crate) use self::nats::NATS;
pub use self::nats::{
    CHECKPOINT_MS, CHECKPOINT_RECORDS, FETCH_WAIT_MS, LEASE_MS, NatsSink, NatsSource,
    SERVER_TIMEOUT_MS, SubjectKey,
};
pub use self::partitions::{
    KeySpec, MAX_PARTITIONS, MAX_QUEUE_CHUNKS, MAX_SPILL_MIB, PartitionsSpec, QUEUE_CHUNKS,
    ROUTE_RECORDS, SPILL_MIB, default_spill_dir,
};
pub use self::stage::{BUILTIN, LimitsSpec, OnFault, StageSpec};
pub(crate) use self::stage::{ComponentRef, resolve, stage_config};
use crate::error::{Error, Result};

/// A pipeline: an optional host-native source, stages in order, a sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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
    /// Partitions: replicas of the stage chain on threads of their own, each record routed by
    /// its key (`docs/scale-out.md`). Needs a `[source]`.
    #[serde(default)]
    pub partitions: Option<PartitionsSpec>,
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

    /// Sets how many records the source emits: the `records` setting of a source of a kind
    /// other than `file` or `stdin` (the convention of generating sources), or else the first
    /// stage's `records` config (the convention of source stages).
    pub fn set_records(&mut self, records: u64) {
        let count = toml::Value::Integer(i64::try_from(records).unwrap_or(i64::MAX));
        match (&mut self.source, self.stages.first_mut()) {
            (Some(source), _) if source.kind != FILE && source.kind != STDIN => {
                source.settings.insert("records".into(), count);
            }
            (Some(_), _) => {}
            (None, Some(first)) => {
                first.config.insert("records".into(), count);
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
        if let Some(partitions) = &self.partitions {
            partitions.check().map_err(fail)?;
            if self.source.is_none() {
                return Err(fail(
                    "[partitions] routes the records of a [source]; this pipeline has none".into(),
                ));
            }
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
            check_stage(stage, &base).map_err(&fail)?;
        }
        if let Some(partitions) = &self.partitions {
            partitions.check_stages(&self.stages).map_err(&fail)?;
            if let Some(key) = &partitions.key.stage {
                check_stage(key, &base).map_err(|m| fail(format!("[partitions] key: {m}")))?;
            }
            let dir = partitions.spill_dir(&base);
            if partitions.spill_bytes() > 0 && !dir.is_dir() {
                return Err(fail(format!(
                    "[partitions] spill_dir {} is not a directory",
                    dir.display()
                )));
            }
        }
        match self.source.as_ref().map(|s| (s, s.kind.as_str())) {
            Some((source, FILE)) => {
                let FileSource { path, .. } = source.settings().map_err(&fail)?;
                if !base.join(&path).is_file() {
                    return Err(fail(format!(
                        "source file {} does not exist",
                        base.join(&path).display()
                    )));
                }
            }
            Some((source, STDIN)) => {
                source.settings::<StdinSource>().map_err(&fail)?;
            }
            Some((source, NATS)) => {
                source
                    .settings::<NatsSource>()
                    .and_then(|nats| nats.check())
                    .map_err(&fail)?;
                if self.partitions.is_some() {
                    return Err(fail(
                        "a nats source is partitioned by its stream (`partitions` in [source]);                          [partitions] routes the records of a single source"
                            .into(),
                    ));
                }
                if self.fused {
                    return Err(fail(
                        "a nats source checkpoints every stage's state; `fused = true` is not \
                         available with it"
                            .into(),
                    ));
                }
                if let Some(stage) = self.stages.iter().find(|s| s.real_time_and_random) {
                    return Err(fail(format!(
                        "stage `{}`: real_time_and_random is not available with a nats source: a \
                         partition replayed after a host's death must publish the same records \
                         again (docs/scale-out.md)",
                        stage.name
                    )));
                }
                if let Some(stage) = self.stages.iter().find(|s| s.on_fault == OnFault::Bypass) {
                    return Err(fail(format!(
                        "stage `{}`: on_fault = \"bypass\" is not available with a nats source \
                         (the records a bypassed stage's input holds are not in its partition's \
                         checkpoints); use \"restart\", which rolls the partition back to its \
                         checkpoint",
                        stage.name
                    )));
                }
            }
            // Another kind is checked when the pipeline is built, by the program that added it.
            _ => {}
        }
        if self.sink.credits == 0 {
            return Err(fail(
                "sink.credits must be greater than 0 (it is the demand window)".into(),
            ));
        }
        if self.sink.kind == SinkKind::File && self.sink.path.is_none() {
            return Err(fail("a sink of kind \"file\" needs a `path`".into()));
        }
        if self.sink.kind == SinkKind::Nats {
            self.sink.nats().map_err(&fail)?;
        }
        Ok(())
    }
}

/// What is wrong with one stage's settings, in one sentence naming it (every stage, and a
/// partitioned pipeline's key stage).
fn check_stage(stage: &StageSpec, base: &Path) -> std::result::Result<(), String> {
    stage_config(stage).map_err(|m| format!("stage `{}`: {m}", stage.name))?;
    // A `builtin:` name is checked when the pipeline is built, against the components
    // the program running it provides.
    match resolve(&stage.component, base) {
        ComponentRef::Builtin(_) => {}
        ComponentRef::File(path) if !path.is_file() => {
            return Err(format!(
                "stage `{}`: component file {} does not exist",
                stage.name,
                path.display()
            ));
        }
        _ => {}
    }
    if stage.on_fault == OnFault::Bypass && !stage.optional {
        return Err(format!(
            "stage `{}`: on_fault = \"bypass\" needs `optional = true`: only a stage the \
                 pipeline is correct without may be taken out",
            stage.name
        ));
    }
    if stage.on_fault == OnFault::Restart && stage.max_restarts == 0 {
        return Err(format!(
            "stage `{}`: on_fault = \"restart\" with max_restarts = 0 never restarts",
            stage.name
        ));
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
            return Err(format!(
                "stage `{}`: limits.{key} must be greater than 0",
                stage.name
            ));
        }
    }
    Ok(())
}

/// The directory relative paths in a pipeline file are anchored to.
pub(crate) fn base_dir(origin: &Path) -> PathBuf {
    origin
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
