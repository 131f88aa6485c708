//! The sandbox's budgets: per stage, CPU time per call (epoch deadline, optionally fuel), time
//! blocked in WASI waits per call, one memory budget across all its linear memories and tables,
//! bytes per chunk, records per pull; per engine, wasm stack and component size. Every limit
//! that bites faults the stage with [`Error::LimitExceeded`](crate::Error::LimitExceeded)
//! naming it.
//!
//! CPU time is the stage's own: it is read from the thread's CPU clock, so a stage that is
//! merely descheduled on a busy host is not charged, and the time its upstream spends
//! serving its pulls is not charged to it either, so a slow upstream never makes a healthy
//! downstream stage time out.

mod budget;

use std::time::Duration;

pub(crate) use self::budget::Budget;

/// CPU time one call (priming, resume, close, instantiation) may take: 500 ms.
pub const DEFAULT_CPU_PER_CALL: Duration = Duration::from_millis(500);
/// Wall-clock time one call may spend blocked in WASI waits (a sleep, a poll) when the stage has
/// real clocks: 1 s. With virtual clocks a sleep returns at once and advances the stage's clock.
pub const DEFAULT_WALL_PER_CALL: Duration = Duration::from_secs(1);
/// CPU time a stage may take to hand its state over in a hot swap (`state.snapshot` of the old
/// version, `state.restore` of the new one, each), inside the cut-over: 100 ms.
pub const DEFAULT_CPU_PER_HANDOFF: Duration = Duration::from_millis(100);
/// Memory a stage may hold, all its linear memories and tables together: 64 MiB.
pub const DEFAULT_MEMORY_BYTES: usize = 64 << 20;
/// Most records one `pull` asks of the stage upstream, whatever the guest asked for: 65,536.
/// A larger pull is clamped before the upstream produces anything; the rest is delivered by
/// later pulls.
pub const DEFAULT_MAX_PULL_RECORDS: u32 = 1 << 16;
/// Bytes a table element is charged against the memory budget (a pointer on 64-bit hosts).
pub(crate) const TABLE_ELEMENT_BYTES: usize = 8;
/// Largest chunk a stage may answer: 16 MiB.
pub const DEFAULT_MAX_CHUNK_BYTES: usize = 16 << 20;
/// Wasm stack of one stage: 512 KiB (wasmtime's default, set explicitly).
pub const DEFAULT_MAX_WASM_STACK: usize = 512 << 10;
/// Lines a stage may log per second (`host.log`, stdout and stderr together), with a burst of
/// one second's worth: 1000.
pub const DEFAULT_LOG_LINES_PER_S: u32 = 1000;
/// Largest component file the engine compiles: 64 MiB.
pub const DEFAULT_MAX_COMPONENT_BYTES: usize = 64 << 20;
/// How long compiling one component may take: 60 s.
pub const DEFAULT_COMPILE_TIMEOUT: Duration = Duration::from_secs(60);
/// Epoch ticks before a call's first budget check: one, so the CPU baseline of a long call
/// is taken early (see `Budget::on_deadline`); short calls never reach it.
pub(crate) const FIRST_CHECK_TICKS: u64 = 1;
/// How often the engine's epoch advances; the bound on how far past its deadline a looping
/// stage can run.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Which budget a stage exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Limit {
    /// CPU time per call (epoch deadline).
    Cpu,
    /// Fuel per call.
    Fuel,
    /// Linear memory.
    Memory,
    /// Wasm stack (deep recursion).
    Stack,
    /// Bytes in one chunk.
    ChunkBytes,
    /// Wall-clock time blocked in WASI waits per call.
    Wall,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Cpu => "cpu",
            Limit::Fuel => "fuel",
            Limit::Memory => "memory",
            Limit::Stack => "stack",
            Limit::ChunkBytes => "chunk-bytes",
            Limit::Wall => "wall",
        })
    }
}

