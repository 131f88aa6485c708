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

use std::collections::HashMap;
use std::ops::Range;

use wasmparser::{
    CanonicalFunction, CanonicalOption, ComponentAlias, ComponentExternalKind, ComponentInstance,
    ComponentOuterAliasKind, ComponentTypeRef, ExternalKind, Instance, Parser, Payload,
};

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

const GENERATOR: &str = "sluicegate:stage/generator@0.1.0";
const STATE: &str = "sluicegate:stage/state@0.1.0";

/// A component-level function.
#[derive(Debug, Clone)]
enum CFunc {
    /// Function `name` of the imported instance `interface`.
    Import {
        interface: String,
        name: String,
    },
    /// Function `name` of a component instance defined here.
    Via {
        instance: u32,
        name: String,
    },
    /// Another index of the same function (a re-export).
    Same(u32),
    Lift(Lift),
    /// Something the plan does not follow.
    Other(&'static str),
}

/// A component-level instance.
#[derive(Debug, Clone)]
enum CInst {
    Import(String),
    Instantiate {
        component: u32,
        args: Vec<(String, ComponentExternalKind, u32)>,
    },
    Bag(Vec<(String, ComponentExternalKind, u32)>),
    Same(u32),
    Other,
}

/// A component-level type: only where it came from matters (for `resource.drop`).
#[derive(Debug, Clone)]
enum CType {
    Imported { interface: String, name: String },
    Other,
}

/// A component nested inside: only a pure re-export shim is followed (what wit-component
/// makes for each exported interface): `export name -> import name` for its functions.
#[derive(Debug, Clone, Default)]
struct Nested {
    reexports: HashMap<String, String>,
    /// Why it is not a pure re-export shim, if it is not.
    complex: Option<&'static str>,
}

/// The parser's state for the top-level component.
#[derive(Default)]
struct Reader {
    modules: Vec<Range<usize>>,
    steps: Vec<Step>,
    funcs: Vec<CoreFunc>,
    memories: Vec<Alias>,
    tables: Vec<Alias>,
    globals: Vec<Alias>,
    cfuncs: Vec<CFunc>,
    cinsts: Vec<CInst>,
    ctypes: Vec<CType>,
    components: Vec<Nested>,
    exports: HashMap<String, (ComponentExternalKind, u32)>,
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
    let plan = Plan {
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

enum Refusal {
    Unsupported(String),
    Parse(wasmparser::BinaryReaderError),
}

impl From<wasmparser::BinaryReaderError> for Refusal {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Refusal::Parse(e)
    }
}

fn no<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Unsupported(reason.into()))
}

/// What the payloads between a section's start and its `End` belong to.
enum Depth {
    Module,
    Component(Nested, NestedFuncs),
}

/// The function index space of a nested component: import names, or other indices.
#[derive(Default)]
struct NestedFuncs(Vec<Option<String>>, Vec<(String, u32)>);

fn read(bytes: &[u8]) -> Result<Reader, Refusal> {
    let mut r = Reader::default();
    let mut stack: Vec<Depth> = Vec::new();
    let mut first = true;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload?;
        if first {
            first = false;
            if let Payload::Version { encoding, .. } = &payload
                && *encoding != wasmparser::Encoding::Component
            {
                return no("it is not a component");
            }
        }
        match stack.last_mut() {
            Some(Depth::Module) => {
                match payload {
                    Payload::End(_) => {
                        stack.pop();
                    }
                    Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => {
                        return no("a core module nests another");
                    }
                    _ => {}
                }
                continue;
            }
            Some(Depth::Component(nested, funcs)) => {
                nested_payload(nested, funcs, &payload)?;
                match payload {
                    Payload::End(_) => {
                        if let Some(Depth::Component(mut nested, funcs)) = stack.pop() {
                            if nested.complex.is_none() {
                                for (export, index) in funcs.1 {
                                    match funcs.0.get(index as usize).cloned().flatten() {
                                        Some(import) => {
                                            nested.reexports.insert(export, import);
                                        }
                                        None => {
                                            nested.complex = Some("exports what it does not import")
                                        }
                                    }
                                }
                            }
                            r.components.push(nested);
                        }
                    }
                    Payload::ModuleSection { .. } => stack.push(Depth::Module),
                    Payload::ComponentSection { .. } => {
                        return no("a component nested two deep");
                    }
                    _ => {}
                }
                continue;
            }
            None => {}
        }
        r.top_level(payload, &mut stack)?;
    }
    Ok(r)
}

