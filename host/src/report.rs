//! The report of a run: serialisable for `--json`, printable as a summary table.

use std::fmt;

use serde::Serialize;

use crate::config::SinkKind;
use crate::counters::StageStats;
use crate::error::{Error, Rule};
use crate::stage::StageState;

/// One hop's counters at a moment: a native source, a stage, or the sink.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HopSnapshot {
    /// The hop's name (`source`, a stage's name, or `sink`).
    pub name: String,
    /// Where the hop is in the protocol (`None` for the native source and the sink).
    pub state: Option<StageState>,
    /// Records it received from upstream.
    pub records_in: u64,
    /// The host's counters for it (`records` is what it delivered downstream).
    pub stats: StageStats,
    /// Which way its calls cross the sandbox boundary (`None` for the native source and the
    /// sink).
    pub path: Option<crate::ExecutionPath>,
}

/// A partition's spill files at a moment (a pipeline with `[partitions]` routing one source).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionSpill {
    /// Bytes of records waiting in its spill files: how far behind the partition is, beyond
    /// what its queue holds.
    pub bytes: u64,
    /// Chunks that went through its spill files so far.
    pub chunks: u64,
}

/// Whether the run succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunStatus {
    /// The stream ended and every stage closed cleanly.
    Ok,
    /// Something failed; see `failure` and `close_errors`.
    Failed,
}

impl RunStatus {
    /// `Failed` if the run failed or a stage did not close cleanly, else `Ok`.
    pub(crate) fn of(failed: bool, close_errors: usize) -> Self {
        if failed || close_errors > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Ok
        }
    }
}

/// Records per second: `records` over `elapsed_s`, 0 when no time passed.
pub(crate) fn rate(records: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 {
        records as f64 / elapsed_s
    } else {
        0.0
    }
}

/// What a run did, hop by hop.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RunReport {
    /// The pipeline's name.
    pub pipeline: String,
    /// `ok` or `failed`.
    pub status: RunStatus,
    /// Wall-clock seconds from priming to the last close.
    pub elapsed_s: f64,
    /// Records that entered the pipeline (out of its first hop) per second.
    pub records_per_s: f64,
    /// The demand window the sink granted per resume.
    pub credits: u32,
    /// Every hop from source to the last stage.
    pub hops: Vec<HopReport>,
    /// What reached the sink.
    pub sink: SinkReport,
    /// The error that stopped the run, at its root (the stage that actually failed).
    pub failure: Option<FailureReport>,
    /// Errors from closing stages (a cleanup that trapped or broke a rule).
    pub close_errors: Vec<FailureReport>,
    /// Faults stages recovered from (restart or bypass), oldest first per stage.
    pub recovered: Vec<FailureReport>,
    /// Hot swaps, in order.
    pub swaps: Vec<crate::stage::SwapReport>,
    /// The run was stopped on request (Ctrl-C) before its stream ended.
    pub stopped: bool,
    /// A partitioned run: what reached the sink from each partition, in partition order
    /// (`sink` is their total). Empty for a pipeline without `[partitions]`.
    pub partitions: Vec<SinkReport>,
}

impl RunReport {
    /// Records that came in: the first hop's, or, when every partition has an input of its own
    /// (a NATS stream's partitions), the sum of the partitions' inputs.
    pub fn records_in(&self) -> u64 {
        match self.hops.first() {
            Some(first) if first.name.starts_with("partition#") => self
                .hops
                .iter()
                .filter(|h| h.state.is_none())
                .map(|h| h.records_out)
                .sum(),
            Some(first) => first.records_out,
            None => 0,
        }
    }

