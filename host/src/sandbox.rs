//! The sandbox one stage instance runs in: its store's data ([`StageCtx`]: upstream, budgets,
//! log, WASI context), and everything it may import, each enforced here: `upstream.pull`
//! (`pull.rs`), the `host` services (`host_services.rs`) and WASI, deny-by-default, its waits
//! bounded (`waits.rs`). [`linker`] puts them together for the engine.

mod clocks;
mod host_services;
mod pull;
mod store;
mod waits;
mod wasi;

use wasmtime::component::{HasSelf, Linker};

pub(crate) use self::store::{CallReport, KeptInputs, Lowering, Salvage, Serving, StageCtx};

/// What a stage may see of the outside world besides its input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Real wall and monotonic clocks and host randomness. Off by default: the stage sees a
    /// virtual clock that advances 1 µs per reading (and by every sleep) from a fixed date,
    /// and seeded randomness, so runs are reproducible and timing cannot be used as a side
    /// channel.
    pub real_time_and_random: bool,
}

impl Capabilities {
    /// Nothing real (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Grants (or takes away) real clocks and host randomness.
    pub fn with_real_time_and_random(mut self, granted: bool) -> Self {
        self.real_time_and_random = granted;
        self
    }
}

/// Everything a stage may import: WASI (deny-by-default, its waits bounded), the `upstream`
/// and `types` interfaces, and the host services (`host`, and each fused inner stage's).
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<StageCtx>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    // The host serves the monotonic clock, poll and streams itself, replacing wasmtime-wasi's:
    // virtual sleeps, and every wait bounded (`waits.rs`).
    linker.allow_shadowing(true);
    waits::monotonic_clock::add_to_linker::<StageCtx, waits::Waits>(&mut linker, StageCtx::waits)?;
    waits::poll::add_to_linker::<StageCtx, waits::Waits>(&mut linker, StageCtx::waits)?;
    waits::streams::add_to_linker::<StageCtx, waits::Waits>(&mut linker, StageCtx::waits)?;
    linker.allow_shadowing(false);
    crate::bindings::upstream_linker::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |ctx| {
        ctx
    })?;
    crate::bindings::types_linker::add_to_linker::<_, HasSelf<StageCtx>>(&mut linker, |ctx| ctx)?;
    host_services::add_to_linker(&mut linker)?;
    Ok(linker)
}
