//! The component reader: walks a component's payloads with wasmparser, recording the core
//! modules, the core instances and index spaces, and the component-level functions,
//! instances and types the plan is built from.

use std::collections::HashMap;
use std::ops::Range;

use wasmparser::{
    ComponentExternalKind, ComponentInstance, ComponentTypeRef, ExternalKind, Instance, Parser,
    Payload,
};

use super::nested::{Nested, NestedFuncs, nested_payload};
use super::{Alias, CoreFunc, Item, Lift, Step};

/// A component-level function.
#[derive(Debug, Clone)]
pub(super) enum CFunc {
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
pub(super) enum CInst {
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
pub(super) enum CType {
    Imported { interface: String, name: String },
    Other,
}

/// The parser's state for the top-level component.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) modules: Vec<Range<usize>>,
    pub(super) steps: Vec<Step>,
    pub(super) funcs: Vec<CoreFunc>,
    pub(super) memories: Vec<Alias>,
    pub(super) tables: Vec<Alias>,
    pub(super) globals: Vec<Alias>,
    pub(super) cfuncs: Vec<CFunc>,
    pub(super) cinsts: Vec<CInst>,
    pub(super) ctypes: Vec<CType>,
    pub(super) components: Vec<Nested>,
    pub(super) exports: HashMap<String, (ComponentExternalKind, u32)>,
}

/// Why reading stopped: a component the fast path does not take, or one wasmparser cannot read.
pub(super) enum Refusal {
    Unsupported(String),
    Parse(wasmparser::BinaryReaderError),
}

impl From<wasmparser::BinaryReaderError> for Refusal {
    fn from(e: wasmparser::BinaryReaderError) -> Self {
        Refusal::Parse(e)
    }
}

/// Refuses the component for `reason`.
pub(super) fn no<T>(reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Unsupported(reason.into()))
}

/// What the payloads between a section's start and its `End` belong to.
enum Depth {
    Module,
    Component(Nested, NestedFuncs),
}

/// Reads the top-level component in `bytes`, following nested modules and components.
pub(super) fn read(bytes: &[u8]) -> Result<Reader, Refusal> {
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
}