    /// The report of a run that failed with `error` before anything ran.
    pub(crate) fn failed(pipeline: &str, credits: u32, error: &crate::Error) -> RunReport {
        RunReport {
            pipeline: pipeline.to_string(),
            status: RunStatus::Failed,
            elapsed_s: 0.0,
            records_per_s: 0.0,
            credits,
            hops: Vec::new(),
            sink: SinkReport {
                kind: SinkKind::default(),
                records: 0,
                chunks: 0,
                bytes: 0,
                checksum: String::new(),
            },
            failure: Some(FailureReport::from(error)),
            close_errors: Vec::new(),
            recovered: Vec::new(),
            swaps: Vec::new(),
            stopped: false,
            partitions: Vec::new(),
        }
    }
}

/// One hop of a report.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HopReport {
    /// The hop's name.
    pub name: String,
    /// Its final state (absent for the native source).
    pub state: Option<StageState>,
    /// Records received from upstream.
    pub records_in: u64,
    /// Records delivered downstream.
    pub records_out: u64,
    /// Chunks delivered downstream.
    pub chunks: u64,
    /// Bytes delivered downstream.
    pub bytes: u64,
    /// Resumes that entered the stage (priming and pauses included).
    pub resumes: u64,
    /// Credits granted to it in total.
    pub credits_granted: u64,
    /// Median resume time, microseconds (inclusive of the stages it pulled from).
    pub resume_p50_us: f64,
    /// 99th percentile resume time, microseconds.
    pub resume_p99_us: f64,
    /// Restarts after faults.
    pub restarts: u64,
    /// Records quarantined by restarts.
    pub quarantined_records: u64,
    /// Log lines over the stage's budget, counted instead of logged.
    pub log_lines_suppressed: u64,
    /// Which way its calls cross the sandbox boundary: `core` (the fast path) or `component:
    /// <why not the fast path>`; absent for the native source.
    pub path: Option<String>,
}

impl HopReport {
    /// The hop of a host-native source named `name`, with counters `stats`.
    pub(crate) fn source(name: &str, stats: StageStats) -> HopReport {
        HopReport::from(HopSnapshot {
            name: name.to_string(),
            state: None,
            records_in: 0,
            stats,
            path: None,
        })
    }
}

impl From<HopSnapshot> for HopReport {
    fn from(hop: HopSnapshot) -> Self {
        HopReport {
            name: hop.name,
            state: hop.state,
            records_in: hop.records_in,
            records_out: hop.stats.records,
            chunks: hop.stats.chunks,
            bytes: hop.stats.bytes,
            resumes: hop.stats.resumes_entered,
            credits_granted: hop.stats.credits_granted,
            resume_p50_us: hop.stats.resume_p50_us,
            resume_p99_us: hop.stats.resume_p99_us,
            restarts: hop.stats.restarts,
            quarantined_records: hop.stats.quarantined_records,
            log_lines_suppressed: hop.stats.log_lines_suppressed,
            path: hop.path.map(|path| match path {
                crate::ExecutionPath::Core => "core".to_string(),
                crate::ExecutionPath::Component { reason } => format!("component: {reason}"),
            }),
        }
    }
}

/// What reached the sink.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SinkReport {
    /// The kind of sink.
    pub kind: SinkKind,
    /// Records received.
    pub records: u64,
    /// Chunks received.
    pub chunks: u64,
    /// Bytes received, framing included.
    pub bytes: u64,
    /// FNV-1a 64 over the records in the order they arrived, in hex: equal runs give equal
    /// checksums. For a partitioned run's total, the wrapping sum of every record's own
    /// FNV-1a instead, which does not depend on the order the partitions' records arrive in:
    /// the same for any partition count on the same input (each partition's own is ordered).
    pub checksum: String,
}

/// An error, flattened for reports.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FailureReport {
    /// The stage that failed (`source`, `sink`, or a stage's name).
    pub stage: String,
    /// The kind of error (`trap`, `protocol-violation`, ...).
    pub kind: String,
    /// The protocol rule broken, if it was a violation.
    pub rule: Option<Rule>,
    /// The full message.
    pub message: String,
}