/// A payload of a nested component: records its function imports and re-exports; anything
/// else makes it "complex" (not followed).
fn nested_payload(
    nested: &mut Nested,
    funcs: &mut NestedFuncs,
    payload: &Payload<'_>,
) -> Result<(), Refusal> {
    match payload {
        Payload::Version { .. }
        | Payload::ComponentTypeSection(_)
        | Payload::CustomSection(_)
        | Payload::End(_) => {}
        Payload::ComponentImportSection(imports) => {
            for import in imports.clone() {
                let import = import?;
                if let ComponentTypeRef::Func(_) = import.ty {
                    funcs.0.push(Some(import.name.name.to_string()));
                }
            }
        }
        Payload::ComponentExportSection(exports) => {
            for export in exports.clone() {
                let export = export?;
                if export.kind == ComponentExternalKind::Func {
                    let target = funcs.0.get(export.index as usize).cloned().flatten();
                    funcs.1.push((export.name.name.to_string(), export.index));
                    funcs.0.push(target);
                }
            }
        }
        _ => {
            nested
                .complex
                .get_or_insert("a nested component does more than re-export");
        }
    }
    Ok(())
}

impl Reader {
    fn top_level(&mut self, payload: Payload<'_>, stack: &mut Vec<Depth>) -> Result<(), Refusal> {
        match payload {
            Payload::Version { .. } | Payload::CustomSection(_) | Payload::End(_) => {}
            Payload::CoreTypeSection(_) => {}
            Payload::ModuleSection {
                unchecked_range, ..
            } => {
                self.modules.push(unchecked_range);
                stack.push(Depth::Module);
            }
            Payload::ComponentSection { .. } => {
                stack.push(Depth::Component(Nested::default(), NestedFuncs::default()));
            }
            Payload::InstanceSection(instances) => {
                for instance in instances {
                    self.steps.push(match instance? {
                        Instance::Instantiate { module_index, args } => Step::Instantiate {
                            module: module_index,
                            args: args.iter().map(|a| (a.name.to_string(), a.index)).collect(),
                        },
                        Instance::FromExports(exports) => {
                            let mut items = Vec::with_capacity(exports.len());
                            for e in exports.iter() {
                                let item = match e.kind {
                                    ExternalKind::Func | ExternalKind::FuncExact => {
                                        Item::Func(e.index)
                                    }
                                    ExternalKind::Memory => Item::Memory(e.index),
                                    ExternalKind::Table => Item::Table(e.index),
                                    ExternalKind::Global => Item::Global(e.index),
                                    ExternalKind::Tag => return no("it passes exception tags"),
                                };
                                items.push((e.name.to_string(), item));
                            }
                            Step::Bag(items)
                        }
                    });
                }
            }
            Payload::ComponentTypeSection(types) => {
                for _ in 0..types.count() {
                    self.ctypes.push(CType::Other);
                }
            }
            Payload::ComponentImportSection(imports) => {
                for import in imports {
                    let import = import?;
                    let name = import.name.name.to_string();
                    match import.ty {
                        ComponentTypeRef::Instance(_) => self.cinsts.push(CInst::Import(name)),
                        ComponentTypeRef::Type(_) => self.ctypes.push(CType::Other),
                        ComponentTypeRef::Func(_) => self
                            .cfuncs
                            .push(CFunc::Other("a function imported on its own")),
                        _ => return no(format!("it imports `{name}`, not an interface")),
                    }
                }
            }
            Payload::ComponentAliasSection(aliases) => {
                for alias in aliases {
                    self.alias(alias?)?;
                }
            }
            Payload::ComponentInstanceSection(instances) => {
                for instance in instances {
                    let kind_args = |list: &[wasmparser::ComponentExport<'_>]| {
                        list.iter()
                            .map(|e| (e.name.name.to_string(), e.kind, e.index))
                            .collect::<Vec<_>>()
                    };
                    self.cinsts.push(match instance? {
                        ComponentInstance::Instantiate {
                            component_index,
                            args,
                        } => CInst::Instantiate {
                            component: component_index,
                            args: args
                                .iter()
                                .map(|a| (a.name.to_string(), a.kind, a.index))
                                .collect(),
                        },
                        ComponentInstance::FromExports(exports) => CInst::Bag(kind_args(&exports)),
                    });
                }
            }
            Payload::ComponentCanonicalSection(canons) => {
                for canon in canons {
                    self.canon(canon?)?;
                }
            }
            Payload::ComponentExportSection(exports) => {
                for export in exports {
                    let export = export?;
                    let name = export.name.name.to_string();
                    match export.kind {
                        ComponentExternalKind::Func => self.cfuncs.push(CFunc::Same(export.index)),
                        ComponentExternalKind::Instance => {
                            self.cinsts.push(CInst::Same(export.index))
                        }
                        ComponentExternalKind::Type => self.ctypes.push(CType::Other),
                        ComponentExternalKind::Component => self.components.push(Nested {
                            complex: Some("a re-exported component"),
                            ..Nested::default()
                        }),
                        ComponentExternalKind::Module => return no("it exports a core module"),
                        ComponentExternalKind::Value => return no("it exports a value"),
                    }
                    self.exports.insert(name, (export.kind, export.index));
                }
            }
            Payload::ComponentStartSection { .. } => return no("it has a start function"),
            other => {
                return no(format!(
                    "it has a section the fast path does not read ({:?})",
                    other.as_section().map(|(id, _)| id)
                ));
            }
        }
        Ok(())
    }

