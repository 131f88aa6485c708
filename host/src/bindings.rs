//! The generated bindings of `wit/`, kept behind this one module. The rest of the crate speaks
//! its own types ([`crate::Chunk`], [`crate::Error`]); only `engine` and `stage` reach in here.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluicegate:stage/stage",
        // Host functions return `wasmtime::Result` so that a broken rule can trap the guest.
        imports: { default: trappable },
    });
}

pub(crate) use generated::sluicegate::stage::host::{Host as HostImports, Level};
pub(crate) use generated::sluicegate::stage::types::Host as TypesImports;
pub(crate) use generated::sluicegate::stage::upstream::Host as UpstreamImports;
pub(crate) use generated::{Stage as StageWorld, StagePre as StageWorldPre};
