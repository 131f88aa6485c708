//! The host functions of a plan, made once per component: a core [`Linker`] holds every
//! function the plan's modules import from the host, and a store that runs the plan takes
//! them from it (an `Arc` each), where making them per store would cost a closure and a
//! trampoline context per function and per stage. What differs between stores, the canonical
//! options each function was lowered with (the memory and `cabi_realloc` of that store's
//! instance), is kept in the store's `lowerings`, one slot per function, and read at each call.

use wasmtime::{Func, Linker, Store};

use super::abi::Options;
use super::imports::HostImport;
use super::shape::CoreFunc;
use crate::sandbox::StageCtx;

/// The module name under which a plan's linker holds its host functions.
const HOST_MODULE: &str = "sluicegate-fast";

/// The host functions of a plan, defined once for every store that runs it: the `i`-th is
/// `sluicegate-fast` `i` of the linker, and reads its options from slot `i` of the calling
/// store's lowerings.
pub(crate) struct HostFuncs {
    linker: Linker<StageCtx>,
    /// The slot of each function of the plan's index space that the host serves.
    slots: Vec<Option<u32>>,
    count: usize,
}

impl HostFuncs {
    /// The host functions among `funcs` (a plan's function index space).
    pub(super) fn new(engine: &wasmtime::Engine, funcs: &[CoreFunc]) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(engine);
        let mut slots = Vec::with_capacity(funcs.len());
        let mut count = 0;
        for func in funcs {
            let CoreFunc::Host { import, .. } = func else {
                slots.push(None);
                continue;
            };
            let name = count.to_string();
            let name = (HOST_MODULE, name.as_str());
            match import {
                HostImport::Pull | HostImport::Log | HostImport::Config => {
                    super::stage_calls::define(*import, count, &mut linker, name)?
                }
                _ => super::wasi::define(*import, count, &mut linker, name)?,
            }
            slots.push(Some(u32::try_from(count)?));
            count += 1;
        }
        Ok(HostFuncs {
            linker,
            slots,
            count,
        })
    }

    /// A store's lowerings before instantiation: a slot per host function, all empty.
    pub(super) fn no_lowerings(&self) -> Vec<Option<Options>> {
        vec![None; self.count]
    }

    /// Host function `index` of the plan in `store`, its options in its slot.
    pub(super) fn get(
        &self,
        store: &mut Store<StageCtx>,
        index: u32,
        options: Option<Options>,
    ) -> wasmtime::Result<Func> {
        let slot = self
            .slots
            .get(index as usize)
            .copied()
            .flatten()
            .ok_or_else(|| wasmtime::format_err!("core function {index} is not the host's"))?;
        if let Some(lowering) = store.data_mut().lowerings.get_mut(slot as usize) {
            *lowering = options;
        }
        self.linker
            .get(&mut *store, HOST_MODULE, &slot.to_string())?
            .into_func()
            .ok_or_else(|| wasmtime::format_err!("host function {index} is not a function"))
    }
}