    fn alias(&mut self, alias: ComponentAlias<'_>) -> Result<(), Refusal> {
        match alias {
            ComponentAlias::CoreInstanceExport {
                kind,
                instance_index,
                name,
            } => {
                let alias = Alias {
                    instance: instance_index,
                    name: name.to_string(),
                };
                match kind {
                    ExternalKind::Func | ExternalKind::FuncExact => {
                        self.funcs.push(CoreFunc::Export(alias))
                    }
                    ExternalKind::Memory => self.memories.push(alias),
                    ExternalKind::Table => self.tables.push(alias),
                    ExternalKind::Global => self.globals.push(alias),
                    ExternalKind::Tag => return no("it passes exception tags"),
                }
            }
            ComponentAlias::InstanceExport {
                kind,
                instance_index,
                name,
            } => {
                let imported = match self.cinsts.get(instance_index as usize) {
                    Some(CInst::Import(interface)) => Some(interface.clone()),
                    _ => None,
                };
                match kind {
                    ComponentExternalKind::Func => self.cfuncs.push(match imported {
                        Some(interface) => CFunc::Import {
                            interface,
                            name: name.to_string(),
                        },
                        None => CFunc::Via {
                            instance: instance_index,
                            name: name.to_string(),
                        },
                    }),
                    ComponentExternalKind::Type => self.ctypes.push(match imported {
                        Some(interface) => CType::Imported {
                            interface,
                            name: name.to_string(),
                        },
                        None => CType::Other,
                    }),
                    ComponentExternalKind::Instance => self.cinsts.push(CInst::Other),
                    ComponentExternalKind::Component => self.components.push(Nested {
                        complex: Some("an aliased component"),
                        ..Nested::default()
                    }),
                    ComponentExternalKind::Module => return no("it aliases a core module"),
                    ComponentExternalKind::Value => return no("it aliases a value"),
                }
            }
            ComponentAlias::Outer { kind, .. } => match kind {
                ComponentOuterAliasKind::Type => self.ctypes.push(CType::Other),
                ComponentOuterAliasKind::CoreType => {}
                ComponentOuterAliasKind::CoreModule => return no("it aliases a core module"),
                ComponentOuterAliasKind::Component => self.components.push(Nested {
                    complex: Some("an outer-aliased component"),
                    ..Nested::default()
                }),
            },
        }
        Ok(())
    }

