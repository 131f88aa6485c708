//! Reading a component's wiring for the fast path: which core modules it instantiates, with
//! what, and which core functions its stage exports lift. The result is a [`Plan`] the host can
//! carry out with wasmtime's core API, doing by hand exactly what the component would do: the
//! same modules, instantiated in the same order with the same arguments, every import lowered
//! from the same component import with the same options (memory, realloc, UTF-8).
//!
//! Anything the plan cannot express exactly is a reason to stay on the component path, said in
//! one sentence: a function the fast path does not serve, a resource the component defines, an
//! adapter between its own instances, async or non-UTF-8 options, a component nested inside that
//! does more than re-export, 64-bit or shared memories.

mod canon;
mod exports;
mod nested;
mod reader;

use self::reader::{Refusal, read};
use super::imports::HostImport;

/// Why a component runs on the component path.
pub(crate) type Reason = String;

/// How to run a component as its core modules.
pub(crate) struct Plan {
    /// The core modules, compiled, in the component's order.
    pub(super) modules: Vec<wasmtime::Module>,
    /// What to do, in order: each step makes the next core instance.
    pub(super) steps: Vec<Step>,
    /// The core function index space.
    pub(super) funcs: Vec<CoreFunc>,
    /// The core memory, table and global index spaces (each an export of a core instance).
    pub(super) memories: Vec<Alias>,
    pub(super) tables: Vec<Alias>,
    pub(super) globals: Vec<Alias>,
    /// The stage's exports, as the core functions they lift.
    pub(super) exports: Exports,
    /// The host functions of `funcs`, made once for every store (`instance.rs`).
    pub(super) host: super::host_funcs::HostFuncs,
}

/// An export of a core instance.
#[derive(Debug, Clone)]
pub(super) struct Alias {
    pub(super) instance: u32,
    pub(super) name: String,
}

/// One core instance to make.
pub(super) enum Step {
    /// Instantiate module `module`, each import module name given the core instance named.
    Instantiate {
        module: u32,
        args: Vec<(String, u32)>,
    },
    /// A bag of core items under names (an instantiation argument).
    Bag(Vec<(String, Item)>),
}

/// A core item, by kind and index.
#[derive(Debug, Clone, Copy)]
pub(super) enum Item {
    Func(u32),
    Memory(u32),
    Table(u32),
    Global(u32),
}

/// A core function.
#[derive(Debug, Clone)]
pub(super) enum CoreFunc {
    /// An export of a core instance.
    Export(Alias),
    /// A function the host serves (`imports.rs`), lowered with these options.
    Host {
        import: HostImport,
        memory: Option<u32>,
        realloc: Option<u32>,
    },
}

/// A lifted export: the core function and its canonical options.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lift {
    pub(super) func: u32,
    pub(super) memory: Option<u32>,
    pub(super) realloc: Option<u32>,
    pub(super) post_return: Option<u32>,
}

/// The stage's exports.
pub(super) struct Exports {
    pub(super) resume: Lift,
    pub(super) close: Lift,
    /// `state.snapshot` and `state.restore`, if the stage exports the `state` interface.
    pub(super) state: Option<(Lift, Lift)>,
}

/// Reads `bytes` (a component that passed the world check) into a plan, or says why the fast
/// path does not take it. Compiles the core modules with `engine`.
pub(crate) fn plan(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Plan, Reason> {
    let bytes = wat::parse_bytes(bytes).map_err(|e| format!("cannot read it: {e}"))?;
    let reader = read(&bytes).map_err(|e| match e {
        Refusal::Unsupported(reason) => reason,
        Refusal::Parse(e) => format!("cannot read its wiring: {e}"),
    })?;
    let exports = reader.exports()?;
    let mut modules = Vec::with_capacity(reader.modules.len());
    for range in &reader.modules {
        let module = bytes
            .get(range.clone())
            .ok_or_else(|| "a core module lies outside the component".to_string())?;
        modules.push(
            wasmtime::Module::new(engine, module)
                .map_err(|e| format!("a core module does not compile on its own: {e:#}"))?,
        );
    }
    let host = super::host_funcs::HostFuncs::new(engine, &reader.funcs)
        .map_err(|e| format!("its host functions cannot be defined: {e:#}"))?;
    let plan = Plan {
        host,
        modules,
        steps: reader.steps,
        funcs: reader.funcs,
        memories: reader.memories,
        tables: reader.tables,
        globals: reader.globals,
        exports,
    };
    plan.check()?;
    Ok(plan)
}

impl Plan {
    /// Checks what the component's validation does not promise the host: that every module
    /// takes from a host function exactly the core type the host gives, and that every
    /// memory the plan names is 32-bit and not shared.
    fn check(&self) -> Result<(), Reason> {
        for (module, step) in self.steps.iter().filter_map(|s| match s {
            Step::Instantiate { module, args } => Some((module, args)),
            Step::Bag(_) => None,
        }) {
            let module = self
                .modules
                .get(*module as usize)
                .ok_or_else(|| "it instantiates a module it does not define".to_string())?;
            for import in module.imports() {
                let Some((_, instance)) = step.iter().find(|(name, _)| name == import.module())
                else {
                    continue;
                };
                let Some(Step::Bag(items)) = self.steps.get(*instance as usize) else {
                    continue;
                };
                let Some((_, Item::Func(func))) = items.iter().find(|(n, _)| n == import.name())
                else {
                    continue;
                };
                if let (Some(CoreFunc::Host { import: host, .. }), wasmtime::ExternType::Func(ty)) =
                    (self.funcs.get(*func as usize), import.ty())
                    && !host.has_type(&ty)
                {
                    return Err(format!(
                        "its core import `{}` `{}` has a type the fast path does not give it",
                        import.module(),
                        import.name()
                    ));
                }
            }
            for export in module.exports() {
                if let wasmtime::ExternType::Memory(memory) = export.ty()
                    && (memory.is_64() || memory.is_shared())
                {
                    return Err("it uses a 64-bit or shared memory".into());
                }
            }
            for import in module.imports() {
                if let wasmtime::ExternType::Memory(memory) = import.ty()
                    && (memory.is_64() || memory.is_shared())
                {
                    return Err("it uses a 64-bit or shared memory".into());
                }
            }
        }
        Ok(())
    }
}
