//! A stage's settings from its `[[stage]]` spec: limits (defaults filled in), capabilities,
//! fault policy and dead-letter file.

use std::path::Path;
use std::time::Duration;

use crate::config::{LimitsSpec, OnFault, StageSpec};
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::policy::FaultPolicy;
use crate::sandbox::Capabilities;
use crate::stage::StageOptions;

/// A stage's limits, capabilities, fault policy and dead-letter file, as its spec gives them.
pub(super) fn stage_options(spec: &StageSpec, base: &Path) -> Result<StageOptions> {
    let mut options = StageOptions::new()
        .limits(limits(&spec.limits))
        .capabilities(Capabilities {
            real_time_and_random: spec.real_time_and_random,
        })
        .on_fault(fault_policy(spec));
    if let Some(path) = &spec.dead_letter {
        let path = base.join(path);
        let file = std::fs::File::create(&path).map_err(|e| Error::Io {
            stage: spec.name.clone(),
            message: format!("cannot create dead-letter file {}: {e}", path.display()),
        })?;
        options = options.dead_letter(std::io::BufWriter::new(file));
    }
    Ok(options)
}

/// The fault policy a stage's settings describe.
fn fault_policy(spec: &StageSpec) -> FaultPolicy {
    match spec.on_fault {
        OnFault::Fail => FaultPolicy::Fail,
        OnFault::Restart => FaultPolicy::Restart {
            max_restarts: spec.max_restarts,
            backoff: Duration::from_millis(spec.restart_backoff_ms),
        },
        OnFault::Bypass => FaultPolicy::Bypass,
    }
}

/// The limits a stage's `limits` table describes, defaults filled in.
fn limits(spec: &LimitsSpec) -> Limits {
    let d = Limits::default();
    let ms = |v: Option<u64>, default: Duration| v.map(Duration::from_millis).unwrap_or(default);
    let bytes = |v: Option<u64>| v.map(|b| usize::try_from(b).unwrap_or(usize::MAX));
    Limits {
        cpu_per_call: ms(spec.cpu_ms, d.cpu_per_call),
        wall_per_call: ms(spec.wall_ms, d.wall_per_call),
        cpu_per_handoff: ms(spec.handoff_cpu_ms, d.cpu_per_handoff),
        fuel_per_call: spec.fuel,
        memory_bytes: bytes(spec.memory_mib.map(|mib| mib.saturating_mul(1 << 20)))
            .unwrap_or(d.memory_bytes),
        max_chunk_bytes: bytes(spec.max_chunk_bytes).unwrap_or(d.max_chunk_bytes),
        max_chunk_records: spec.max_chunk_records,
        max_pull_records: spec.max_pull_records.unwrap_or(d.max_pull_records),
        log_lines_per_s: spec.log_lines_per_s.unwrap_or(d.log_lines_per_s),
    }
}