    fn canon(&mut self, canon: CanonicalFunction) -> Result<(), Refusal> {
        match canon {
            CanonicalFunction::Lift {
                core_func_index,
                options,
                ..
            } => {
                let (memory, realloc, post_return) = options_of(&options)?;
                self.cfuncs.push(CFunc::Lift(Lift {
                    func: core_func_index,
                    memory,
                    realloc,
                    post_return,
                }));
            }
            CanonicalFunction::Lower {
                func_index,
                options,
            } => {
                let (memory, realloc, post_return) = options_of(&options)?;
                if post_return.is_some() {
                    return no("a lowering names a post-return function");
                }
                let (interface, name) = self.imported_func(func_index)?;
                let Some(import) = HostImport::find(&interface, &name) else {
                    return no(format!(
                        "it imports `{interface}` function `{name}`, which the fast path does \
                         not serve"
                    ));
                };
                if import.needs_memory() && memory.is_none()
                    || import.needs_realloc() && realloc.is_none()
                {
                    return no(format!(
                        "it lowers `{interface}` function `{name}` without a memory or realloc"
                    ));
                }
                self.funcs.push(CoreFunc::Host {
                    import,
                    memory,
                    realloc,
                });
            }
            CanonicalFunction::ResourceDrop { resource } => {
                let import = match self.ctypes.get(resource as usize) {
                    Some(CType::Imported { interface, name }) => {
                        HostImport::find_drop(interface, name).ok_or_else(|| {
                            Refusal::Unsupported(format!(
                                "it drops `{interface}` resource `{name}`, which the fast path \
                                 does not serve"
                            ))
                        })?
                    }
                    _ => return no("it drops a resource it defines itself"),
                };
                self.funcs.push(CoreFunc::Host {
                    import,
                    memory: None,
                    realloc: None,
                });
            }
            other => {
                return no(format!(
                    "it uses `canon {}`, which the fast path does not serve",
                    canon_name(&other)
                ));
            }
        }
        Ok(())
    }

    /// The imported interface function behind component function `index`.
    fn imported_func(&self, index: u32) -> Result<(String, String), Refusal> {
        let mut index = index;
        for _ in 0..64 {
            match self.cfuncs.get(index as usize) {
                Some(CFunc::Import { interface, name }) => {
                    return Ok((interface.clone(), name.clone()));
                }
                Some(CFunc::Same(other)) => index = *other,
                Some(CFunc::Lift(_)) | Some(CFunc::Via { .. }) => {
                    return no(
                        "it lowers a function of its own (an adapter between its instances)",
                    );
                }
                Some(CFunc::Other(what)) => return no(format!("it lowers {what}")),
                None => return no("it lowers a function it does not define"),
            }
        }
        no("its function aliases go round in circles")
    }

    /// The lift behind component function `index`.
    fn lift(&self, index: u32, depth: u32) -> Result<Lift, String> {
        if depth > 64 {
            return Err("its exports go round in circles".into());
        }
        match self.cfuncs.get(index as usize) {
            Some(CFunc::Lift(lift)) => Ok(*lift),
            Some(CFunc::Same(other)) => self.lift(*other, depth + 1),
            Some(CFunc::Via { instance, name }) => {
                let (kind, index) = self.instance_export(*instance, name, depth + 1)?;
                if kind != ComponentExternalKind::Func {
                    return Err(format!("its export `{name}` is not a function"));
                }
                self.lift(index, depth + 1)
            }
            Some(CFunc::Import { interface, name }) => Err(format!(
                "it exports `{interface}` function `{name}` it imports"
            )),
            Some(CFunc::Other(what)) => Err(format!("it exports {what}")),
            None => Err("it exports a function it does not define".into()),
        }
    }

