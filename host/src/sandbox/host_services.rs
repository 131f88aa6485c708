//! The `host` interface a stage imports (`sluicegate:stage/host@0.1.0`): `log` and `config`,
//! served for the stage itself and, in fused mode, for each inner stage under its own name and
//! with its own configuration (`fused-<letter>-host`, see [`crate::fuse`]).
//!
//! `log` is defined by hand rather than through the generated bindings so that the stage's log
//! budget is checked **before** anything is read from the guest: a line over budget costs a
//! counter bump, not a copy, a UTF-8 check or an allocation. A line within budget is read
//! lazily (only the first [`MAX_LOG_FIELDS`] fields are even looked at), cut and escaped by
//! [`crate::guest_log`].

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmList, WasmStr};

use super::store::StageCtx;
use crate::bindings::Level;
use crate::guest_log::{self, MAX_LOG_FIELDS};

/// The interface every stage imports for its host services.
const HOST: &str = "sluicegate:stage/host@0.1.0";

/// Defines `host` (and every fused inner stage's `fused-<letter>-host`) in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StageCtx>) -> wasmtime::Result<()> {
    add_one(linker, HOST, None)?;
    for index in 0..crate::fuse::MAX_FUSED {
        add_one(linker, &crate::fuse::inner_host_import(index), Some(index))?;
    }
    Ok(())
}

/// One `host` instance: the stage's own (`inner` is `None`) or inner stage `inner`'s.
fn add_one(
    linker: &mut Linker<StageCtx>,
    interface: &str,
    inner: Option<usize>,
) -> wasmtime::Result<()> {
    type LogArgs = (Level, WasmStr, WasmList<(WasmStr, WasmStr)>);
    let mut host = linker.instance(interface)?;
    host.func_wrap(
        "log",
        move |mut store: StoreContextMut<'_, StageCtx>, (level, message, fields): LogArgs| {
            if !store.data().log_gate().admit() {
                return Ok(());
            }
            let fields = fields
                .iter(&mut store)?
                .take(MAX_LOG_FIELDS)
                .collect::<wasmtime::Result<Vec<(WasmStr, WasmStr)>>>()?;
            let fields = fields
                .iter()
                .map(|(key, value)| Ok((key.to_str(&store)?, value.to_str(&store)?)))
                .collect::<wasmtime::Result<Vec<_>>>()?;
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (&**k, &**v)).collect();
            let message = message.to_str(&store)?;
            guest_log::emit(store.data().log_name(inner), level, &message, &fields);
            Ok(())
        },
    )?;
    host.func_wrap(
        "config",
        move |store: StoreContextMut<'_, StageCtx>, (): ()| Ok((store.data().config_of(inner),)),
    )?;
    Ok(())
}
