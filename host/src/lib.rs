//! sluicegate runs pipeline stages as sandboxed WebAssembly components that speak a generator
//! protocol with demand credits: `resume(credits) -> option<chunk>` and `close()`, with each
//! stage pulling its input from the stage upstream (`yield from` across components).
//!
//! The host enforces the protocol at the boundary; `docs/protocol.md` is its specification.
//!
//! ```no_run
//! use sluicegate::{Engine, StageOptions};
//!
//! # fn main() -> Result<(), sluicegate::Error> {
//! let engine = Engine::new()?;
//! let source = engine
//!     .load_file("tick_source.wasm")?
//!     .instantiate("ticks", StageOptions::new().config("records", "1000"))?;
//! let filter = engine
//!     .load_file("symbol_filter.wasm")?
//!     .instantiate("filter", StageOptions::new().upstream(source.clone()))?;
//!
//! source.prime()?; // upstream first
//! filter.prime()?;
//! while let Some(chunk) = filter.resume(256)? {
//!     for record in chunk.records() {
//!         println!("{} bytes", record.len());
//!     }
//! }
//! source.close()?; // upstream first, as PEP 380 closes a subgenerator first
//! filter.close()?;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bindings;
mod builtin;
mod check;
mod chunk;
mod config;
mod engine;
mod error;
mod fuse;
mod guest_log;
mod limits;
mod metrics;
mod pipeline;
mod report;
mod stage;
mod upstream;
mod world;

pub use crate::check::{
    CheckOptions, CheckReport, DEFAULT_CHECK_CREDITS, DEFAULT_CHECK_MAX_RECORDS,
    DEFAULT_INPUT_RECORDS, DEFAULT_SHORT_UPSTREAM, RuleCheck, Verdict, check_file,
};
pub use crate::chunk::{Chunk, FramingError, PREFIX_LEN, Records};
pub use crate::config::{
    DEFAULT_CREDITS, LimitsSpec, OnFault, PipelineSpec, RecordFormat, SinkKind, SinkSpec,
    SourceSpec, StageSpec,
};
pub use crate::engine::{Engine, EngineBuilder, StageComponent};
pub use crate::error::{Call, Error, Result, Rule};
pub use crate::limits::{
    DEFAULT_COMPILE_TIMEOUT, DEFAULT_CPU_PER_CALL, DEFAULT_CPU_PER_HANDOFF,
    DEFAULT_MAX_CHUNK_BYTES, DEFAULT_MAX_COMPONENT_BYTES, DEFAULT_MAX_PULL_RECORDS,
    DEFAULT_MAX_WASM_STACK, DEFAULT_MEMORY_BYTES, DEFAULT_WALL_PER_CALL, EPOCH_TICK, Limit, Limits,
};
pub use crate::metrics::StageStats;
pub use crate::pipeline::{
    HopSnapshot, Pipeline, Probe, Stopper, Swapper, build_from_file, build_from_toml,
};
pub use crate::report::{FailureReport, HopReport, RunReport, RunStatus, SinkReport};
pub use crate::stage::supervise::{DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_BACKOFF};
pub use crate::stage::{Capabilities, FaultPolicy, Stage, StageOptions, StageState, SwapReport};
pub use crate::upstream::{Demand, IterUpstream, NoUpstream, Upstream};
