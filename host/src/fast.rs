//! The core-wasm fast path. A hop on the component path pays wasmtime's general
//! component-call machinery several times (the `resume` export and its post-return, the `pull`
//! import, the `cabi_realloc` call that lowers the chunk). A component of the simple shape that
//! wit-bindgen (the SDK) and hand-written stages produce (core modules whose imports are the
//! stage interfaces and the WASI functions the host serves, exporting `memory`,
//! `cabi_realloc`, the generator and state functions and their post-returns) can instead run as
//! its core modules, wired by the host exactly as the component wires them (`shape.rs`), the
//! canonical ABI done by hand with every guest pointer, length, alignment, discriminant and
//! string checked (`abi.rs`), the stage contract's imports and the WASI functions a stage may
//! use served at the core level by the same implementations as on the component path
//! (`stage_calls.rs`, `wasi.rs`, listed in `imports.rs`).
//!
//! Every limit, rule and fault stays the host's own: the store, its budgets, the entry point
//! (`stage/entry.rs`) and the protocol checks are the same on both paths; only how a call
//! crosses the boundary differs. Any component the fast path does not fully understand
//! (componentize-py and componentize-js link many core modules through adapters of their own;
//! a fused chain nests components) runs on the component path, and
//! [`StageComponent::execution_path`](crate::StageComponent::execution_path) says which, and
//! why.

mod abi;
mod host_funcs;
mod imports;
mod instance;
mod shape;
mod stage_calls;
mod wasi;

pub(crate) use self::instance::CoreCalls;
pub(crate) use self::shape::{Plan, plan};

/// Which way a stage's calls cross the sandbox boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExecutionPath {
    /// Its core modules, called directly, the canonical ABI done by the host (the fast path).
    Core,
    /// wasmtime's component model.
    Component {
        /// Why not the fast path: what in the component it does not take, or that the engine
        /// was built without it.
        reason: String,
    },
}

impl std::fmt::Display for ExecutionPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExecutionPath::Core => f.write_str("core (the fast path)"),
            ExecutionPath::Component { reason } => write!(f, "component ({reason})"),
        }
    }
}