impl From<&Error> for FailureReport {
    fn from(error: &Error) -> Self {
        let root = error.root_cause();
        FailureReport {
            stage: root.stage().to_string(),
            kind: root.kind().to_string(),
            rule: root.rule(),
            message: root.to_string(),
        }
    }
}

impl fmt::Display for RunReport {
    /// The human summary: one row per hop, then the sink and the outcome.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<16} {:>12} {:>12} {:>9} {:>12} {:>10} {:>10}  {:<10} path",
            "hop", "records in", "records out", "chunks", "bytes", "p50 µs", "p99 µs", "state"
        )?;
        for hop in &self.hops {
            let state = hop
                .state
                .map(|s| format!("{s:?}").to_lowercase())
                .unwrap_or_else(|| "-".into());
            let path = hop
                .path
                .as_deref()
                .map(|p| p.split(':').next().unwrap_or(p))
                .unwrap_or("-");
            writeln!(
                f,
                "{:<16} {:>12} {:>12} {:>9} {:>12} {:>10.1} {:>10.1}  {state:<10} {path}",
                hop.name,
                hop.records_in,
                hop.records_out,
                hop.chunks,
                hop.bytes,
                hop.resume_p50_us,
                hop.resume_p99_us
            )?;
        }
        for (replica, sink) in self.partitions.iter().enumerate() {
            writeln!(
                f,
                "{:<16} {:>12} {:>12} {:>9} {:>12}",
                format!("sink#{replica}"),
                sink.records,
                "",
                sink.chunks,
                sink.bytes
            )?;
        }
        writeln!(
            f,
            "{:<16} {:>12} {:>12} {:>9} {:>12}",
            "sink", self.sink.records, "", self.sink.chunks, self.sink.bytes
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "pipeline `{}`: {} records in, {} to the sink, in {:.3} s ({:.0} records/s in), credits {}, checksum {}",
            self.pipeline,
            self.records_in(),
            self.sink.records,
            self.elapsed_s,
            self.records_per_s,
            self.credits,
            self.sink.checksum
        )?;
        for swap in &self.swaps {
            writeln!(
                f,
                "swapped stage `{}` {} -> {}: pause {} µs, state {}{}",
                swap.stage,
                swap.old_digest,
                swap.new_digest,
                swap.pause.as_micros(),
                if swap.state_carried {
                    "carried"
                } else {
                    "not carried"
                },
                swap.old_cleanup_error
                    .as_ref()
                    .map(|e| format!(", old version's cleanup failed: {e}"))
                    .unwrap_or_default()
            )?;
            if let Some(lost) = &swap.state_lost {
                writeln!(
                    f,
                    "  state LOST in that swap (the old version broke while handing it over): {lost}"
                )?;
            }
        }
        for recovered in &self.recovered {
            writeln!(
                f,
                "recovered in stage `{}`: {}",
                recovered.stage, recovered.message
            )?;
        }
        for hop in self.hops.iter().filter(|h| h.restarts > 0) {
            writeln!(
                f,
                "stage `{}`: {} restart(s), {} record(s) quarantined",
                hop.name, hop.restarts, hop.quarantined_records
            )?;
        }
        for hop in self.hops.iter().filter(|h| h.log_lines_suppressed > 0) {
            writeln!(
                f,
                "stage `{}`: {} log line(s) suppressed (over its log budget, limits.log_lines_per_s)",
                hop.name, hop.log_lines_suppressed
            )?;
        }
        match &self.failure {
            None if self.close_errors.is_empty() && self.stopped => {
                writeln!(f, "status: ok (stopped on request before the stream ended)")
            }
            None if self.close_errors.is_empty() => writeln!(f, "status: ok"),
            _ => {
                writeln!(f, "status: FAILED")?;
                for failure in self.failure.iter().chain(&self.close_errors) {
                    writeln!(
                        f,
                        "  stage `{}` ({}): {}",
                        failure.stage, failure.kind, failure.message
                    )?;
                }
                Ok(())
            }
        }
    }
}
