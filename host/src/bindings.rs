//! The generated bindings of `wit/`, kept behind this one module. The rest of the crate speaks
//! its own types ([`crate::Chunk`], [`crate::Error`]); only `engine` and `stage` reach in here.
//! The `host` interface is defined by hand (`stage/host_services.rs`) so that a log line over
//! budget is refused before anything is read from the guest; its `level` type comes from here.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sluicegate:stage/stage",
        // Host functions return `wasmtime::Result` so that a broken rule can trap the guest.
        imports: { default: trappable },
    });
}

pub(crate) use generated::sluicegate::stage::host::Level;
pub(crate) use generated::sluicegate::stage::types::Host as TypesImports;
pub(crate) use generated::sluicegate::stage::upstream::Host as UpstreamImports;

/// `add_to_linker` of the `types` interface.
pub(crate) mod types_linker {
    pub(crate) use super::generated::sluicegate::stage::types::add_to_linker;
}
/// `add_to_linker` of the `upstream` interface.
pub(crate) mod upstream_linker {
    pub(crate) use super::generated::sluicegate::stage::upstream::add_to_linker;
}
