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
//!
//! What is where:
//!
//! - the crate root: loading components ([`Engine`], [`StageComponent`]), driving one stage
//!   ([`Stage`], [`StageOptions`], [`Chunk`], [`Upstream`], [`Demand`]), chaining them
//!   ([`Pipeline`], [`PipelineBuilder`]), and what goes wrong ([`Error`]);
//! - [`limits`]: the sandbox's budgets and their defaults;
//! - [`config`]: pipeline files;
//! - [`report`]: what a run reports;
//! - [`check`]: the conformance kit behind `sluicegate check`.
//!
//! The modules depend on each other one way, as data flows: `config` → `engine` (with the
//! `sandbox` a stage's store is) → `stage` → `pipeline` → `report` and `metrics`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bindings;
pub mod check;
mod checksum;
mod chunk;
mod component;
pub mod config;
mod counters;
mod engine;
mod error;
mod fast;
mod fuse;
mod guest_log;
pub mod limits;
mod metrics;
mod nats;
mod pipeline;
mod policy;
pub mod report;
mod sandbox;
mod stage;
mod upstream;
mod world;

pub use crate::checksum::Checksum;
pub use crate::chunk::{Chunk, FramingError, Records};
pub use crate::component::StageComponent;
pub use crate::counters::StageStats;
pub use crate::engine::{Engine, EngineBuilder};
pub use crate::error::{Call, Error, Result, Rule};
pub use crate::fast::ExecutionPath;
pub use crate::limits::{Limit, Limits};
pub use crate::pipeline::{Pipeline, PipelineBuilder, Probe, Stopper, Swapper};
pub use crate::policy::{DEFAULT_MAX_RESTARTS, DEFAULT_RESTART_BACKOFF, FaultPolicy};
pub use crate::sandbox::Capabilities;
pub use crate::stage::{Stage, StageOptions, StageState, SwapReport};
pub use crate::upstream::{Demand, IterUpstream, NoUpstream, Upstream};