    /// Export `name` of component instance `instance`, as (kind, index in this component).
    fn instance_export(
        &self,
        instance: u32,
        name: &str,
        depth: u32,
    ) -> Result<(ComponentExternalKind, u32), String> {
        if depth > 64 {
            return Err("its instances go round in circles".into());
        }
        let find = |list: &[(String, ComponentExternalKind, u32)], name: &str| {
            list.iter()
                .find(|(n, _, _)| n == name)
                .map(|(_, kind, index)| (*kind, *index))
        };
        match self.cinsts.get(instance as usize) {
            Some(CInst::Bag(items)) => {
                find(items, name).ok_or_else(|| format!("its instance has no `{name}`"))
            }
            Some(CInst::Same(other)) => self.instance_export(*other, name, depth + 1),
            Some(CInst::Instantiate { component, args }) => {
                let nested = self
                    .components
                    .get(*component as usize)
                    .ok_or_else(|| "it instantiates a component it does not define".to_string())?;
                if let Some(why) = nested.complex {
                    return Err(format!("its exports go through {why}"));
                }
                let import = nested
                    .reexports
                    .get(name)
                    .ok_or_else(|| format!("its export shim has no `{name}`"))?;
                find(args, import).ok_or_else(|| format!("its export shim is not given `{import}`"))
            }
            Some(CInst::Import(interface)) => {
                Err(format!("it re-exports the import `{interface}`"))
            }
            Some(CInst::Other) | None => {
                Err("its exports come from an instance it does not define".into())
            }
        }
    }

    /// The stage's exports as lifts.
    fn exports(&self) -> Result<Exports, Reason> {
        let interface = |name: &str| -> Result<Option<u32>, Reason> {
            match self.exports.get(name) {
                Some((ComponentExternalKind::Instance, index)) => Ok(Some(*index)),
                Some(_) => Err(format!("its export `{name}` is not an instance")),
                None => Ok(None),
            }
        };
        let func = |instance: u32, name: &str| -> Result<Lift, Reason> {
            let (kind, index) = self.instance_export(instance, name, 0)?;
            if kind != ComponentExternalKind::Func {
                return Err(format!("its export `{name}` is not a function"));
            }
            self.lift(index, 0)
        };
        let generator =
            interface(GENERATOR)?.ok_or_else(|| format!("it does not export `{GENERATOR}`"))?;
        let state = match interface(STATE)? {
            Some(state) => Some((func(state, "snapshot")?, func(state, "restore")?)),
            None => None,
        };
        Ok(Exports {
            resume: func(generator, "resume")?,
            close: func(generator, "close")?,
            state,
        })
    }
}

/// A lift's or lowering's canonical options: (memory, realloc, post-return).
type CanonOptions = (Option<u32>, Option<u32>, Option<u32>);

/// A lift's or lowering's (memory, realloc, post-return); anything but UTF-8 strings and the
/// synchronous ABI is refused.
fn options_of(options: &[CanonicalOption]) -> Result<CanonOptions, Refusal> {
    let (mut memory, mut realloc, mut post_return) = (None, None, None);
    for option in options {
        match option {
            CanonicalOption::UTF8 => {}
            CanonicalOption::Memory(m) => memory = Some(*m),
            CanonicalOption::Realloc(f) => realloc = Some(*f),
            CanonicalOption::PostReturn(f) => post_return = Some(*f),
            CanonicalOption::UTF16 | CanonicalOption::CompactUTF16 => {
                return no("it passes strings as UTF-16");
            }
            CanonicalOption::Async | CanonicalOption::Callback(_) => {
                return no("it uses the async ABI");
            }
            CanonicalOption::CoreType(_) | CanonicalOption::Gc => {
                return no("it uses the GC ABI");
            }
        }
    }
    Ok((memory, realloc, post_return))
}

/// A short name of a canonical built-in, for the reason given.
fn canon_name(canon: &CanonicalFunction) -> String {
    let debug = format!("{canon:?}");
    let head = debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("built-in");
    head.chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let lower = c.to_ascii_lowercase();
            if c.is_uppercase() && i > 0 {
                vec!['.', lower]
            } else {
                vec![lower]
            }
        })
        .collect()
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