/// The budgets of one stage. `Limits::default()` is safe for untrusted code; the `with_*`
/// methods change one budget each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// CPU time per call ([`DEFAULT_CPU_PER_CALL`]).
    pub cpu_per_call: Duration,
    /// Wall-clock time one call may spend blocked in WASI waits ([`DEFAULT_WALL_PER_CALL`]).
    pub wall_per_call: Duration,
    /// CPU time of each half of a hot swap's state handoff ([`DEFAULT_CPU_PER_HANDOFF`]).
    pub cpu_per_handoff: Duration,
    /// Fuel per call, for deterministic budgets; `None` (the default) uses only the deadline.
    /// Needs an engine built with fuel.
    pub fuel_per_call: Option<u64>,
    /// Memory cap in bytes, all linear memories and tables of the stage together
    /// ([`DEFAULT_MEMORY_BYTES`]).
    pub memory_bytes: usize,
    /// Largest chunk in bytes ([`DEFAULT_MAX_CHUNK_BYTES`]).
    pub max_chunk_bytes: usize,
    /// Most records asked of the stage in one call, whatever the caller grants (`None`, the
    /// default: the caller's credits). A larger grant is clamped, not refused.
    pub max_chunk_records: Option<u32>,
    /// Most records one of the stage's pulls asks of its upstream ([`DEFAULT_MAX_PULL_RECORDS`]);
    /// a larger pull is clamped, not refused.
    pub max_pull_records: u32,
    /// Log lines per second ([`DEFAULT_LOG_LINES_PER_S`]); lines over it are counted and
    /// announced, not emitted.
    pub log_lines_per_s: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_per_call: DEFAULT_CPU_PER_CALL,
            wall_per_call: DEFAULT_WALL_PER_CALL,
            cpu_per_handoff: DEFAULT_CPU_PER_HANDOFF,
            fuel_per_call: None,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            max_chunk_bytes: DEFAULT_MAX_CHUNK_BYTES,
            max_chunk_records: None,
            max_pull_records: DEFAULT_MAX_PULL_RECORDS,
            log_lines_per_s: DEFAULT_LOG_LINES_PER_S,
        }
    }
}

impl Limits {
    /// Sets the CPU time one call may take.
    pub fn with_cpu_per_call(mut self, cpu: Duration) -> Self {
        self.cpu_per_call = cpu;
        self
    }

    /// Sets the wall-clock time one call may spend blocked in WASI waits.
    pub fn with_wall_per_call(mut self, wall: Duration) -> Self {
        self.wall_per_call = wall;
        self
    }

    /// Sets the CPU time of each half of a hot swap's state handoff.
    pub fn with_cpu_per_handoff(mut self, cpu: Duration) -> Self {
        self.cpu_per_handoff = cpu;
        self
    }

    /// Meters the stage with `fuel` per call (the engine must meter fuel).
    pub fn with_fuel_per_call(mut self, fuel: Option<u64>) -> Self {
        self.fuel_per_call = fuel;
        self
    }

    /// Sets the memory budget: all linear memories and tables together, in bytes.
    pub fn with_memory_bytes(mut self, bytes: usize) -> Self {
        self.memory_bytes = bytes;
        self
    }

    /// Sets the largest chunk the stage may answer, in bytes.
    pub fn with_max_chunk_bytes(mut self, bytes: usize) -> Self {
        self.max_chunk_bytes = bytes;
        self
    }

    /// Clamps every grant to the stage to at most `records` per call.
    pub fn with_max_chunk_records(mut self, records: Option<u32>) -> Self {
        self.max_chunk_records = records;
        self
    }

    /// Clamps every pull the stage makes to at most `records`.
    pub fn with_max_pull_records(mut self, records: u32) -> Self {
        self.max_pull_records = records;
        self
    }

    /// Sets the log lines the stage may write per second.
    pub fn with_log_lines_per_s(mut self, lines: u32) -> Self {
        self.log_lines_per_s = lines;
        self
    }

    /// Refuses budgets that cannot work: a zero CPU or wall budget, memory, chunk size, pull
    /// size or log rate (a stage with them could not run, or would stall: a pull of 0 records is
    /// a pause), naming the budget.
    pub(crate) fn check(&self) -> Result<(), String> {
        let zero = [
            ("cpu_per_call", self.cpu_per_call.is_zero()),
            ("wall_per_call", self.wall_per_call.is_zero()),
            ("cpu_per_handoff", self.cpu_per_handoff.is_zero()),
            ("memory_bytes", self.memory_bytes == 0),
            ("max_chunk_bytes", self.max_chunk_bytes == 0),
            ("max_chunk_records", self.max_chunk_records == Some(0)),
            ("max_pull_records", self.max_pull_records == 0),
            ("log_lines_per_s", self.log_lines_per_s == 0),
            ("fuel_per_call", self.fuel_per_call == Some(0)),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(format!("limits.{name} must be greater than 0")),
            None => Ok(()),
        }
    }

    /// What wasmtime may copy out of the guest in one host call. A copy can never be larger
    /// than the guest's memory, which the memory budget bounds, so this is a backstop, not the
    /// chunk cap: an answer over `max_chunk_bytes` is refused by the host's own check (so the
    /// fault is named `chunk-bytes` from the host's records, never from wasmtime's message).
    pub(crate) fn hostcall_fuel(&self) -> usize {
        self.memory_bytes
            .max(self.max_chunk_bytes)
            .saturating_add(64 << 10)
    }
}
