//! One `[[stage]]` of a pipeline file: its component, configuration, limits and fault policy.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One stage of the pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct StageSpec {
    /// Unique name, used in every log line, error and report about the stage.
    pub name: String,
    /// `builtin:NAME` for a component the program running the pipeline provides (the
    /// `sluicegate` command's example stages), or a `.wasm` path relative to the file.
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
#[non_exhaustive]
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
    crate::policy::DEFAULT_MAX_RESTARTS
}

fn default_restart_backoff_ms() -> u64 {
    u64::try_from(crate::policy::DEFAULT_RESTART_BACKOFF.as_millis()).unwrap_or(u64::MAX)
}

/// Per-stage resource limits, as written in the file. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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

/// The prefix that names a component the program running the pipeline provides (the
/// `sluicegate` command provides the example stages: `builtin:decode`...), instead of a file.
pub const BUILTIN: &str = "builtin:";

/// Where a stage's component comes from.
pub(crate) enum ComponentRef<'a> {
    Builtin(&'a str),
    File(PathBuf),
}

pub(crate) fn resolve<'a>(component: &'a str, base: &Path) -> ComponentRef<'a> {
    match component.strip_prefix(BUILTIN) {
        Some(name) => ComponentRef::Builtin(name),
        None => ComponentRef::File(base.join(component)),
    }
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
